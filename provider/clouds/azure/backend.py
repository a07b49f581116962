"""The ``azure`` backend: Key Vault secrets, keys and certificates, fetched as
the pod's identity.

Identity, in the order a class asks for it (see :func:`provider.clouds.azure.dialect.resolve_auth`):

- workload identity: ``clientID`` (or the ServiceAccount's
  ``azure.workload.identity/client-id``) and the pod's token for
  ``api://AzureADTokenExchange``, exchanged through azure-identity's
  ``ClientAssertionCredential``;
- service principal: nodePublishSecretRef ``clientid`` / ``clientsecret``;
- the node's VM managed identity, only when the server configuration allows it.

Credentials are kept per identity (workload: authority, tenant, client id and the
token's subject, i.e. namespace and ServiceAccount), so access tokens are
reused until azure-identity refreshes them shortly before expiry (5 minutes).
Key Vault clients are kept per (vault, identity, object kind). Retries go through
azure-core's policy (Retry-After honoured) inside the mount's budget; 429 and
5xx answers are counted in ``keyferry_backend_requests{operation="http"}``.

Endpoints (authority host, vault URL), the CA bundle and custom clouds come
from server configuration only::

    backends:
      azure:
        cloud: AzurePublicCloud          # default when a class names none
        clouds:                          # custom clouds (or overrides of built-in ones)
          MyCloud: {authority_host: https://login.example, vault_dns_suffix: vault.example}
        cloud_env_files: [/etc/keyferry/azurestack.json]   # AzureStackCloud files allowed
        authority_host: ""               # override for every cloud
        vault_url: ""                    # override for every cloud, e.g. https://kv.internal/{name}
        ca_bundle: ""                    # PEM bundle for Key Vault and Entra TLS
        verify_challenge_resource: true
        allow_vm_managed_identity: false
        allow_service_principal: true
        service_account_annotations: true
        construct_pem_chain: true
        retry_total: 3
        retry_backoff_factor: 0.8
        retry_backoff_max: 60
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
)
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from ... import settings
from ...backend import FetchResult, Services
from ...cache import TTLCache
from ...errors import (
    Absent,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KeyferryError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    did_you_mean,
)
from ...jwt import unverified_claims
from ...model import Deadline, Fetched, Mount
from . import certs
from .ref import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_TENANT_ID,
    WORKLOAD_AUDIENCE,
    AzureAuth,
    AzureRef,
    check_client_id,
    check_tenant_id,
    require_workload_token,
)

T = TypeVar("T")
NAME = "azure"
_MARGIN = 0.5
"""Seconds of the mount budget kept back for rendering and answering."""


# --- configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_host: str
    vault_dns_suffix: str
    vault_url: str = ""
    """Template with ``{name}``; empty: ``https://{name}.{vault_dns_suffix}``."""

    def url_for(self, vault: str) -> str:
        if self.vault_url:
            return self.vault_url.replace("{name}", vault).rstrip("/")
        return f"https://{vault}.{self.vault_dns_suffix}"


BUILTIN_CLOUDS = {
    "azurepubliccloud": Cloud(
        "AzurePublicCloud", "https://login.microsoftonline.com", "vault.azure.net"
    ),
    "azurechinacloud": Cloud("AzureChinaCloud", "https://login.chinacloudapi.cn", "vault.azure.cn"),
    "azureusgovernmentcloud": Cloud(
        "AzureUSGovernmentCloud", "https://login.microsoftonline.us", "vault.usgovcloudapi.net"
    ),
}


@dataclass(frozen=True)
class AzureSettings:
    default_cloud: str = "AzurePublicCloud"
    clouds: Mapping[str, Cloud] = field(default_factory=lambda: dict(BUILTIN_CLOUDS))
    """Lower-cased name -> cloud: the built-in ones plus the configured ones."""
    env_files: Mapping[str, Cloud] = field(default_factory=dict)
    """Allowed AzureStackCloud environment files, read once at start-up."""
    ca_bundle: str = ""
    verify_challenge_resource: bool = True
    disable_instance_discovery: bool = False
    allow_vm_managed_identity: bool = False
    allow_service_principal: bool = True
    service_account_annotations: bool = True
    construct_pem_chain: bool = True
    retry_total: int = field(default=3, metadata=settings.ZERO_OK)
    retry_backoff_factor: float = field(default=0.8, metadata=settings.ZERO_OK)
    retry_backoff_max: float = field(default=60.0, metadata=settings.ZERO_OK)
    token_timeout_seconds: float = 10.0
    max_clients: int = 512


