"""The botocore side of the pod's AWS identity: sessions, credential fetchers, clients.

Credentials come from botocore's own machinery, fed with the token kubelet
passed for this pod (which token and role a mount uses is decided in
:mod:`.identity`):

- IRSA: :class:`AssumeRoleWithWebIdentityCredentialFetcher` inside
  :class:`DeferredRefreshableCredentials`; the token loader returns the newest
  token a mount of that service account brought, and the RoleSessionName names
  the pod (``<namespace>.<pod>``) so CloudTrail shows which pod read what.
- Pod Identity: :class:`ContainerProvider` with an environment of our own
  (agent URL and the pod's token as ``Authorization``) and a fetcher that
  really falls back from the IPv4 agent address to the IPv6 one.

One :class:`Identity` per principal holds a botocore session whose only
credentials are these, and the clients built from it (per service and region),
so credentials are reused until shortly before they expire and are never
shared between service accounts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import urllib3.exceptions
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    AssumeRoleWithWebIdentityCredentialFetcher,
    ContainerProvider,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    MetadataRetrievalError,
    ReadTimeoutError,
)
from botocore.httpsession import URLLib3Session
from botocore.retries.standard import ExponentialBackoff, RetryContext
from botocore.utils import RETRYABLE_HTTP_ERRORS, ContainerMetadataFetcher

from .. import budget
from . import retries
from .ref import AddressType, AssumeRole
from .settings import AwsSettings

_RETRYABLE_HTTP: tuple[type[BaseException], ...] = RETRYABLE_HTTP_ERRORS


@dataclass(frozen=True)
class Principal:
    """Who AWS sees. Values are cached per principal, never across principals."""

    kind: str
    """``irsa``, ``pod-identity``, ``node`` or ``chained`` (a role assumed by ``via``)."""
    namespace: str = ""
    service_account: str = ""
    role_arn: str = ""
    via: Principal | None = None
    """``chained``: the pod's own principal, whose credentials assumed ``role_arn``."""
    external_id: str = field(default="", repr=False)
    duration: int = 3600
    """``chained``: the session's DurationSeconds."""

    def describe(self) -> str:
        sa = f"service account {self.namespace}/{self.service_account}"
        if self.kind == "chained" and self.via is not None:
            return f"role {self.role_arn} (assumed by {self.via.describe()})"
        if self.kind == "irsa":
            return f"role {self.role_arn} (IRSA, {sa})"
        if self.kind == "pod-identity":
            return f"the EKS Pod Identity role of {sa}"
        return "the node's own AWS identity"

    def needs(self, action: str) -> str:
        """The hint for a denied call: who needs which permission."""
        return f"{self.describe()} needs {action} on it"


class _Session(botocore.session.Session):  # type: ignore[misc]
    """A botocore session whose credentials are exactly the ones given (or none)."""

    def __init__(self, credentials: Any, loader: Any) -> None:
        super().__init__()
        self._fixed = credentials
        self.register_component("data_loader", loader)

    def get_credentials(self) -> Any:
        return self._fixed


class _AgentHTTPError(MetadataRetrievalError):  # type: ignore[misc]
    """The Pod Identity agent answered with an HTTP error (no address fallback)."""

    def __init__(self, status: int, text: str, asked: float | None = None) -> None:
        super().__init__(error_msg=f"the Pod Identity agent answered HTTP {status}: {text[:200]}")
        self.status = status
        self.asked = asked


