"""Who fetches: the Entra ID credential of each identity a class may ask for.

In the order a class asks for it (see :func:`provider.clouds.azure.dialect.resolve_auth`):

- workload identity: ``clientID`` (or the ServiceAccount's
  ``azure.workload.identity/client-id``) and the pod's token for
  ``api://AzureADTokenExchange``, exchanged through azure-identity's
  ``ClientAssertionCredential``;
- service principal: nodePublishSecretRef ``clientid`` / ``clientsecret``;
- the node's VM managed identity, only when the server configuration allows it.

Credentials are kept per identity (workload: authority, tenant, client id and the
token's subject, i.e. namespace and ServiceAccount), so access tokens are
reused until azure-identity refreshes them shortly before expiry (5 minutes).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
)

from ...errors import (
    FailedPrecondition,
    InvalidArgument,
    KeyferryError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from ...jwt import unverified_claims
from ...kube import KubeClient
from ...model import Mount
from .. import budget
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
from .retries import BudgetRetryPolicy
from .settings import AzureSettings, Cloud

SP_DESCRIBE = "the service principal from nodePublishSecretRef"
TOKEN_OPERATION = "token"
"""The metric label of Entra ID token requests."""
"""How messages name a service principal: its client id is nodePublishSecretRef data."""


class TokenUnavailable(Exception):
    """Entra ID could not issue a token for a passing reason (throttling, a 5xx, no
    answer), after its own retries. Not an ``AzureError``, so Key Vault's retry policy
    does not retry it again: one layer retries."""

    def __init__(self, error: KeyferryError) -> None:
        super().__init__(error.message)
        self.error = error


class _PinnedCredential:
    """The credential Key Vault clients use: keeps the class's tenant (as upstream
    does; the vault's challenge may name another) and passes the scope through. Token
    requests count as their own operation (``token``) within the Mount's budget."""

    def __init__(self, inner: Any, authority: str = "", max_attempts: int = 3) -> None:
        self.inner = inner
        self.authority = authority
        self.max_attempts = max_attempts
        # One exchange at a time per identity: concurrent first requests of one mount
        # (or of several pods) then share the token instead of each fetching one.
        self._lock = threading.Lock()
        self._failed: tuple[float, TokenUnavailable] | None = None

    def get_token(self, *scopes: str, claims: str | None = None, **_: Any) -> AccessToken:
        call = budget.current()
        nested = call.child(TOKEN_OPERATION, self.max_attempts) if call is not None else None
        entered = budget.enter(nested) if nested is not None else None
        asked = time.monotonic()
        try:
            with self._lock:
                failed = self._failed
                if failed is not None and failed[0] >= asked:
                    # Entra failed for the caller this one waited behind: the same answer,
                    # not another round of attempts.
                    raise failed[1]
                try:
                    token: AccessToken = self.inner.get_token(*scopes, claims=claims)
                except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
                    unavailable = self._unavailable(exc, nested)
                    if unavailable is None:
                        raise  # Entra's verdict on the identity, with its AADSTS code
                    self._failed = (time.monotonic(), unavailable)
                    raise unavailable from None
            return token
        finally:
            if entered is not None:
                budget.leave(entered)

    def _unavailable(self, exc: Exception, call: budget.Call | None) -> TokenUnavailable | None:
        """A passing failure (429, 5xx, no answer) as :class:`TokenUnavailable`; ``None``
        for Entra's refusal of the identity."""
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        if isinstance(exc, ClientAuthenticationError) and (
            status is None or (status != 429 and status < 500)
        ):
            return None
        answer = f"HTTP {status}" if status else f"no answer: {type(exc).__name__}"
        error: KeyferryError = Unavailable(
            f"Entra ID at {self.authority or 'the authority host'} could not issue a token "
            f"({answer}); kubelet will retry the mount"
        )
        return TokenUnavailable(call.outcome(error) if call is not None else error)

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
class Identity:
    """One identity's credential and what messages and hints say about it."""

    key: Hashable
    """Whose credential: mode, authority, tenant, client id and what tells callers apart."""
    describe: str
    mode: str
    tenant_id: str
    client_id: str
    credential: _PinnedCredential
    assertion: _Assertion | None = None


Who = tuple[AzureAuth, str, str]
"""What decides a ref's identity: its auth settings and its cloud (the authority)."""


def who(ref: AzureRef) -> Who:
    return (ref.auth, ref.cloud, ref.cloud_env_file)


