"""An identity-scoped TTL cache with request coalescing.

Callers build keys that include everything that makes two requests differ,
*including the authenticated principal*, so a value fetched for one identity
is never served to another. Concurrent loads of one key share one call.

With ``stale_seconds`` an entry outlives its freshness: :meth:`TTLCache.get` no longer
returns it, but :meth:`TTLCache.stale` does until it is ``stale_seconds`` old (the
server's ``stale_if_error_seconds``: last-known-good while a backend is down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    value: T
    expires: float
    """Fresh until then."""
    stored: float
    keep: float
    """Dropped then: the later of ``expires`` and the end of the stale window."""


class TTLCache(Generic[T]):
    """Values expire after ``ttl`` seconds (or a per-entry expiry); with ``stale_seconds``
    they stay available to :meth:`stale` until that old."""

    def __init__(self, ttl: float, *, max_entries: int = 10_000, stale_seconds: float = 0) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.stale_seconds = stale_seconds
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._inflight: dict[Hashable, asyncio.Task[T]] = {}
        self.hits = 0
        self.misses = 0
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if entry.expires <= now:
            if entry.keep <= now:
                del self._entries[key]
            return None
        return entry.value

    def stale(self, key: Hashable) -> tuple[T, float] | None:
        """``(value, age in seconds)`` of the last value put under ``key``, fresh or not,
        if it is at most ``stale_seconds`` old (never with ``stale_seconds`` 0)."""
        entry = self._entries.get(key)
        if entry is None or self.stale_seconds <= 0:
            return None
        age = time.monotonic() - entry.stored
        if age > self.stale_seconds:
            return None
        return entry.value, age

    def put(self, key: Hashable, value: T, *, ttl: float | None = None) -> None:
        """Keep ``value`` fresh for ``ttl`` (default: the cache's); with a stale window it
        is kept for :meth:`stale` even when ``ttl`` is 0."""
        ttl = self.ttl if ttl is None else ttl
        now = time.monotonic()
        keep = max(now + ttl, now + self.stale_seconds)
        if keep <= now:
            return
        if len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[key] = _Entry(value, now + ttl, now, keep)

    def loading(self, key: Hashable) -> bool:
        """Whether a load of ``key`` is in flight (a :meth:`get_or_load` now would join it)."""
        return key in self._inflight

    def invalidate(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self) -> None:
        now = time.monotonic()
        for k in [k for k, e in self._entries.items() if e.keep <= now]:
            del self._entries[k]
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]

    async def get_or_load(
        self,
        key: Hashable,
        load: Callable[[], Awaitable[T]],
        *,
        ttl: Callable[[T], float] | float | None = None,
    ) -> T:
        """Cached value, or the result of ``load()`` shared by every concurrent caller.

        ``ttl`` may be a function of the loaded value (e.g. credentials that
        expire at a known time). Failures are never cached.
        """
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            self.coalesced += 1
            return await asyncio.shield(pending)
        self.misses += 1

        async def run() -> T:
            try:
                value = await load()
                self.put(key, value, ttl=ttl(value) if callable(ttl) else ttl)
                return value
            finally:
                self._inflight.pop(key, None)

        # The load runs as its own task: a caller that gives up (its mount hit the
        # deadline) must not cancel the load other callers are waiting for.
        task = asyncio.ensure_future(run())
        self._inflight[key] = task
        task.add_done_callback(_consume)
        return await asyncio.shield(task)


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a failed load's exception as retrieved when every caller gave up."""
    if not task.cancelled():
        task.exception()