class AgentFetcher(ContainerMetadataFetcher):  # type: ignore[misc]
    """Fetch container credentials from the Pod Identity agent.

    botocore's own loop (``_retrieve_credentials``) makes the attempts; each attempt tries
    every address in order on connection failures (IPv4 first, then IPv6 for ``auto``).
    Between attempts botocore sleeps through :meth:`_pause`, which is where the Mount's
    budget comes in: botocore's jittered backoff or the agent's ``Retry-After``, whichever
    is longer, only if it fits the budget; no retry of an answer retrying cannot change
    (a 4xx other than 429)."""

    OPERATION = "GetCredentials"

    def __init__(
        self, urls: list[str], timeout: float, max_attempts: int = 3, max_backoff: float = 20.0
    ) -> None:
        super().__init__(session=URLLib3Session(timeout=timeout), sleep=self._pause)
        self.urls = urls
        self.timeout = timeout
        self.RETRY_ATTEMPTS = max(1, max_attempts)
        self._max_backoff = max_backoff
        self.tried: list[str] = []
        self.last_status = 0
        self._attempts = 0
        self._failure: MetadataRetrievalError | None = None
        self._backoff = ExponentialBackoff()

    def _validate_allowed_url(self, full_url: str) -> None:
        """Agent URLs come from server configuration only; any host is allowed."""

    def retrieve_full_uri(self, full_url: str, headers: Any = None) -> Any:
        self.tried = []
        self.last_status = 0
        self._attempts = 0
        return self._retrieve_credentials(self.urls[0], headers)

    def _get_response(self, full_url: str, headers: Any, timeout: float) -> Any:
        """One attempt: the next address only when one cannot be connected to (an answer
        that breaks off is this attempt's failure, whatever the address)."""
        self._attempts += 1
        call = budget.current()
        outcome: budget.Outcome = "network_error"
        for url in self.urls:
            self.tried.append(url)
            try:
                request = AWSRequest(method="GET", url=url, headers=headers)
                response = self._session.send(request.prepare())
                text = response.content.decode("utf-8", "replace")
            except (EndpointConnectionError, ConnectTimeoutError) as exc:
                outcome = "timeout" if isinstance(exc, ConnectTimeoutError) else "network_error"
                self._failure = MetadataRetrievalError(
                    error_msg=f"cannot reach the Pod Identity agent at {url} ({type(exc).__name__})"
                )
                continue
            except (*_RETRYABLE_HTTP, HTTPClientError, urllib3.exceptions.HTTPError) as exc:
                outcome = "timeout" if isinstance(exc, ReadTimeoutError) else "network_error"
                self._failure = MetadataRetrievalError(
                    error_msg=f"the Pod Identity agent at {url} broke off its answer "
                    f"({type(exc).__name__})"
                )
                break
            status = response.status_code
            if status == 200:
                if call is not None:
                    call.attempt("ok", self.OPERATION)
                try:
                    return json.loads(text)
                except ValueError:
                    raise MetadataRetrievalError(
                        error_msg="the Pod Identity agent returned a body that is not JSON"
                    ) from None
            self.last_status = status
            asked = budget.retry_after(response.headers.get("Retry-After"))
            self._failure = _AgentHTTPError(status, text, asked)
            outcome = "throttled" if status == 429 else "server_error"
            if status != 429 and status < 500:
                outcome = "rejected"
            break
        if call is not None:
            call.attempt(outcome, self.OPERATION)
        assert self._failure is not None
        raise self._failure

    def _pause(self, _: float) -> None:
        """botocore's sleep between attempts (it asks for a fixed second): retry only a
        transient failure, only while attempts and the Mount's budget last."""
        failure = self._failure
        assert failure is not None
        status = getattr(failure, "status", 0)
        if status and status != 429 and status < 500:
            raise failure  # a refusal: retrying gives the same answer
        call = budget.current()
        if self._attempts >= self.RETRY_ATTEMPTS:
            if call is not None and call.operation == self.OPERATION:
                call.stop("attempts")
            raise failure
        context = RetryContext(attempt_number=self._attempts)
        backoff = min(float(self._backoff.delay_amount(context)), self._max_backoff)
        asked = getattr(failure, "asked", None)
        if call is None:
            wait: float | None = max(backoff, asked or 0.0)
        elif call.operation == self.OPERATION:
            wait = call.wait(backoff, asked)
        else:  # a refresh inside another call: its budget, not its attempts
            wait = max(backoff, asked or 0.0)
            wait = wait if wait < call.remaining() else None
        if wait is None:
            raise failure
        time.sleep(wait)


