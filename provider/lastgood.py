"""Last-known-good for listings: a selection's listing and a version history's listing
follow the rule values follow (``stale_if_error_seconds``, :meth:`Services.last_known_good`).

A :class:`KnownGood` caches what a list call returned per key (the caller's key names the
principal and the query, as a value's names the principal and the object) for
``cache_ttl_seconds``, concurrent identical loads sharing one call. With the server's
``stale_if_error_seconds`` above 0 each listing is also kept, in memory only, for that
long: when listing again fails with UNAVAILABLE or DEADLINE_EXCEEDED (never a denial,
NOT_FOUND or any other answer) the last listing of the same key is served with its age,
logged (``backend unavailable: served the last-known-good listing``) and counted in
``keyferry_stale_listings_served_total{backend, listing}``. The caller marks what it
serves from that listing stale (its objects land in the Mount's audit record under
``"stale"`` and in ``keyferry_stale_values_served_total``); the values of a stale
listing's members come from the value cache's own stale window, as a plain object's do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from .backend import Services, outage
from .cache import TTLCache
from .observe import get_logger

T = TypeVar("T")

log = get_logger("lastgood")


class KnownGood(Generic[T]):
    """Listings cached per key with a last-known-good window; hits, misses and coalesced
    loads in ``keyferry_cache_events_total{cache=<cache>}``."""

    def __init__(
        self,
        services: Services,
        *,
        cache: str,
        backend: str,
        listing: str,
        max_entries: int = 1024,
    ) -> None:
        config = services.config
        self._cache: TTLCache[T] = TTLCache(
            config.cache_ttl_seconds,
            max_entries=max_entries,
            stale_seconds=config.stale_if_error_seconds,
        )
        events = services.metrics.cache_events
        self._hit = events.labels(cache, "hit")
        self._miss = events.labels(cache, "miss")
        self._coalesced = events.labels(cache, "coalesced")
        self._stale = services.metrics.stale_listings_served.labels(backend, listing)
        self._backend = backend
        self._listing = listing

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> tuple[T, float | None]:
        """``(listing, None)`` fetched now or fresh in the cache, or ``(listing, age)`` of
        the last-known-good one when ``load()`` failed with an outage."""
        cached = self._cache.get(key)
        if cached is not None:
            self._hit.inc()
            return cached, None
        (self._coalesced if self._cache.loading(key) else self._miss).inc()
        try:
            return await self._cache.get_or_load(key, load), None
        except Exception as exc:
            found = self._cache.stale(key) if outage(exc) else None
            if found is None:
                raise
            value, age = found
        self._stale.inc()
        log.warning(
            "backend unavailable: served the last-known-good listing",
            extra={"backend": self._backend, "listing": self._listing, "age_seconds": round(age)},
        )
        return value, age

    def clear(self) -> None:
        self._cache.clear()


def older(age: float | None, other: float | None) -> float | None:
    """The larger of two stale ages (``None``: fresh)."""
    if age is None:
        return other
    return age if other is None else max(age, other)
