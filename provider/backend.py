"""The Backend protocol and the services every backend is built with.

A backend fetches a batch of refs for one Mount, as the pod's identity, and
returns one result per ref: a :class:`~provider.model.Fetched` or a
:class:`~provider.errors.KeyferryError` for that ref alone (so one missing
secret does not hide the status of the others). Backends own their
authentication, client reuse, batching and caching; they never see gRPC,
dialects or other backends.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import hmac
import secrets
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import registry
from .breaker import Breakers
from .cache import TTLCache
from .config import Config
from .errors import Code, ConfigError, FailedPrecondition, KeyferryError
from .kube import KubeClient
from .model import Deadline, Fetched, Mount
from .observe import Metrics

T = TypeVar("T")

FetchResult = Fetched | Exception
_OUTAGE = (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)


@dataclass
class Services:
    """Shared, long-lived things a backend may use. One instance per server."""

    config: Config
    metrics: Metrics
    executor: ThreadPoolExecutor
    kube: KubeClient
    values: TTLCache[Fetched]
    """Fetched values, keyed by (backend, principal, ref): identity-scoped. Its stale
    window (``stale_if_error_seconds``) serves :meth:`last_known_good`."""
    hmac_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    """The server's key for content-derived versions (``hmac_key_file``)."""
    breakers: Breakers = field(init=False)
    """Fail fast while an endpoint is down: every cloud's call gate goes through it."""

    def __post_init__(self) -> None:
        c = self.config
        self.breakers = Breakers(
            threshold=c.fail_fast_threshold,
            open_seconds=c.fail_fast_seconds,
            max_open_seconds=c.fail_fast_max_seconds,
            metrics=self.metrics,
        )

    def last_known_good(self, key: Hashable, error: object) -> Fetched | None:
        """stale-if-error: the value last put in :attr:`values` under ``key`` (which names
        the principal), marked with its age, when ``error`` says the backend is unavailable
        (UNAVAILABLE, DEADLINE_EXCEEDED; never a denial or a missing object) and the value
        is within ``stale_if_error_seconds``; else ``None``."""
        if not outage(error):
            return None
        found = self.values.stale(key)
        if found is None:
            return None
        value, age = found
        return dataclasses.replace(value, stale_seconds=age)

    def keyed_digest(self, *parts: bytes) -> str:
        """Hex HMAC-SHA256 of ``parts``: a version that reveals nothing of the content."""
        return self.keyed_digest_of(b"".join(digest_part(part) for part in parts))

    def keyed_digest_of(self, encoded: bytes) -> str:
        """``keyed_digest`` of parts already joined by :func:`digest_part` (a caller may
        keep a fixed prefix of them joined once)."""
        return hmac.digest(self.hmac_key, encoded, "sha256").hex()

    async def run_blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call on the shared bounded pool."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # keeps the request's log redaction
        call = functools.partial(fn, *args, **kwargs)
        return await loop.run_in_executor(self.executor, context.run, call)

    async def timed(
        self,
        backend: str,
        operation: str,
        fn: Callable[..., T],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """``run_blocking`` plus the backend request metrics."""
        start = time.monotonic()
        outcome = "error"
        try:
            result = await self.run_blocking(fn, *args, **kwargs)
            outcome = "ok"
            return result
        finally:
            self.metrics.backend_call(backend, operation, outcome, time.monotonic() - start)


def outage(error: object) -> bool:
    """Whether ``error`` says the backend is unavailable (UNAVAILABLE, DEADLINE_EXCEEDED),
    the only failures last-known-good answers (never a denial or a missing object)."""
    return isinstance(error, KeyferryError) and error.code in _OUTAGE


def digest_part(part: bytes) -> bytes:
    """One part as :meth:`Services.keyed_digest` hashes it: its length, then its bytes."""
    return len(part).to_bytes(8, "big") + part


RefT = TypeVar("RefT", contravariant=True)


class Backend(Protocol[RefT]):
    """A cloud's backend, typed by its own locators (``provider.clouds.<name>.ref``): the
    registry hands it only refs that its own dialect module built, so a backend never
    re-checks their type."""

    name: str

    async def fetch(
        self, mount: Mount, refs: Sequence[RefT], deadline: Deadline
    ) -> list[FetchResult]:
        """One result per ref, in order. Raise only for failures common to all refs."""
        ...

    async def close(self) -> None: ...


BackendFactory = Callable[[Mapping[str, Any], Services], Backend[Any]]


class Registry:
    """Creates each backend once, on first use, and keeps it for the server's life.
    Backends are imported only when a plan needs them, so a node that only mounts AWS
    objects never loads the Google or Azure SDKs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._backends: dict[str, Backend[Any]] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> Backend[Any]:
        backend = self._backends.get(name)
        if backend is not None:
            return backend
        async with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                module = registry.import_part(name, "backend")
                settings: dict[str, Any] = dict(self.services.config.backends.get(name, {}))
                try:
                    backend = module.create(settings, self.services)
                except ConfigError as exc:  # read on first use: a setup problem, not a bug
                    raise FailedPrecondition(
                        f"backend {name} cannot start: {exc}; fix backends.{name} in the "
                        "keyferry server configuration"
                    ) from None
                self._backends[name] = backend
            return backend

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()