@dataclass
class Identity:
    principal: Principal
    session: Any
    credentials: Any
    environ: dict[str, str]
    """Pod Identity: what ContainerProvider reads (agent URL, the newest token)."""
    fetcher: Any = None
    lock: Any = None
    clients: Any = None
    last_used: float = 0.0
    token: str = ""
    session_name: str = ""

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.clients = {}

    def update(self, token: str, session_name: str) -> None:
        """A new mount of this principal brings a fresh token: use it for refreshes."""
        self.token = token
        self.session_name = session_name
        if self.environ:
            self.environ[ContainerProvider.ENV_VAR_AUTH_TOKEN] = token
        self.last_used = time.monotonic()


class _WebIdentityFetcher(AssumeRoleWithWebIdentityCredentialFetcher):  # type: ignore[misc]
    """AssumeRoleWithWebIdentity with the newest pod token and a pod-naming session."""

    def __init__(
        self, client_creator: Callable[..., Any], identity: Identity, role_arn: str
    ) -> None:
        self._identity = identity
        super().__init__(
            client_creator=client_creator,
            web_identity_token_loader=lambda: identity.token,
            role_arn=role_arn,
            extra_args={"RoleSessionName": identity.session_name or "keyferry"},
        )

    def _assume_role_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super()._assume_role_kwargs()
        kwargs["RoleSessionName"] = self._identity.session_name or "keyferry"
        return kwargs


class _ChainFetcher(AssumeRoleCredentialFetcher):  # type: ignore[misc]
    """sts:AssumeRole with the pod's credentials (role chaining), the session naming the
    pod as the first hop's does."""

    def __init__(
        self, client_creator: Callable[..., Any], identity: Identity, source: Identity
    ) -> None:
        self._identity = identity
        self.source = source
        principal = identity.principal
        extra: dict[str, Any] = {"RoleSessionName": identity.session_name or "keyferry"}
        assume = _assume_of(principal)
        extra["DurationSeconds"] = assume.duration_seconds
        if assume.external_id:
            extra["ExternalId"] = assume.external_id
        super().__init__(
            client_creator=client_creator,
            source_credentials=source.credentials,
            role_arn=principal.role_arn,
            extra_args=extra,
        )

    def _assume_role_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super()._assume_role_kwargs()
        kwargs["RoleSessionName"] = self._identity.session_name or "keyferry"
        return kwargs


def _assume_of(principal: Principal) -> AssumeRole:
    return AssumeRole(principal.role_arn, principal.external_id, principal.duration)


