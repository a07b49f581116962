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
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleWithWebIdentityCredentialFetcher,
    ContainerProvider,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import MetadataRetrievalError
from botocore.httpsession import URLLib3Session
from botocore.utils import RETRYABLE_HTTP_ERRORS, ContainerMetadataFetcher

from .ref import AddressType
from .settings import AwsSettings

_RETRYABLE_HTTP: tuple[type[BaseException], ...] = RETRYABLE_HTTP_ERRORS


@dataclass(frozen=True)
class Principal:
    """Who AWS sees. Values are cached per principal, never across principals."""

    kind: str
    """``irsa``, ``pod-identity`` or ``node``."""
    namespace: str = ""
    service_account: str = ""
    role_arn: str = ""

    def describe(self) -> str:
        sa = f"service account {self.namespace}/{self.service_account}"
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

    def __init__(self, status: int, text: str) -> None:
        super().__init__(error_msg=f"the Pod Identity agent answered HTTP {status}: {text[:200]}")
        self.status = status


class AgentFetcher(ContainerMetadataFetcher):  # type: ignore[misc]
    """Fetch container credentials from the Pod Identity agent, trying each address
    in order on connection failures (IPv4 first, then IPv6 for ``auto``)."""

    def __init__(self, urls: list[str], timeout: float) -> None:
        super().__init__(session=URLLib3Session(timeout=timeout))
        self.urls = urls
        self.timeout = timeout
        self.tried: list[str] = []
        self.last_status = 0

    def _validate_allowed_url(self, full_url: str) -> None:
        """Agent URLs come from server configuration only; any host is allowed."""

    def _get_response(self, full_url: str, headers: Any, timeout: float) -> Any:
        try:
            request = AWSRequest(method="GET", url=full_url, headers=headers)
            response = self._session.send(request.prepare())
        except _RETRYABLE_HTTP as exc:
            raise MetadataRetrievalError(
                error_msg=f"cannot reach the Pod Identity agent at {full_url} "
                f"({type(exc).__name__})"
            ) from None
        text = response.content.decode("utf-8", "replace")
        if response.status_code != 200:
            self.last_status = response.status_code
            raise _AgentHTTPError(response.status_code, text)
        try:
            return json.loads(text)
        except ValueError:
            raise MetadataRetrievalError(
                error_msg="the Pod Identity agent returned a body that is not JSON"
            ) from None

    def retrieve_full_uri(self, full_url: str, headers: Any = None) -> Any:
        last: MetadataRetrievalError | None = None
        self.tried = []
        self.last_status = 0
        for url in self.urls:
            self.tried.append(url)
            try:
                return self._get_response(
                    url, {"Accept": "application/json", **(headers or {})}, self.timeout
                )
            except _AgentHTTPError:
                raise
            except MetadataRetrievalError as exc:
                last = exc
        assert last is not None
        raise last


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

    def _create(self, session: Any, service: str, region: str, config: Config | None = None) -> Any:
        cfg = self.client_config(region)
        if config is not None:
            cfg = cfg.merge(config)
        with self._create_lock:  # botocore sessions are not thread-safe for create_client
            return session.create_client(
                service,
                region_name=region,
                endpoint_url=self.settings.endpoint(service, region),
                verify=self.settings.ca_bundle or None,
                config=cfg,
            )

    def client(
        self, identity: Identity, service: str, region: str, hook: Callable[..., Any] | None
    ) -> Any:
        """The identity's client for (service, region), created once (blocking)."""
        key = (service, region)
        with identity.lock:
            client = identity.clients.get(key)
            if client is None:
                client = self._create(identity.session, service, region)
                if hook is not None:
                    client.meta.events.register("needs-retry", hook)
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
        fetcher = AgentFetcher(urls, s.pod_identity_timeout_seconds)
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
