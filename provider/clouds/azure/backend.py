"""The ``azure`` backend: Key Vault secrets, keys and certificates, fetched as
the pod's identity.

A Mount's refs are resolved to their cloud (:mod:`.settings`, server configuration
only) and identity (:mod:`.identity`: workload identity, service principal or the
VM's managed identity), then fetched concurrently through Key Vault clients kept
per (vault, identity, object kind) (:mod:`.clients`, retries within the mount's
budget). Failures become keyferry errors in :mod:`.errors`; certificate-backed
secrets are converted in :mod:`.certs`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ... import history
from ...backend import FetchResult, Services
from ...breaker import Endpoint
from ...cache import TTLCache
from ...errors import (
    Absent,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    KeyferryError,
    NotFound,
)
from ...lastgood import KnownGood
from ...model import Deadline, Fetched, Mount
from ...selection import Listing, Listings, Member, too_many
from ..budget import begin
from . import certs
from .clients import Clients
from .errors import translate, verdict
from .identity import Identities, Identity, quiet_sdk_logs, who
from .ref import AzureRef, AzureSelection
from .settings import AzureSettings, Cloud, parse_settings

T = TypeVar("T")
NAME = "azure"
_MARGIN = 0.5
"""Seconds of the mount budget kept back for rendering and answering."""


@dataclass(frozen=True)
class _Raw:
    """A Key Vault object as fetched, before conversion. Cached per identity."""

    content: bytes = field(repr=False)
    version: str
    content_type: str = ""
    backs_certificate: bool = False


class AzureBackend:
    name = NAME

    def __init__(self, settings: AzureSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self._clients = Clients(settings, services.config.max_concurrent_fetches)
        self._identities = Identities(settings, services.kube, on_forget=self._clients.drop)
        ttl = services.config.cache_ttl_seconds
        self._raw: TTLCache[_Raw] = TTLCache(ttl)
        self._versions: KnownGood[tuple[str, ...]] = KnownGood(
            services, cache="azure-versions", backend=NAME, listing="history", max_entries=10_000
        )
        self._limit = asyncio.Semaphore(max(1, services.config.max_concurrent_fetches))
        self._listings = Listings(NAME, services)
        # Opening a PKCS#12 costs ~40 ms (OpenSSL checks the RSA key), so conversions are
        # memoised by the digest of the stored bytes: only a caller that fetched those
        # exact bytes can hit an entry, so nothing crosses identities.
        self._converted: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()

    # -- the Backend protocol --

    async def fetch(
        self, mount: Mount, refs: Sequence[AzureRef], deadline: Deadline
    ) -> list[FetchResult]:
        results: list[FetchResult | None] = [None] * len(refs)
        plans: list[tuple[int, AzureRef, Cloud]] = []
        for i, ref in enumerate(refs):
            try:
                plans.append((i, ref, self.settings.cloud_for(ref)))
            except KeyferryError as exc:
                results[i] = exc
        identities = await self._identities.for_refs(mount, ((r, c) for _, r, c in plans))

        async def one(i: int, ref: AzureRef, cloud: Cloud) -> None:
            identity = identities[who(ref)]
            if isinstance(identity, KeyferryError):
                results[i] = identity
                return
            url = cloud.url_for(ref.vault)
            key = (NAME, identity.key, url, ref)  # last-known-good (stale_if_error_seconds)
            try:
                fetched = await self._within(
                    deadline, ref.describe(), lambda: self._fetch_one(ref, url, identity, deadline)
                )
                results[i] = fetched
                if fetched.stale_seconds is None:  # a stale one keeps its first fetch's age
                    self.services.values.put(key, fetched, ttl=0)
            except KeyferryError as exc:
                results[i] = exc
            results[i] = self.services.last_known_good(key, results[i]) or results[i]

        await asyncio.gather(*(one(i, ref, cloud) for i, ref, cloud in plans))
        return [r if r is not None else Internal("no result") for r in results]

    async def close(self) -> None:
        self._clients.close()
        self._identities.close()

    async def select(
        self,
        mount: Mount,
        queries: Sequence[AzureSelection],
        deadline: Deadline,
        limit: int,
    ) -> list[Listing | Exception]:
        """Each selection's secrets: the vault's secrets listed (every page, as the pod's
        identity) and filtered here, Key Vault's list having no filter; cached per
        identity (:mod:`provider.selection`)."""
        results: list[Listing | Exception] = [Internal("no result")] * len(queries)
        plans: list[tuple[int, AzureSelection, Cloud]] = []
        for i, query in enumerate(queries):
            try:
                plans.append((i, query, self.settings.cloud_for(query.base)))
            except KeyferryError as exc:
                results[i] = exc
        identities = await self._identities.for_refs(mount, ((q.base, c) for _, q, c in plans))

        async def one(i: int, query: AzureSelection, cloud: Cloud) -> None:
            identity = identities[who(query.base)]
            if isinstance(identity, KeyferryError):
                results[i] = identity
                return
            url = cloud.url_for(query.base.vault)
            try:
                results[i] = await self._within(
                    deadline,
                    f"listing {query.describe()}",
                    lambda: self._list(query, url, identity, deadline, limit),
                )
            except KeyferryError as exc:
                results[i] = exc

        await asyncio.gather(*(one(i, query, cloud) for i, query, cloud in plans))
        return results

    async def _within(self, deadline: Deadline, what: str, run: Callable[[], Awaitable[T]]) -> T:
        """``run()`` with a fetch slot, within the Mount's budget (DEADLINE_EXCEEDED past
        it, naming ``what``)."""
        try:
            # asyncio.timeout, unlike wait_for, runs the call in this task, not a new one
            async with (
                self._limit,
                asyncio.timeout(max(0.01, deadline.remaining() - _MARGIN / 2)),
            ):
                return await run()
        except TimeoutError:
            raise DeadlineExceeded(
                f"{what}: no answer from Key Vault within the mount budget "
                f"({deadline.seconds:.0f}s)"
            ) from None

    async def _list(
        self, query: AzureSelection, url: str, identity: Identity, deadline: Deadline, limit: int
    ) -> Listing:
        client = self._clients.get("secret", url, identity)

        def listing(**options: Any) -> list[str] | None:
            names: list[str] = []
            for props in client.list_properties_of_secrets(max_page_size=25, **options):
                name = str(props.name or "")
                if query.matches(name, props.tags, bool(props.managed), props.enabled is True):
                    names.append(name)
                    if len(names) > limit:
                        return None
            return names

        async def load() -> Listing:
            names = await self._call(
                "list_secrets", query.base, url, identity, deadline, listing, query
            )
            if names is None:
                raise too_many(query.describe(), limit)
            return tuple(Member(name, replace(query.base, name=name)) for name in names)

        return await self._listings.get((NAME, identity.key, url, query, limit), load)

    # -- fetching --

    async def _call(
        self,
        op: str,
        ref: AzureRef,
        url: str,
        identity: Identity,
        deadline: Deadline,
        fn: Callable[..., T],
        listing: AzureSelection | None = None,
    ) -> T:
        budget = deadline.remaining() - _MARGIN
        if budget <= 0:
            raise DeadlineExceeded(f"{ref.describe()}: the mount budget ran out before the call")
        options = {
            "timeout": budget,
            "read_timeout": budget,
            "connection_timeout": min(budget, 10.0),
        }
        # The vault's host is tenant input; the metric label is the cloud's URL template.
        label = self.settings.cloud_for(ref).url_for("{vault}").split("://", 1)[-1]
        endpoint = Endpoint(NAME, url.split("://", 1)[-1], label)
        call = begin(
            NAME,
            op,
            deadline,
            max_attempts=self.settings.retry_total + 1,
            metrics=self.services.metrics,
            reserve=_MARGIN,
        )
        try:
            async with self.services.breakers.guard(endpoint, deadline, verdict):
                return await self.services.timed(NAME, op, fn, **options)
        except Exception as exc:
            raise translate(exc, ref, identity, call, listing) from None

    async def _get(
        self, ref: AzureRef, url: str, identity: Identity, version: str, deadline: Deadline
    ) -> _Raw:
        client = self._clients.get(ref.kind, url, identity)
        name = ref.name

        async def call(op: str, fn: Callable[..., Any]) -> Any:
            return await self._call(op, ref, url, identity, deadline, fn)

        def get_certificate(**options: Any) -> Any:
            if version:
                return client.get_certificate_version(name, version, **options)
            return client.get_certificate(name, **options)

        async def load() -> _Raw:
            if ref.kind == "secret":
                secret = await call(
                    "get_secret", lambda **o: client.get_secret(name, version or None, **o)
                )
                props = secret.properties
                return _Raw(
                    content=(secret.value or "").encode("utf-8"),
                    version=str(props.version or ""),
                    content_type=str(props.content_type or ""),
                    backs_certificate=bool(props.key_id),
                )
            if ref.kind == "key":
                key = await call("get_key", lambda **o: client.get_key(name, version or None, **o))
                jwk = key.key
                pem = certs.public_key_pem(
                    str(getattr(jwk.kty, "value", jwk.kty)),
                    n=jwk.n,
                    e=jwk.e,
                    crv=str(getattr(jwk.crv, "value", jwk.crv)) if jwk.crv else None,
                    x=jwk.x,
                    y=jwk.y,
                )
                return _Raw(content=pem, version=str(key.properties.version or ""))
            cert = await call("get_certificate", get_certificate)
            if not cert.cer:
                raise Internal(f"{ref.describe()}: Key Vault returned no certificate body")
            return _Raw(
                content=certs.der_certificate_to_pem(bytes(cert.cer)),
                version=str(cert.properties.version or ""),
            )

        key = (NAME, identity.key, url, ref.kind, name, version)
        return await self._raw.get_or_load(key, load)

    async def _history(
        self, ref: AzureRef, url: str, identity: Identity, deadline: Deadline
    ) -> tuple[tuple[str, ...], float | None]:
        """Enabled versions, newest first, starting at ``ref.version`` when given; with the
        listing's age when it is the last-known-good one (:mod:`provider.lastgood`)."""
        client = self._clients.get(ref.kind, url, identity)
        name = ref.name
        lister = {
            "secret": "list_properties_of_secret_versions",
            "key": "list_properties_of_key_versions",
            "cert": "list_properties_of_certificate_versions",
        }[ref.kind]

        def listing(**options: Any) -> tuple[str, ...]:
            found = []
            for props in getattr(client, lister)(name, **options):
                if props.enabled is False:
                    continue
                created = props.created_on.timestamp() if props.created_on else 0.0
                found.append((created, str(props.version or "")))
            found.sort(key=lambda v: v[0], reverse=True)
            return tuple(v for _, v in found)

        async def load() -> tuple[str, ...]:
            return await self._call("list_versions", ref, url, identity, deadline, listing)

        key = (NAME, identity.key, url, ref.kind, name)
        versions, age = await self._versions.get(key, load)
        if ref.version:
            if ref.version not in versions:
                raise NotFound(
                    f"{ref.describe()} is not among the enabled versions of the object; check "
                    "objectVersion or enable that version"
                )
            versions = versions[versions.index(ref.version) :]
        return versions, age

    async def _fetch_one(
        self, ref: AzureRef, url: str, identity: Identity, deadline: Deadline
    ) -> Fetched:
        version = ref.version
        listed_age: float | None = None  # the age of a last-known-good version listing
        if ref.history > 1:
            versions, listed_age = await self._history(ref, url, identity, deadline)
            if not versions:
                raise NotFound(f"{ref.describe()} has no enabled version")
            if ref.index >= len(versions):
                raise Absent(history.describe_slot(ref.index, len(versions), ref.describe()))
            version = versions[ref.index]
        raw = await self._get(ref, url, identity, version, deadline)
        content = await self._convert(ref, raw)
        host = url.split("://", 1)[-1].split("/", 1)[0]
        return Fetched(
            content=content,
            version=raw.version,
            content_type=raw.content_type,
            served_by=host,
            stale_seconds=listed_age,
        )

    async def _convert(self, ref: AzureRef, raw: _Raw) -> bytes:
        if ref.kind != "secret" or (ref.conversion in ("raw", "pfx") and not raw.backs_certificate):
            return raw.content
        digest = hashlib.sha256(raw.content).hexdigest()
        key = (digest, f"{raw.content_type}|{raw.backs_certificate}", ref.conversion)
        done = self._converted.get(key)
        if done is None:
            # Off the event loop: opening a PKCS#12 takes tens of milliseconds.
            done = await self.services.run_blocking(self._convert_now, ref, raw)
            self._converted[key] = done
            if len(self._converted) > 256:
                self._converted.popitem(last=False)
        else:
            self._converted.move_to_end(key)
        return done

    def _convert_now(self, ref: AzureRef, raw: _Raw) -> bytes:
        chain = self.settings.construct_pem_chain
        try:
            if raw.backs_certificate:
                fmt = "pem" if ref.conversion == "raw" else ref.conversion
                return certs.convert_certificate(
                    raw.content, raw.content_type, fmt, construct_chain=chain
                )
            if ref.conversion == "raw" or ref.conversion == "pfx":
                return raw.content
            # A certificate stored as a plain secret: PEM text only.
            if b"-----BEGIN" not in raw.content:
                raise InvalidArgument(
                    f"format '{ref.conversion}' needs a certificate, but the secret does not "
                    "back a Key Vault certificate and holds no PEM; remove 'format' or read "
                    "the certificate object"
                )
            return certs.convert_certificate(
                raw.content, certs.PEM_CONTENT_TYPE, ref.conversion, construct_chain=chain
            )
        except InvalidArgument as exc:
            raise InvalidArgument(f"{ref.describe()}: {exc.message}") from None


def create(settings: Mapping[str, Any], services: Services) -> AzureBackend:
    quiet_sdk_logs()
    return AzureBackend(parse_settings(settings), services)