class IdentityPool:
    """Identities by principal, least recently used evicted first."""

    def __init__(self, settings: AwsSettings, max_entries: int = 2048) -> None:
        self.settings = settings
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], Identity] = OrderedDict()
        self._loader = botocore.session.get_session().get_component("data_loader")
        self._unsigned_session = _Session(None, self._loader)
        self._create_lock = threading.Lock()

    # ---------------------------------------------------------------- clients

    def client_config(self, region: str) -> Config:
        s = self.settings
        return Config(
            region_name=region,
            retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
            connect_timeout=s.connect_timeout_seconds,
            read_timeout=s.read_timeout_seconds,
            user_agent_appid=s.app_id,
            use_fips_endpoint=True if s.use_fips_endpoint else None,
            max_pool_connections=max(10, s.max_concurrency),
        )

    def _create(
        self,
        session: Any,
        service: str,
        region: str,
        config: Config | None = None,
        **credentials: Any,
    ) -> Any:
        cfg = self.client_config(region)
        if config is not None:
            cfg = cfg.merge(config)
        with self._create_lock:  # botocore sessions are not thread-safe for create_client
            client = session.create_client(
                service,
                region_name=region,
                endpoint_url=self.settings.endpoint(service, region),
                verify=self.settings.ca_bundle or None,
                config=cfg,
                **credentials,
            )
        retries.install(client, self.settings.max_attempts, self.settings.max_backoff_seconds)
        return client

    def client(self, identity: Identity, service: str, region: str) -> Any:
        """The identity's client for (service, region), created once (blocking)."""
        key = (service, region)
        with identity.lock:
            client = identity.clients.get(key)
            if client is None:
                client = self._create(identity.session, service, region)
                identity.clients[key] = client
            return client

    # ------------------------------------------------------------- identities

    def get(self, key: tuple[Any, ...]) -> Identity | None:
        with self._lock:
            identity = self._entries.get(key)
            if identity is not None:
                self._entries.move_to_end(key)
            return identity

    def _put(self, key: tuple[Any, ...], identity: Identity) -> Identity:
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:
                return existing
            self._entries[key] = identity
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return identity

    def irsa(self, principal: Principal, sts_region: str) -> Identity:
        key = ("irsa", principal.role_arn, principal.namespace, principal.service_account)
        identity = self.get(key)
        if identity is not None:
            return identity
        identity = Identity(principal=principal, session=None, credentials=None, environ={})

        def sts_client(service_name: str, config: Config | None = None, **_: Any) -> Any:
            return self._create(self._unsigned_session, "sts", sts_region, config)

        fetcher = _WebIdentityFetcher(sts_client, identity, principal.role_arn)
        identity.fetcher = fetcher
        identity.credentials = DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role-with-web-identity"
        )
        identity.session = _Session(identity.credentials, self._loader)
        return self._put(key, identity)

    def chained(self, source: Identity, assume: AssumeRole, sts_region: str) -> Identity:
        """``assume.role_arn`` assumed with ``source``'s credentials (role chaining):
        botocore's AssumeRoleCredentialFetcher in DeferredRefreshableCredentials, one entry
        per (pod principal, role, external id, duration), refreshed before expiry."""
        first = source.principal
        principal = Principal(
            "chained",
            first.namespace,
            first.service_account,
            assume.role_arn,
            via=first,
            external_id=assume.external_id,
            duration=assume.duration_seconds,
        )
        key = ("chained", principal)
        identity = self.get(key)
        if identity is not None and identity.fetcher.source is source:
            return identity
        # New, or the pod's own entry was evicted and made anew: chain from the live one
        # (the old one no longer gets the pod's newest token).
        identity = Identity(principal=principal, session=None, credentials=None, environ={})

        def sts_client(service_name: str, **credentials: Any) -> Any:
            return self._create(self._unsigned_session, "sts", sts_region, None, **credentials)

        fetcher = _ChainFetcher(sts_client, identity, source)
        identity.fetcher = fetcher
        identity.credentials = DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        identity.session = _Session(identity.credentials, self._loader)
        with self._lock:
            self._entries.pop(key, None)
        return self._put(key, identity)

    def pod_identity(
        self, principal: Principal, address_type: AddressType
    ) -> tuple[tuple[Any, ...], Identity]:
        """The Pod Identity entry (credentials not loaded yet: see :meth:`load_pod_identity`)."""
        key = ("pod-identity", principal.namespace, principal.service_account, address_type)
        identity = self.get(key)
        if identity is not None:
            return key, identity
        s = self.settings
        urls = {
            "ipv4": [s.pod_identity_ipv4_url],
            "ipv6": [s.pod_identity_ipv6_url],
            "auto": [s.pod_identity_ipv4_url, s.pod_identity_ipv6_url],
        }[address_type]
        environ = {ContainerProvider.ENV_VAR_FULL: urls[0]}
        fetcher = AgentFetcher(
            urls, s.pod_identity_timeout_seconds, s.max_attempts, s.max_backoff_seconds
        )
        identity = Identity(principal=principal, session=None, credentials=None, environ=environ)
        identity.fetcher = fetcher
        return key, identity

    def load_pod_identity(self, key: tuple[Any, ...], identity: Identity) -> Identity:
        """First credential fetch from the agent (blocking); stored only on success."""
        if identity.credentials is None:
            provider = ContainerProvider(environ=identity.environ, fetcher=identity.fetcher)
            identity.credentials = provider.load()
            identity.session = _Session(identity.credentials, self._loader)
        return self._put(key, identity)

    def node(self) -> Identity:
        key = ("node",)
        identity = self.get(key)
        if identity is not None:
            return identity
        session = botocore.session.Session()
        session.register_component("data_loader", self._loader)
        identity = Identity(
            principal=Principal("node"),
            session=session,
            credentials=None,
            environ={},
        )
        return self._put(key, identity)