def _https(value: Any, where: str) -> str:
    text = str(value or "").strip().rstrip("/")
    if text and not text.startswith("https://"):
        raise ConfigError(
            f"{where}: {text!r} must be an https:// URL (Key Vault and Entra need TLS)"
        )
    return text


def _cloud(name: str, raw: Any, base: Cloud | None, where: str) -> Cloud:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping with authority_host and vault_dns_suffix")
    unknown = set(raw) - {"authority_host", "vault_dns_suffix", "vault_url"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    authority = _https(raw.get("authority_host", base.authority_host if base else ""), where)
    suffix = str(raw.get("vault_dns_suffix", base.vault_dns_suffix if base else "")).strip(" ./")
    vault_url = _https(raw.get("vault_url", base.vault_url if base else ""), where)
    if not authority or not (suffix or vault_url):
        raise ConfigError(
            f"{where}: authority_host and vault_dns_suffix (or vault_url) are required"
        )
    if vault_url and "{name}" not in vault_url:
        raise ConfigError(f"{where}: vault_url must contain {{name}} (the vault name)")
    return Cloud(name, authority, suffix, vault_url)


def _env_file(path: str) -> Cloud:
    """An AzureStackCloud environment file (go-autorest JSON), read at start-up."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"backends.azure.cloud_env_files: cannot read {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"backends.azure.cloud_env_files: {path} is not a JSON object")
    return _cloud(
        str(data.get("name") or "AzureStackCloud"),
        {
            "authority_host": str(data.get("activeDirectoryEndpoint", "")),
            "vault_dns_suffix": str(data.get("keyVaultDNSSuffix", "")),
        },
        None,
        f"backends.azure.cloud_env_files {path}",
    )


_STRUCTURED = ("cloud", "clouds", "cloud_env_files", "authority_host", "vault_url")


def parse_settings(section: Mapping[str, Any]) -> AzureSettings:
    values, raw = settings.read(
        AzureSettings,
        section,
        "backends.azure",
        structured=_STRUCTURED,
        hidden=("default_cloud", "env_files"),
    )
    clouds: dict[str, Cloud] = dict(BUILTIN_CLOUDS)
    custom = raw.get("clouds") or {}
    if not isinstance(custom, Mapping):
        raise ConfigError("backends.azure.clouds: must be a mapping of cloud name -> settings")
    for name, section in custom.items():
        key = str(name).lower()
        clouds[key] = _cloud(str(name), section, clouds.get(key), f"backends.azure.clouds.{name}")
    authority = _https(raw.get("authority_host"), "backends.azure.authority_host")
    vault_url = _https(raw.get("vault_url"), "backends.azure.vault_url")
    if vault_url and "{name}" not in vault_url:
        raise ConfigError("backends.azure.vault_url: must contain {name} (the vault name)")
    env_files: dict[str, Cloud] = {}
    files = raw.get("cloud_env_files") or []
    if not isinstance(files, list):
        raise ConfigError("backends.azure.cloud_env_files: must be a list of file paths")
    for path in files:
        env_files[str(path)] = _env_file(str(path))

    def override(c: Cloud) -> Cloud:
        return Cloud(
            c.name, authority or c.authority_host, c.vault_dns_suffix, vault_url or c.vault_url
        )

    clouds = {k: override(c) for k, c in clouds.items()}
    env_files = {k: override(c) for k, c in env_files.items()}
    default = str(raw.get("cloud") or "AzurePublicCloud")
    if default.lower() not in clouds:
        names = [c.name for c in clouds.values()]
        raise ConfigError(
            f"backends.azure.cloud: unknown cloud {default!r}{did_you_mean(default, names)}"
        )
    ca = values.get("ca_bundle", "")
    if ca:
        try:
            with open(ca, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"backends.azure.ca_bundle: cannot read {ca}: {exc.strerror}"
            ) from None
    custom_authority = any(
        c.authority_host not in {b.authority_host for b in BUILTIN_CLOUDS.values()}
        for c in (*clouds.values(), *env_files.values())
    )
    values.setdefault("disable_instance_discovery", custom_authority)
    return AzureSettings(
        default_cloud=clouds[default.lower()].name, clouds=clouds, env_files=env_files, **values
    )


# --- retries within the mount budget -----------------------------------------------------


class BudgetRetryPolicy(RetryPolicy):  # type: ignore[type-arg]
    """azure-core's retry policy (Retry-After honoured) that never sleeps past the
    caller's budget (the ``timeout`` option) and counts throttling in metrics."""

    def __init__(self, on_status: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_status = on_status

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["keyferry_deadline"] = time.monotonic() + float(settings["timeout"])
        return settings

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        self._on_status(response.http_response.status_code)
        return bool(super().is_retry(settings, response))

    def increment(
        self,
        settings: dict[str, Any],
        response: Any = None,
        error: Exception | None = None,
    ) -> bool:
        retry = bool(super().increment(settings, response=response, error=error))
        if not retry:
            return False
        wait: float | None = None
        if isinstance(response, PipelineResponse):
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time(settings)
        return bool(time.monotonic() + wait < settings["keyferry_deadline"])


# --- identities ----------------------------------------------------------------------------


class _PinnedCredential:
    """The credential Key Vault clients use: keeps the class's tenant (as upstream
    does; the vault's challenge may name another) and passes the scope through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        # One exchange at a time per identity: concurrent first requests of one mount
        # (or of several pods) then share the token instead of each fetching one.
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, claims: str | None = None, **_: Any) -> AccessToken:
        with self._lock:
            token: AccessToken = self.inner.get_token(*scopes, claims=claims)
        return token

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close:
            close()


class _Assertion:
    """The newest pod token of one identity; the credential reads it on each exchange."""

    def __init__(self) -> None:
        self._token = ""
        self._lock = threading.Lock()

    def set(self, token: str) -> None:
        with self._lock:
            self._token = token

    def get(self) -> str:
        with self._lock:
            return self._token


@dataclass
class _Identity:
    key: Hashable
    describe: str
    mode: str
    tenant_id: str
    client_id: str
    credential: _PinnedCredential
    assertion: _Assertion | None = None


@dataclass(frozen=True)
class _Raw:
    """A Key Vault object as fetched, before conversion. Cached per identity."""

    content: bytes = field(repr=False)
    version: str
    content_type: str = ""
    backs_certificate: bool = False


SP_DESCRIBE = "the service principal from nodePublishSecretRef"
"""How messages name a service principal: its client id is nodePublishSecretRef data."""

_AADSTS = re.compile(r"(AADSTS\d+)[:\s]+([^\r\n]*)")
_AKV = re.compile(r"AKV\d{5}")
_AADSTS_HINTS = {
    "AADSTS70021": "no federated identity credential matches the token: create one on the "
    "identity {client} with issuer {issuer}, subject '{subject}' and audience "
    "'api://AzureADTokenExchange'",
    "AADSTS700211": "the token's issuer is not the one in the federated identity credential; "
    "set the credential's issuer to {issuer}",
    "AADSTS700027": "the token's signature does not verify with the keys published by its "
    "issuer {issuer}; check that the federated credential's issuer is this cluster's OIDC "
    "issuer URL and that its JWKS is current",
    "AADSTS700016": "the application {client} was not found in tenant {tenant}; check "
    "clientID and tenantID",
    "AADSTS90002": "tenant {tenant} was not found; check tenantID",
    "AADSTS7000215": "the client secret is invalid; update 'clientsecret' in the "
    "nodePublishSecretRef Secret",
    "AADSTS7000222": "the client secret has expired; create a new one and update the "
    "nodePublishSecretRef Secret",
    "AADSTS700024": "the pod's token is expired or not yet valid; check the node's clock",
}


class AzureBackend:
    name = NAME

    def __init__(self, settings: AzureSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self._identities: OrderedDict[Hashable, _Identity] = OrderedDict()
        self._clients: OrderedDict[Hashable, Any] = OrderedDict()
        ttl = services.config.cache_ttl_seconds
        self._raw: TTLCache[_Raw] = TTLCache(ttl)
        self._versions: TTLCache[tuple[str, ...]] = TTLCache(ttl)
        self._limit = asyncio.Semaphore(max(1, services.config.max_concurrent_fetches))
        # Opening a PKCS#12 costs ~40 ms (OpenSSL checks the RSA key), so conversions are
        # memoised by the digest of the stored bytes: only a caller that fetched those
        # exact bytes can hit an entry, so nothing crosses identities.
        self._converted: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()

    # -- the Backend protocol --

    async def fetch(
        self, mount: Mount, refs: Sequence[Hashable], deadline: Deadline
    ) -> list[FetchResult]:
        results: list[FetchResult | None] = [None] * len(refs)
        plans: list[tuple[int, AzureRef, str]] = []
        for i, ref in enumerate(refs):
            if not isinstance(ref, AzureRef):
                results[i] = Internal(f"the azure backend got a {type(ref).__name__} locator")
                continue
            try:
                plans.append((i, ref, self._vault_url(ref)))
            except KeyferryError as exc:
                results[i] = exc
        # The identity depends on the auth settings and the cloud (its authority).
        identities: dict[tuple[AzureAuth, str, str], _Identity | KeyferryError] = {}
        sa: list[Mapping[str, Any] | KeyferryError] = []
        for _, ref, _ in plans:
            who = (ref.auth, ref.cloud, ref.cloud_env_file)
            if who not in identities:
                try:
                    identities[who] = await self._identity(mount, ref, sa)
                except KeyferryError as exc:
                    identities[who] = exc
                except (ValueError, TypeError) as exc:
                    # azure-identity validates its arguments with ValueError/TypeError;
                    # its text may quote them (nodePublishSecretRef data), so only the type.
                    identities[who] = InvalidArgument(
                        f"{ref.describe()}: the identity settings were rejected "
                        f"({type(exc).__name__}); check tenantID and clientID"
                    )

        async def one(i: int, ref: AzureRef, url: str) -> None:
            identity = identities[(ref.auth, ref.cloud, ref.cloud_env_file)]
            if isinstance(identity, KeyferryError):
                results[i] = identity
                return
            try:
                async with self._limit:
                    results[i] = await asyncio.wait_for(
                        self._fetch_one(ref, url, identity, deadline),
                        timeout=max(0.01, deadline.remaining()),
                    )
            except TimeoutError:
                results[i] = DeadlineExceeded(
                    f"{ref.describe()}: no answer from Key Vault within the mount budget "
                    f"({deadline.seconds:.0f}s)"
                )
            except KeyferryError as exc:
                results[i] = exc

        await asyncio.gather(*(one(i, ref, url) for i, ref, url in plans))
        return [r if r is not None else Internal("no result") for r in results]

    async def close(self) -> None:
        clients = list(self._clients.values())
        identities = list(self._identities.values())
        self._clients.clear()
        self._identities.clear()
        for client in clients:
            client.close()
        for identity in identities:
            identity.credential.close()

    # -- clouds --

    def _cloud(self, ref: AzureRef) -> Cloud:
        if ref.cloud_env_file:
            cloud = self.settings.env_files.get(ref.cloud_env_file)
            if cloud is None:
                raise FailedPrecondition(
                    f"cloudEnvFileName {ref.cloud_env_file!r} is not allowed by the keyferry "
                    "server configuration (backends.azure.cloud_env_files); ask the operator "
                    "to add it, or define the cloud under backends.azure.clouds"
                )
            return cloud
        name = ref.cloud or self.settings.default_cloud
        cloud = self.settings.clouds.get(name.lower())
        if cloud is None:
            names = [c.name for c in self.settings.clouds.values()]
            raise InvalidArgument(
                f"cloudName {name!r} is not a cloud this server knows{did_you_mean(name, names)}; "
                "custom clouds are defined in the server configuration (backends.azure.clouds)"
            )
        return cloud

    def _vault_url(self, ref: AzureRef) -> str:
        return self._cloud(ref).url_for(ref.vault)

    # -- identities --

    async def _service_account(
        self, mount: Mount, cache: list[Mapping[str, Any] | KeyferryError], why: str
    ) -> Mapping[str, Any]:
        if not cache:
            if not self.settings.service_account_annotations:
                cache.append(FailedPrecondition("reading ServiceAccount annotations is disabled"))
            elif not (mount.pod.namespace and mount.pod.service_account):
                cache.append(FailedPrecondition("the request names no pod ServiceAccount"))
            else:
                try:
                    sa = await self.services.kube.service_account(
                        mount.pod.namespace, mount.pod.service_account
                    )
                    cache.append(dict(sa.get("annotations") or {}))
                except KeyferryError as exc:
                    cache.append(exc)
        got = cache[0]
        if isinstance(got, KeyferryError):
            raise type(got)(f"{why} ({got.message})", code=got.code)
        return got

    async def _identity(
        self, mount: Mount, ref: AzureRef, sa: list[Mapping[str, Any] | KeyferryError]
    ) -> _Identity:
        auth = ref.auth
        cloud = self._cloud(ref)
        mode = auth.mode
        client_id = auth.client_id
        tenant = auth.tenant_id
        who = f"ServiceAccount {mount.pod.namespace}/{mount.pod.service_account}"
        if mode == "auto":
            annotations = await self._service_account(
                mount,
                sa,
                "no identity for Key Vault: set 'clientID' in the SecretProviderClass (workload "
                f"identity), annotate the pod's ServiceAccount with {ANNOTATION_CLIENT_ID}, or "
                "add a nodePublishSecretRef with 'clientid' and 'clientsecret'",
            )
            client_id = str(annotations.get(ANNOTATION_CLIENT_ID, "")).strip()
            if client_id:
                check_client_id(
                    client_id, f"{who} annotation {ANNOTATION_CLIENT_ID}", error=FailedPrecondition
                )
            else:
                raise FailedPrecondition(
                    "no identity for Key Vault: the SecretProviderClass has no 'clientID' and "
                    f"{who} has no {ANNOTATION_CLIENT_ID} annotation; set one of them to the "
                    "client id of the federated managed identity or app (or add a "
                    "nodePublishSecretRef with 'clientid' and 'clientsecret')"
                )
            mode = "workload"
            require_workload_token(mount, f"{who} annotation {ANNOTATION_CLIENT_ID}")
        if not tenant and mode != "vm_managed_identity":
            annotations = await self._service_account(
                mount,
                sa,
                "'tenantID' is not set; set it in the SecretProviderClass or annotate the pod's "
                f"ServiceAccount with {ANNOTATION_TENANT_ID}",
            )
            tenant = str(annotations.get(ANNOTATION_TENANT_ID, "")).strip()
            if not tenant:
                raise InvalidArgument(
                    f"'tenantID' is not set and {who} has no {ANNOTATION_TENANT_ID} annotation; "
                    "set tenantID in the SecretProviderClass to the vault's Entra tenant id"
                )
            # As untrusted as the class: it becomes a path segment of the token URL.
            check_tenant_id(
                tenant, f"{who} annotation {ANNOTATION_TENANT_ID}", error=FailedPrecondition
            )
        # The dialect checked the class's values; refs built elsewhere are checked here,
        # before any credential exists or any token is sent.
        if tenant:
            check_tenant_id(tenant, "tenantID")
        if client_id and mode == "workload":
            check_client_id(client_id, "clientID")
        if auth.user_assigned_identity_id:
            check_client_id(auth.user_assigned_identity_id, "userAssignedIdentityID")
        if mode == "workload":
            return self._workload(mount, cloud, tenant, client_id)
        if mode == "service_principal":
            return self._service_principal(mount, cloud, tenant)
        return self._managed_identity(auth)

    def _remember(self, key: Hashable, build: Callable[[], _Identity], what: str) -> _Identity:
        identity = self._identities.get(key)
        if identity is None:
            try:
                identity = build()
            except (ValueError, TypeError) as exc:
                # azure-identity validates its arguments this way; its text may quote
                # them (nodePublishSecretRef data), so the message names only the type.
                raise InvalidArgument(
                    f"cannot set up {what}: azure-identity rejected its settings "
                    f"({type(exc).__name__}); check tenantID and the client id"
                ) from None
            self._identities[key] = identity
            if len(self._identities) > self.settings.max_clients:
                _, old = self._identities.popitem(last=False)
                self._drop_clients(old.key)
                old.credential.close()
        else:
            self._identities.move_to_end(key)
        return identity

    def _credential_kwargs(self, cloud: Cloud) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "authority": cloud.authority_host,
            "retry_total": min(self.settings.retry_total, 2),
            "connection_timeout": self.settings.token_timeout_seconds,
            "read_timeout": self.settings.token_timeout_seconds,
        }
        if self.settings.ca_bundle:
            kwargs["connection_verify"] = self.settings.ca_bundle
        return kwargs

    def _workload(self, mount: Mount, cloud: Cloud, tenant: str, client_id: str) -> _Identity:
        require_workload_token(mount, "clientID")
        token = mount.tokens[WORKLOAD_AUDIENCE].token
        claims = unverified_claims(token)
        if claims is None:
            raise Unauthenticated(
                f"the service-account token for audience '{WORKLOAD_AUDIENCE}' is not a JWT"
            )
        subject = str(claims.get("sub", ""))
        expected = f"system:serviceaccount:{mount.pod.namespace}:{mount.pod.service_account}"
        if mount.pod.namespace and mount.pod.service_account and subject != expected:
            raise Unauthenticated(
                f"the service-account token for audience '{WORKLOAD_AUDIENCE}' is not the pod's "
                f"(its subject is not {expected})"
            )
        if not subject:
            raise Unauthenticated(
                f"the service-account token for audience '{WORKLOAD_AUDIENCE}' has no subject"
            )
        key = ("workload", cloud.authority_host, tenant, client_id, subject)

        def build() -> _Identity:
            assertion = _Assertion()
            inner = ClientAssertionCredential(
                tenant, client_id, assertion.get, **self._credential_kwargs(cloud)
            )
            return _Identity(
                key=key,
                describe=f"workload identity {client_id} ({subject})",
                mode="workload",
                tenant_id=tenant,
                client_id=client_id,
                credential=_PinnedCredential(inner),
                assertion=assertion,
            )

        identity = self._remember(key, build, f"workload identity {client_id}")
        assert identity.assertion is not None
        identity.assertion.set(token)
        return identity

    def _service_principal(self, mount: Mount, cloud: Cloud, tenant: str) -> _Identity:
        if not self.settings.allow_service_principal:
            raise FailedPrecondition(
                "service principal credentials from nodePublishSecretRef are disabled on this "
                "server; use workload identity ('clientID')"
            )
        secrets = {k.lower(): str(v).strip() for k, v in mount.secrets.items()}
        client_id, secret = secrets.get("clientid", ""), secrets.get("clientsecret", "")
        if not client_id or not secret:
            raise InvalidArgument(
                "nodePublishSecretRef: a service principal needs 'clientid' and 'clientsecret'"
            )
        check_client_id(client_id, "nodePublishSecretRef 'clientid'", show=False)
        digest = hashlib.sha256(f"{tenant}\0{client_id}\0{secret}".encode()).hexdigest()
        key = ("service_principal", cloud.authority_host, tenant, client_id, digest)

        def build() -> _Identity:
            kwargs = self._credential_kwargs(cloud)
            kwargs["disable_instance_discovery"] = self.settings.disable_instance_discovery
            inner = ClientSecretCredential(tenant, client_id, secret, **kwargs)
            return _Identity(
                key=key,
                # Never the client id: nodePublishSecretRef data stays out of messages.
                describe=SP_DESCRIBE,
                mode="service_principal",
                tenant_id=tenant,
                client_id=client_id,
                credential=_PinnedCredential(inner),
            )

        return self._remember(key, build, SP_DESCRIBE)

    def _managed_identity(self, auth: AzureAuth) -> _Identity:
        if not self.settings.allow_vm_managed_identity:
            raise PermissionDenied(
                "useVMManagedIdentity: the node's managed identity is not available to pods on "
                "this server (any pod on the node could use it); use workload identity "
                "('clientID' with a federated credential), or ask the operator to set "
                "backends.azure.allow_vm_managed_identity"
            )
        uai = auth.user_assigned_identity_id
        key = ("vm_managed_identity", uai)

        def build() -> _Identity:
            kwargs: dict[str, Any] = {}
            if uai:
                kwargs["client_id"] = uai
            inner = ManagedIdentityCredential(**kwargs)
            return _Identity(
                key=key,
                describe=f"VM managed identity {uai or '(system-assigned)'}",
                mode="vm_managed_identity",
                tenant_id=auth.tenant_id,
                client_id=uai,
                credential=_PinnedCredential(inner),
            )

        return self._remember(key, build, f"VM managed identity {uai or '(system-assigned)'}")

    # -- clients --

    def _on_status(self, status: int) -> None:
        if status == 429:
            self.services.metrics.backend_requests.labels(NAME, "http", "throttled").inc()
        elif status >= 500:
            self.services.metrics.backend_requests.labels(NAME, "http", "server_error").inc()

    def _client(self, kind: str, url: str, identity: _Identity) -> Any:
        key = (kind, url, identity.key)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        cls = {"secret": SecretClient, "key": KeyClient, "cert": CertificateClient}[kind]
        kwargs: dict[str, Any] = {
            "verify_challenge_resource": self.settings.verify_challenge_resource,
            "retry_policy": BudgetRetryPolicy(
                self._on_status,
                retry_total=self.settings.retry_total,
                retry_backoff_factor=self.settings.retry_backoff_factor,
                retry_backoff_max=self.settings.retry_backoff_max,
            ),
        }
        if self.settings.ca_bundle:
            kwargs["connection_verify"] = self.settings.ca_bundle
        client = cls(url, identity.credential, **kwargs)
        self._clients[key] = client
        if len(self._clients) > self.settings.max_clients:
            _, old = self._clients.popitem(last=False)
            old.close()
        return client

    def _drop_clients(self, identity_key: Hashable) -> None:
        for key in [k for k in self._clients if k[2] == identity_key]:  # type: ignore[index]
            self._clients.pop(key).close()

    # -- fetching --

    async def _call(
        self, op: str, ref: AzureRef, identity: _Identity, deadline: Deadline, fn: Callable[..., T]
    ) -> T:
        budget = deadline.remaining() - _MARGIN
        if budget <= 0:
            raise DeadlineExceeded(f"{ref.describe()}: the mount budget ran out before the call")
        options = {
            "timeout": budget,
            "read_timeout": budget,
            "connection_timeout": min(budget, 10.0),
        }
        try:
            return await self.services.timed(NAME, op, fn, **options)
        except Exception as exc:
            raise translate(exc, ref, identity) from None

    async def _get(
        self, ref: AzureRef, url: str, identity: _Identity, version: str, deadline: Deadline
    ) -> _Raw:
        client = self._client(ref.kind, url, identity)
        name = ref.name

        async def load() -> _Raw:
            if ref.kind == "secret":
                secret = await self._call(
                    "get_secret",
                    ref,
                    identity,
                    deadline,
                    lambda **o: client.get_secret(name, version or None, **o),
                )
                props = secret.properties
                return _Raw(
                    content=(secret.value or "").encode("utf-8"),
                    version=str(props.version or ""),
                    content_type=str(props.content_type or ""),
                    backs_certificate=bool(props.key_id),
                )
            if ref.kind == "key":
                key = await self._call(
                    "get_key",
                    ref,
                    identity,
                    deadline,
                    lambda **o: client.get_key(name, version or None, **o),
                )
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
            if version:
                cert = await self._call(
                    "get_certificate",
                    ref,
                    identity,
                    deadline,
                    lambda **o: client.get_certificate_version(name, version, **o),
                )
            else:
                cert = await self._call(
                    "get_certificate",
                    ref,
                    identity,
                    deadline,
                    lambda **o: client.get_certificate(name, **o),
                )
            if not cert.cer:
                raise Internal(f"{ref.describe()}: Key Vault returned no certificate body")
            return _Raw(
                content=certs.der_certificate_to_pem(bytes(cert.cer)),
                version=str(cert.properties.version or ""),
            )

        key = (NAME, identity.key, url, ref.kind, name, version)
        return await self._raw.get_or_load(key, load)

    async def _history(
        self, ref: AzureRef, url: str, identity: _Identity, deadline: Deadline
    ) -> tuple[str, ...]:
        """Enabled versions, newest first, starting at ``ref.version`` when given."""
        client = self._client(ref.kind, url, identity)
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
            return await self._call("list_versions", ref, identity, deadline, listing)

        versions = await self._versions.get_or_load((NAME, identity.key, url, ref.kind, name), load)
        if ref.version:
            if ref.version not in versions:
                raise NotFound(
                    f"{ref.describe()} is not among the enabled versions of the object; check "
                    "objectVersion or enable that version"
                )
            versions = versions[versions.index(ref.version) :]
        return versions

    async def _fetch_one(
        self, ref: AzureRef, url: str, identity: _Identity, deadline: Deadline
    ) -> Fetched:
        version = ref.version
        if ref.history > 1:
            versions = await self._history(ref, url, identity, deadline)
            if not versions:
                raise NotFound(f"{ref.describe()} has no enabled version")
            if ref.index >= len(versions):
                raise Absent(
                    f"{ref.describe()}: version history entry {ref.index} does not exist (only "
                    f"{len(versions)} enabled versions)"
                )
            version = versions[ref.index]
        raw = await self._get(ref, url, identity, version, deadline)
        content = await self._convert(ref, raw)
        host = url.split("://", 1)[-1].split("/", 1)[0]
        return Fetched(
            content=content, version=raw.version, content_type=raw.content_type, served_by=host
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


# --- errors --------------------------------------------------------------------------------

_RBAC_ROLES = {
    "secret": "Key Vault Secrets User",
    "key": "Key Vault Crypto User",
    "cert": "Key Vault Certificate User",
}


def _chain_text(exc: BaseException) -> str:
    """The text of an exception and of the ones it was raised from: MSAL's discovery
    failure carries Entra's answer only in the error it wraps."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(texts) < 5:
        seen.add(id(current))
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def _auth_hint(text: str, identity: _Identity) -> str:
    m = _AADSTS.search(text)
    if not m:
        return "check tenantID, clientID and the identity's federated credential or secret"
    code = m.group(1)
    subject = identity.describe.rpartition("(")[2].rstrip(")") if identity.assertion else ""
    issuer = "the cluster's OIDC issuer URL"
    if identity.assertion is not None:
        claims = unverified_claims(identity.assertion.get()) or {}
        if isinstance(claims.get("iss"), str) and claims["iss"]:
            issuer = repr(claims["iss"])
    hint = _AADSTS_HINTS.get(code)
    secret_client = identity.mode == "service_principal"
    client = "(the nodePublishSecretRef clientid)" if secret_client else identity.client_id
    if hint:
        return f"{code}: " + hint.format(
            client=client, tenant=identity.tenant_id, subject=subject, issuer=issuer
        )
    detail = m.group(2)
    if secret_client and identity.client_id:
        # Entra quotes the application id in its descriptions.
        detail = re.sub(
            re.escape(identity.client_id),
            "(the nodePublishSecretRef clientid)",
            detail,
            flags=re.IGNORECASE,
        )
    return f"{code}: {detail[:200].strip()}"


def _from_vault(exc: HttpResponseError, ref: AzureRef) -> bool:
    """Whether an error answer came from Key Vault (not from Entra ID)."""
    response = getattr(exc, "response", None)
    request = getattr(response, "request", None)
    url = str(getattr(request, "url", "") or "")
    return f"/{ref.kind}s/" in url or "/certificates/" in url


def translate(exc: Exception, ref: AzureRef, identity: _Identity) -> KeyferryError:
    """One SDK failure as a KeyferryError naming the object, the cause and the fix."""
    what = ref.describe()
    if isinstance(exc, KeyferryError):
        return exc
    if isinstance(exc, CredentialUnavailableError):
        return FailedPrecondition(f"{what}: {identity.describe} is not available on this node")
    if isinstance(exc, ClientAuthenticationError) and not _from_vault(exc, ref):
        return Unauthenticated(
            f"{what}: Entra ID refused a token for {identity.describe}: "
            f"{_auth_hint(_chain_text(exc), identity)}"
        )
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return DeadlineExceeded(f"{what}: Key Vault did not answer within the mount budget")
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Unavailable(
            f"{what}: cannot reach Key Vault ({type(exc).__name__}); check the vault name, DNS "
            "and network rules"
        )
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        code = exc.error.code if exc.error is not None else ""
        inner = ""
        if exc.error is not None and isinstance(exc.error.innererror, Mapping):
            inner = str(exc.error.innererror.get("code", ""))
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f"/{inner}" if inner else "")
        if status == 404 or isinstance(exc, ResourceNotFoundError):
            return NotFound(
                f"{what} was not found ({detail}); check the object name, type and version and "
                "that it is not deleted"
            )
        if status == 403:
            if inner.endswith("Disabled") or "disabled" in str(exc.error or "").lower():
                return FailedPrecondition(
                    f"{what} is disabled ({detail}); enable it or pick another version"
                )
            if inner == "ForbiddenByRbac":
                return PermissionDenied(
                    f"{what}: {identity.describe} may not read it ({detail}); the vault uses "
                    f"Azure RBAC: grant the role '{_RBAC_ROLES[ref.kind]}' on the vault (or the "
                    "object) to that identity"
                )
            if inner == "ForbiddenByFirewall" or "firewall" in str(exc.error or "").lower():
                return PermissionDenied(
                    f"{what}: the vault's network rules block this node ({detail}); allow the "
                    "cluster's network or use a private endpoint"
                )
            perms = "get" + (" and list" if ref.history > 1 else "")
            return PermissionDenied(
                f"{what}: {identity.describe} may not read it ({detail}); add {perms} "
                f"permission on {ref.kind}s to the vault's access policy for that identity "
                f"(or, with Azure RBAC, the role '{_RBAC_ROLES[ref.kind]}')"
            )
        if status == 401:
            # Key Vault's reason code (AKV10032: another tenant's token) is kept; the SDK
            # already followed the challenge's resource, so the tenant is what is left.
            akv = _AKV.search(str(exc.error.message or "") if exc.error is not None else "")
            reason = f", {akv.group(0)}" if akv else ""
            return Unauthenticated(
                f"{what}: Key Vault rejected the token of {identity.describe} ({detail}{reason}); "
                "check that tenantID is the vault's tenant"
            )
        if status == 429:
            return Unavailable(
                f"{what}: Key Vault throttled the requests ({detail}) and the retries allowed "
                "within the mount budget ran out; kubelet will retry the mount"
            )
        if status >= 500:
            return Unavailable(f"{what}: Key Vault failed ({detail}); kubelet will retry the mount")
        if status == 400:
            return InvalidArgument(f"{what}: Key Vault rejected the request ({detail})")
        return Internal(f"{what}: unexpected Key Vault answer ({detail})")
    return Internal(f"{what}: unexpected error {type(exc).__name__}")


# azure-identity logs every failed token request at WARNING with Entra's text, which
# quotes the application id (a service principal's is nodePublishSecretRef data). It
# bypasses keyferry's JSON log and redactor (Python's last-resort stderr handler), and
# every failure already becomes a keyferry error, so only its errors are let through.
_QUIET_LOGGERS = ("azure.identity",)


def create(settings: Mapping[str, Any], services: Services) -> AzureBackend:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.ERROR:
            logger.setLevel(logging.ERROR)
    return AzureBackend(parse_settings(settings), services)
