"""The ``gcp`` backend: Secret Manager (global and regional) and Parameter
Manager, fetched as the pod's workload identity.

Versions: Secret Manager reports the resolved version name as the API returns
it (with the project *number*), so a rotation that moves ``latest`` changes
the version. Parameter Manager reports the parameter-version name plus a
keyed HMAC of that name and the rendered bytes, because a secret referenced with
``__REF__`` can change under an unchanged parameter version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from ... import history
from ...backend import FetchResult, Services
from ...breaker import Verdict, verdict_of
from ...errors import Absent, DeadlineExceeded, Internal, KeyferryError
from ...lastgood import KnownGood, older
from ...model import Deadline, Fetched, Mount
from ...observe import get_logger
from ...selection import Listing, Listings, Member, too_many
from ..budget import RESERVE, Call, begin
from . import settings as settings_module
from .clients import Clients
from .identity import Identities, Identity
from .ref import (
    AuthMode,
    GcpLocator,
    GcpRef,
    ParameterVersionRef,
    SecretSelection,
    SecretVersionRef,
)
from .settings import GcpSettings

log = get_logger("gcp")

NAME = "gcp"
T = TypeVar("T")


class GcpBackend:
    name = NAME

    def __init__(self, settings: GcpSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.clients = Clients(settings)
        self.identities = Identities(settings, services)
        self._semaphore = asyncio.Semaphore(services.config.max_concurrent_fetches)
        self._lists: KnownGood[tuple[str, ...]] = KnownGood(
            services, cache="gcp-versions", backend=NAME, listing="history", max_entries=10_000
        )
        """Enabled version numbers per (principal, endpoint, secret), for versionHistory;
        last-known-good within ``stale_if_error_seconds`` (:mod:`provider.lastgood`)."""
        self._listings = Listings(NAME, services)
        self.api_calls = 0
        self.retries = 0

    @property
    def exchanges(self) -> int:
        return self.identities.exchanges

    async def close(self) -> None:
        self.clients.close()
        self.identities.close()

    async def fetch(
        self, mount: Mount, refs: Sequence[GcpRef], deadline: Deadline
    ) -> list[FetchResult]:
        # Resolve each distinct identity (and its access token) once; a failure fails only
        # the refs using it, or the whole batch when every ref uses it.
        identities: dict[tuple[AuthMode, bool, bool], tuple[Identity, str] | KeyferryError] = {}
        for ref in refs:
            key = ref.auth_key
            if key in identities:
                continue
            try:
                identities[key] = await self.identities.authorize(ref, mount, deadline)
            except KeyferryError as exc:
                identities[key] = exc
        if len(identities) == 1:
            only = next(iter(identities.values()))
            if isinstance(only, KeyferryError):
                raise only
        results = await asyncio.gather(
            *(self._one(ref, identities[ref.auth_key], deadline) for ref in refs),
            return_exceptions=True,
        )
        out: list[FetchResult] = []
        for ref, result in zip(refs, results, strict=True):
            if isinstance(result, KeyferryError | Fetched):
                out.append(result)
            elif isinstance(result, Exception):
                log.error(
                    "unexpected error in the gcp backend",
                    exc_info=result,
                    extra={"backend": NAME, "resource": ref.name},
                )
                out.append(Internal(f"unexpected {type(result).__name__} fetching {ref.name}"))
            else:
                raise result
        return out

    async def _one(
        self, ref: GcpRef, auth: tuple[Identity, str] | KeyferryError, deadline: Deadline
    ) -> Fetched:
        if isinstance(auth, KeyferryError):
            raise auth
        identity, token = auth
        listed_age: float | None = None  # the age of a last-known-good version listing
        if isinstance(ref, SecretVersionRef) and ref.history:
            ref, listed_age = await self._pin(ref, identity, token, deadline)

        async def load() -> Fetched:
            response = await self._call(
                ref, ref.operation, deadline, self.clients.fetch, ref, token
            )(self._on_retry, identity.member)
            version = response.version_name
            if isinstance(ref, ParameterVersionRef):
                # Keyed by the parameter version as well: two parameters rendering equal
                # bytes must not share a suffix (that would tell one's content from the other's).
                digest = self.services.keyed_digest(version.encode(), response.content)
                version = f"{version}@{digest[:16]}"
            return Fetched(content=response.content, version=version, served_by=response.endpoint)

        key = (NAME, identity.principal, ref.service, ref.name)
        try:
            fetched = await self.services.values.get_or_load(key, load)
        except KeyferryError as exc:
            stale = self.services.last_known_good(key, exc)
            if stale is None:
                raise
            fetched = stale
        if listed_age is None:
            return fetched
        return replace(fetched, stale_seconds=older(listed_age, fetched.stale_seconds))

    async def select(
        self,
        mount: Mount,
        queries: Sequence[SecretSelection],
        deadline: Deadline,
        limit: int,
    ) -> list[Listing | Exception]:
        """Each selection's secrets (ListSecrets with its label filter, as the pod's
        identity), cached per principal; members are read at ``latest``
        (:mod:`provider.selection`)."""
        results = await asyncio.gather(
            *(self._select_one(mount, query, deadline, limit) for query in queries),
            return_exceptions=True,
        )
        out: list[Listing | Exception] = []
        for query, result in zip(queries, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception) and not isinstance(result, KeyferryError):
                log.error(
                    "unexpected error listing in the gcp backend",
                    exc_info=result,
                    extra={"backend": NAME, "resource": query.name},
                )
                result = Internal(f"unexpected {type(result).__name__} listing {query.name}")
            out.append(result)
        return out

    async def _select_one(
        self, mount: Mount, query: SecretSelection, deadline: Deadline, limit: int
    ) -> Listing:
        identity, token = await self.identities.authorize(query, mount, deadline)

        async def load() -> Listing:
            listing = self._call(
                query,
                query.operation,
                deadline,
                self.clients.list_secrets,
                query,
                token,
                verb="list",
            )
            ids = await listing(limit, self._on_retry, identity.member)
            if ids is None:
                raise too_many(query.describe(), limit)
            return tuple(Member(secret, query.member(secret)) for secret in ids)

        # The cap is part of the key: a listing cut off at one cap says nothing at another.
        return await self._listings.get((NAME, identity.principal, query, limit), load)

    def _begin(self, ref: GcpLocator, operation: str, deadline: Deadline, verb: str) -> Call:
        """One API call's share of the Mount's budget (:mod:`..budget`)."""
        call = begin(
            NAME,
            operation,
            deadline,
            max_attempts=self.settings.max_attempts,
            metrics=self.services.metrics,
            reserve=RESERVE,
            limit=self.settings.timeout_seconds,
        )
        if call.remaining() <= 0:
            raise DeadlineExceeded(f"no time left in the mount's deadline to {verb} {ref.name}")
        return call

    def _on_retry(self, exc: Exception) -> None:
        self.retries += 1

    def _call(
        self,
        ref: GcpLocator,
        operation: str,
        deadline: Deadline,
        fn: Callable[..., T],
        *args: Any,
        verb: str = "fetch",
    ) -> Callable[..., Awaitable[T]]:
        """``fn(*args, call, *more)`` on the worker pool within the Mount's budget, through
        the endpoint's breaker and the backend's concurrency limit."""

        async def run(*more: Any) -> T:
            call = self._begin(ref, operation, deadline, verb)
            endpoint = self.clients.breaker_endpoint(ref)
            async with (
                self.services.breakers.guard(endpoint, deadline, _judge(call)),
                self._semaphore,
            ):
                self.api_calls += 1
                return await self.services.timed(NAME, operation, fn, *args, call, *more)

        return run

    async def _pin(
        self, ref: SecretVersionRef, identity: Identity, token: str, deadline: Deadline
    ) -> tuple[SecretVersionRef, float | None]:
        """A ``versionHistory`` / ``previous`` slot as the version it is now: one
        ListSecretVersions per secret, kept per identity like values and shared by
        concurrent mounts; a slot beyond the enabled versions is Absent. With the
        listing's age when it is the last-known-good one."""
        key = (NAME, identity.principal, "versions", self.clients.endpoint(ref), ref.parent)
        listing = self._call(
            ref,
            "ListSecretVersions",
            deadline,
            self.clients.list_versions,
            ref,
            token,
            verb="list the versions of",
        )
        numbers, age = await self._lists.get(key, lambda: listing(identity.member))
        if ref.index >= len(numbers):
            what = f"Secret Manager secret {ref.parent}"
            raise Absent(history.describe_slot(ref.index, len(numbers), what))
        return replace(ref, version=numbers[ref.index], history=0, index=0), age


def create(settings: Mapping[str, Any], services: Services) -> GcpBackend:
    return GcpBackend(settings_module.parse(settings), services)


__all__ = ["GcpBackend", "GcpSettings", "create"]


def _judge(call: Call) -> Callable[[BaseException], Verdict]:
    """The breaker's verdict on a failed call: a call whose last attempt was throttled
    (RESOURCE_EXHAUSTED, 429) says nothing about the endpoint being down, whatever its
    retries ended as (DEADLINE_EXCEEDED once retried)."""

    def judge(exc: BaseException) -> Verdict:
        return Verdict.NEUTRAL if call.last == "throttled" else verdict_of(exc)

    return judge