class Identities:
    """The identities in use, at most ``max_clients``, least recently used forgotten
    first (``on_forget`` closes what was built on a forgotten one)."""

    def __init__(
        self, settings: AzureSettings, kube: KubeClient, on_forget: Callable[[Hashable], None]
    ) -> None:
        self.settings = settings
        self.kube = kube
        self._on_forget = on_forget
        self._identities: OrderedDict[Hashable, Identity] = OrderedDict()

    async def for_refs(
        self, mount: Mount, refs: Iterable[tuple[AzureRef, Cloud]]
    ) -> dict[Who, Identity | KeyferryError]:
        """The identity of each ref's :func:`who`, or the error that stands for every ref
        needing it; the pod's ServiceAccount is read at most once."""
        found: dict[Who, Identity | KeyferryError] = {}
        sa: list[Mapping[str, Any] | KeyferryError] = []
        for ref, cloud in refs:
            key = who(ref)
            if key in found:
                continue
            try:
                found[key] = await self._identity(mount, ref, cloud, sa)
            except KeyferryError as exc:
                found[key] = exc
            except (ValueError, TypeError) as exc:
                # azure-identity validates its arguments with ValueError/TypeError;
                # its text may quote them (nodePublishSecretRef data), so only the type.
                found[key] = InvalidArgument(
                    f"{ref.describe()}: the identity settings were rejected "
                    f"({type(exc).__name__}); check tenantID and clientID"
                )
        return found

    def close(self) -> None:
        identities = list(self._identities.values())
        self._identities.clear()
        for identity in identities:
            identity.credential.close()

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
                    sa = await self.kube.service_account(
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
        self,
        mount: Mount,
        ref: AzureRef,
        cloud: Cloud,
        sa: list[Mapping[str, Any] | KeyferryError],
    ) -> Identity:
        auth = ref.auth
        mode = auth.mode
        client_id = auth.client_id
        tenant = auth.tenant_id
        acct = f"ServiceAccount {mount.pod.namespace}/{mount.pod.service_account}"
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
                    client_id,
                    f"{acct} annotation {ANNOTATION_CLIENT_ID}",
                    error=FailedPrecondition,
                )
            else:
                raise FailedPrecondition(
                    "no identity for Key Vault: the SecretProviderClass has no 'clientID' and "
                    f"{acct} has no {ANNOTATION_CLIENT_ID} annotation; set one of them to the "
                    "client id of the federated managed identity or app (or add a "
                    "nodePublishSecretRef with 'clientid' and 'clientsecret')"
                )
            mode = "workload"
            require_workload_token(mount, f"{acct} annotation {ANNOTATION_CLIENT_ID}")
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
                    f"'tenantID' is not set and {acct} has no {ANNOTATION_TENANT_ID} annotation; "
                    "set tenantID in the SecretProviderClass to the vault's Entra tenant id"
                )
            # As untrusted as the class: it becomes a path segment of the token URL.
            check_tenant_id(
                tenant, f"{acct} annotation {ANNOTATION_TENANT_ID}", error=FailedPrecondition
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

    def _remember(self, key: Hashable, build: Callable[[], Identity], what: str) -> Identity:
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
                self._on_forget(old.key)
                old.credential.close()
        else:
            self._identities.move_to_end(key)
        return identity

    def _credential_kwargs(self, cloud: Cloud) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "authority": cloud.authority_host,
            "retry_total": self._token_retries,
            "retry_backoff_factor": self.settings.retry_backoff_factor,
            "retry_backoff_max": self.settings.retry_backoff_max,
            "retry_policy_class": functools.partial(BudgetRetryPolicy, TOKEN_OPERATION),
            "connection_timeout": self.settings.token_timeout_seconds,
            "read_timeout": self.settings.token_timeout_seconds,
        }
        if self.settings.ca_bundle:
            kwargs["connection_verify"] = self.settings.ca_bundle
        return kwargs

    @property
    def _token_retries(self) -> int:
        return min(self.settings.retry_total, 2)

    def _pinned(self, inner: Any, cloud: Cloud) -> _PinnedCredential:
        return _PinnedCredential(inner, cloud.authority_host, self._token_retries + 1)

    def _workload(self, mount: Mount, cloud: Cloud, tenant: str, client_id: str) -> Identity:
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

        def build() -> Identity:
            assertion = _Assertion()
            inner = ClientAssertionCredential(
                tenant, client_id, assertion.get, **self._credential_kwargs(cloud)
            )
            return Identity(
                key=key,
                describe=f"workload identity {client_id} ({subject})",
                mode="workload",
                tenant_id=tenant,
                client_id=client_id,
                credential=self._pinned(inner, cloud),
                assertion=assertion,
            )

        identity = self._remember(key, build, f"workload identity {client_id}")
        assert identity.assertion is not None
        identity.assertion.set(token)
        return identity

    def _service_principal(self, mount: Mount, cloud: Cloud, tenant: str) -> Identity:
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

        def build() -> Identity:
            kwargs = self._credential_kwargs(cloud)
            kwargs["disable_instance_discovery"] = self.settings.disable_instance_discovery
            inner = ClientSecretCredential(tenant, client_id, secret, **kwargs)
            return Identity(
                key=key,
                # Never the client id: nodePublishSecretRef data stays out of messages.
                describe=SP_DESCRIBE,
                mode="service_principal",
                tenant_id=tenant,
                client_id=client_id,
                credential=self._pinned(inner, cloud),
            )

        return self._remember(key, build, SP_DESCRIBE)

    def _managed_identity(self, auth: AzureAuth) -> Identity:
        if not self.settings.allow_vm_managed_identity:
            raise PermissionDenied(
                "useVMManagedIdentity: the node's managed identity is not available to pods on "
                "this server (any pod on the node could use it); use workload identity "
                "('clientID' with a federated credential), or ask the operator to set "
                "backends.azure.allow_vm_managed_identity"
            )
        uai = auth.user_assigned_identity_id
        key = ("vm_managed_identity", uai)

        def build() -> Identity:
            kwargs: dict[str, Any] = {}
            if uai:
                kwargs["client_id"] = uai
            inner = ManagedIdentityCredential(**kwargs)
            return Identity(
                key=key,
                describe=f"VM managed identity {uai or '(system-assigned)'}",
                mode="vm_managed_identity",
                tenant_id=auth.tenant_id,
                client_id=uai,
                credential=_PinnedCredential(inner),
            )

        return self._remember(key, build, f"VM managed identity {uai or '(system-assigned)'}")


# azure-identity logs every failed token request at WARNING with Entra's text, which
# quotes the application id (a service principal's is nodePublishSecretRef data). It
# bypasses keyferry's JSON log and redactor (Python's last-resort stderr handler), and
# every failure already becomes a keyferry error, so only its errors are let through.
_QUIET_LOGGERS = ("azure.identity",)


def quiet_sdk_logs() -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.ERROR:
            logger.setLevel(logging.ERROR)
