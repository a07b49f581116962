"""Whose Google credentials a Mount uses, and the access tokens for them.

``pod-adc`` (the default): the pod's service-account token for the workload
identity audience is exchanged at STS (google-auth's identity-pool credentials
with a subject-token supplier); when the pod's ServiceAccount carries
``iam.gke.io/gcp-service-account`` the federated token is then used to
impersonate that Google service account (IAM Credentials generateAccessToken).
Access tokens are cached per (audience, namespace, service account, target)
until shortly before they expire, so a burst of mounts of one service account
costs one exchange.

``provider-adc`` (keyferry's own identity: metadata server or a configured
credentials file) and nodePublishSecretRef ``key.json`` are available only when
the server configuration allows them.

All blocking google-auth calls run on the shared worker pool. Errors are turned
into messages a user can act on; tokens never appear in them.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import google.auth
import google.auth.exceptions
import requests
from google.auth import identity_pool, impersonated_credentials
from google.auth.compute_engine import _metadata
from google.auth.transport.requests import Request
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account

from ...backend import Services
from ...cache import TTLCache
from ...errors import (
    FailedPrecondition,
    InvalidArgument,
    KeyferryError,
    PermissionDenied,
    Unavailable,
)
from ...jwt import unverified_claims
from ...model import Deadline, Mount
from ...observe import get_logger
from .ref import AuthMode, GcpRef
from .settings import GcpSettings

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
DELEGATES_ANNOTATION = "iam.gke.io/gcp-service-account-delegates"
KEY_JSON = "key.json"

log = get_logger("gcp")

# google-auth ships py.typed but leaves these untyped; call them through Any.
_google_auth: Any = google.auth
_identity_pool: Any = identity_pool
_impersonated: Any = impersonated_credentials
_service_account: Any = service_account
_oauth2_credentials: Any = oauth2_credentials
_metadata_get: Any = _metadata.get


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    expiry: float
    """Wall-clock expiry (``time.time()`` seconds)."""


@dataclass(frozen=True)
class Identity:
    """A resolved identity: the cache key (the principal) and how to get a token."""

    principal: Hashable
    description: str
    """For messages: e.g. ``Kubernetes service account ns/sa as gsa@p.iam...``."""
    mode: AuthMode
    audience: str = ""
    namespace: str = ""
    service_account: str = ""
    gsa: str = ""
    delegates: tuple[str, ...] = ()
    member: str = ""
    """The IAM member to grant roles to, for messages (never key.json data)."""


@dataclass(frozen=True)
class WorkloadIdentityPool:
    audience: str
    """The STS audience."""
    token_audiences: tuple[str, ...]
    """Driver token audiences to look for, in order."""
    pool: str


class _Supplier(identity_pool.SubjectTokenSupplier):
    """Hands google-auth the pod's token from the driver (never read from disk)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self._token


class _BoundedRequest:
    """A google-auth transport request whose timeout never exceeds the budget.

    Remembers the HTTP status of its last answer: google-auth's STS and IAM errors
    do not carry it, and it is what tells a rejection (4xx) from an outage (5xx)."""

    def __init__(self, inner: Request, timeout: float) -> None:
        self._inner = inner
        self._timeout = max(0.1, timeout)
        self.last_status: int | None = None

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        limit = self._timeout if timeout is None else min(timeout, self._timeout)
        self.last_status = None
        response = self._inner(
            url, method=method, body=body, headers=headers, timeout=limit, **kwargs
        )
        status = getattr(response, "status", None)
        self.last_status = status if isinstance(status, int) else None
        return response


def _expiry(value: datetime.datetime | None, default_seconds: float = 300.0) -> float:
    if value is None:
        return time.time() + default_seconds
    if value.tzinfo is None:  # google-auth keeps naive UTC datetimes
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def _federated_member(pool: WorkloadIdentityPool, ns: str, ksa: str) -> str:
    """The pod's workload identity principal as an IAM member, for messages.

    GKE pools (``<project>.svc.id.goog``) name the subject ``ns/<ns>/sa/<ksa>``; their
    project number is not known here and is left as PROJECT_NUMBER. A pool provider
    given by its full resource name carries the number; its subject is the token's
    ``sub`` under the default mapping ``google.subject=assertion.sub``."""
    m = re.match(
        r"//iam\.googleapis\.com/(projects/[^/]+/locations/global/workloadIdentityPools/[^/]+)/",
        pool.audience,
    )
    if m:
        return (
            f"principal://iam.googleapis.com/{m.group(1)}/subject/system:serviceaccount:{ns}:{ksa}"
        )
    return (
        "principal://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/"
        f"workloadIdentityPools/{pool.pool}/subject/ns/{ns}/sa/{ksa}"
    )


def _error_detail(exc: BaseException) -> str:
    """The service's own error text (STS/IAM JSON bodies), trimmed; never a token."""
    texts: list[str] = []
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "replace")
        if isinstance(arg, str) and arg.strip():
            texts.append(arg.strip())
    for text in reversed(texts):  # google-auth puts the raw response body last
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        err = body.get("error")
        if isinstance(err, dict):
            detail = str(err.get("message") or err.get("status") or "")
        else:
            detail = " ".join(str(x) for x in (err, body.get("error_description")) if x)
        if detail:
            return detail[:300]
    return texts[0][:300] if texts else ""


def _is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, google.auth.exceptions.TransportError) or bool(
        getattr(exc, "retryable", False)
    )


def _is_outage(exc: BaseException, status: int | None) -> bool:
    """Whether a token endpoint failure is transient (UNAVAILABLE), not a rejection.

    A 5xx or 429 answer, or no answer at all, is an outage; any other answer
    (4xx) is the service refusing the credential. Without a status, google-auth's
    own classification decides (TransportError, ``retryable``)."""
    if status is not None:
        return status >= 500 or status == 429
    return _is_transport_error(exc)


def _status_text(status: int | None) -> str:
    return f"HTTP {status}" if status is not None else "no answer"


class Identities:
    """Resolves identities for refs and hands out cached access tokens."""

    def __init__(self, settings: GcpSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self._session = requests.Session()
        self._tokens: TTLCache[AccessToken] = TTLCache(3600.0)
        self._pool: WorkloadIdentityPool | None = None
        self._pool_error_until = 0.0
        self._pool_error: KeyferryError | None = None
        self.exchanges = 0
        """STS exchanges (and key/ADC token fetches) made; for tests and the benchmark."""
        self.impersonations = 0

    def close(self) -> None:
        self._session.close()

    def _request(self, budget: float) -> _BoundedRequest:
        return _BoundedRequest(Request(self._session), budget)

    # -- which identity -------------------------------------------------------------

    def effective_mode(self, ref: GcpRef, mount: Mount) -> AuthMode:
        """Apply the server's policy to the auth the SecretProviderClass asked for."""
        allow_key = self.settings.allow_node_publish_secret
        if ref.auth == "node-publish-secret":
            if allow_key:
                return "node-publish-secret"
            if ref.auth_explicit:
                raise PermissionDenied(
                    "auth node-publish-secret (nodePublishSecretRef key.json) is disabled on "
                    "this node; an operator can enable it with backends.gcp."
                    "allow_node_publish_secret: true in the keyferry server configuration"
                )
            log.warning(
                "ignoring nodePublishSecretRef key.json: not allowed by server configuration",
                extra={"backend": "gcp", "namespace": mount.pod.namespace, "ignored_key": KEY_JSON},
            )
            return "pod-adc"
        if ref.key_json:
            if allow_key:
                raise InvalidArgument(
                    f"attempting to set both nodePublishSecretRef {KEY_JSON} and auth "
                    f"'{ref.auth}'; remove the 'auth' parameter or the nodePublishSecretRef"
                )
            log.warning(
                "ignoring nodePublishSecretRef key.json: not allowed by server configuration",
                extra={"backend": "gcp", "namespace": mount.pod.namespace, "ignored_key": KEY_JSON},
            )
        if ref.auth == "provider-adc" and not self.settings.allow_provider_adc:
            raise PermissionDenied(
                "auth: provider-adc would use keyferry's own Google credentials, which gives "
                "every namespace the same access; it is disabled. Use the pod's workload "
                "identity (remove 'auth'), or an operator can set backends.gcp."
                "allow_provider_adc: true in the keyferry server configuration"
            )
        return ref.auth

    async def resolve(self, mode: AuthMode, mount: Mount, deadline: Deadline) -> Identity:
        if mode == "provider-adc":
            return Identity(
                ("provider-adc",),
                "keyferry's own credentials (provider-adc)",
                mode,
                member="keyferry's own Google service account (provider-adc)",
            )
        if mode == "node-publish-secret":
            text = mount.secrets.get(KEY_JSON, "")
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            return Identity(
                ("key-json", digest),
                "the nodePublishSecretRef key.json service account",
                mode,
                member="the nodePublishSecretRef key.json service account",
            )
        pool = await self.pool(deadline)
        pod = mount.pod
        if not pod.namespace or not pod.service_account:
            raise FailedPrecondition(
                "the driver sent no pod namespace or service account; set podInfoOnMount: true "
                "on the secrets-store.csi.k8s.io CSIDriver"
            )
        token = self._pod_token(mount, pool)
        sa = await self.services.kube.service_account(pod.namespace, pod.service_account)
        annotations = sa.get("annotations", {}) or {}
        gsa = str(annotations.get(GSA_ANNOTATION, "")).strip()
        delegates = self._delegates(annotations, pod.namespace, pod.service_account)
        who = f"Kubernetes service account {pod.namespace}/{pod.service_account}"
        if gsa:
            who += f" impersonating {gsa}"
        else:
            who += f" (principal .../workloadIdentityPools/{pool.pool}/subject/ns/"
            who += f"{pod.namespace}/sa/{pod.service_account})"
        del token  # checked here; read again when an exchange is needed
        return Identity(
            ("pod-adc", pool.audience, pod.namespace, pod.service_account, gsa, delegates),
            who,
            mode,
            audience=pool.audience,
            namespace=pod.namespace,
            service_account=pod.service_account,
            gsa=gsa,
            delegates=delegates,
            member=f"serviceAccount:{gsa}"
            if gsa
            else _federated_member(pool, pod.namespace, pod.service_account),
        )

    @staticmethod
    def _delegates(annotations: Mapping[str, Any], ns: str, ksa: str) -> tuple[str, ...]:
        raw = annotations.get(DELEGATES_ANNOTATION)
        if not raw:
            return ()
        try:
            items = json.loads(str(raw))
        except ValueError:
            items = None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise InvalidArgument(
                f"ServiceAccount {ns}/{ksa}: annotation {DELEGATES_ANNOTATION} must be a JSON "
                'list of service account emails, e.g. ["a@p.iam.gserviceaccount.com"]'
            )
        return tuple(
            i if i.startswith("projects/") else f"projects/-/serviceAccounts/{i}" for i in items
        )

    def _pod_token(self, mount: Mount, pool: WorkloadIdentityPool) -> str:
        for audience in pool.token_audiences:
            entry = mount.tokens.get(audience)
            if entry is not None and entry.token:
                break
        else:
            wanted = pool.token_audiences[0]
            raise FailedPrecondition(
                f"the driver passed no service-account token for audience '{wanted}'; add "
                f"'- audience: {wanted}' to tokenRequests of the secrets-store.csi.k8s.io "
                "CSIDriver (Helm: tokenRequests) so the pod's workload identity can be used"
            )
        claims = unverified_claims(entry.token)
        if claims is None:
            raise PermissionDenied(
                f"the service-account token for audience '{audience}' is not a JWT"
            )
        subject = f"system:serviceaccount:{mount.pod.namespace}:{mount.pod.service_account}"
        if claims.get("sub") != subject:
            raise PermissionDenied(
                f"the service-account token for audience '{audience}' does not belong to the "
                f"pod's service account {mount.pod.namespace}/{mount.pod.service_account}"
            )
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in auds:
            raise PermissionDenied(
                f"the token passed under audience '{audience}' was issued for another audience"
            )
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp < time.time():
            raise PermissionDenied(
                f"the service-account token for audience '{audience}' has expired"
            )
        return entry.token

    # -- workload identity pool ------------------------------------------------------

    async def pool(self, deadline: Deadline) -> WorkloadIdentityPool:
        if self._pool is not None:
            return self._pool
        if self._pool_error is not None and time.monotonic() < self._pool_error_until:
            raise self._pool_error
        try:
            pool = await self.services.run_blocking(self._configure_pool, deadline.remaining())
        except KeyferryError as exc:
            self._pool_error = exc
            self._pool_error_until = time.monotonic() + 30.0
            raise
        self._pool = pool
        return pool

    def _configure_pool(self, budget: float) -> WorkloadIdentityPool:
        s = self.settings
        project, location, cluster = s.project, s.cluster_location, s.cluster_name
        explicit = s.audience or s.workload_identity_pool
        if not explicit and not (project and location and cluster) and s.discover_from_metadata:
            found = self._from_metadata(min(budget, 5.0))
            project = project or found.get("project", "")
            location = location or found.get("location", "")
            cluster = cluster or found.get("cluster", "")
        pool = s.workload_identity_pool or (f"{project}.svc.id.goog" if project else "")
        audience = s.audience
        if audience.startswith("identitynamespace:") and not s.workload_identity_pool:
            pool = audience.split(":", 2)[1]
        if not audience:
            provider = s.identity_provider or (
                f"https://container.googleapis.com/v1/projects/{project}/locations/{location}"
                f"/clusters/{cluster}"
                if project and location and cluster
                else ""
            )
            if pool and provider:
                audience = f"identitynamespace:{pool}:{provider}"
        if not audience:
            raise FailedPrecondition(
                "Google workload identity is not configured on this node: set backends.gcp."
                "project, cluster_location and cluster_name (GKE), or backends.gcp.audience "
                "(a workload identity pool provider), in the keyferry server configuration"
                + (
                    f"; the metadata server at {s.metadata_url} did not answer"
                    if s.discover_from_metadata
                    else ""
                )
            )
        if s.token_audience:
            token_audiences: tuple[str, ...] = (s.token_audience,)
        else:
            token_audiences = tuple(a for a in (pool, audience) if a)
        return WorkloadIdentityPool(
            audience=audience, token_audiences=token_audiences, pool=pool or audience
        )

    def _from_metadata(self, budget: float) -> dict[str, str]:
        request = self._request(budget)
        root = self.settings.metadata_url.rstrip("/") + "/computeMetadata/v1/"
        found: dict[str, str] = {}
        paths = {
            "project": "project/project-id",
            "location": "instance/attributes/cluster-location",
            "cluster": "instance/attributes/cluster-name",
        }
        for key, path in paths.items():
            try:
                value = _metadata_get(request, path, root=root, retry_count=1, timeout=budget)
            except Exception:  # unreachable or not on GCE: configuration is then required
                return found
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            found[key] = str(value).strip()
        return found

    # -- tokens ----------------------------------------------------------------------

    async def access_token(self, identity: Identity, mount: Mount, deadline: Deadline) -> str:
        margin = self.settings.token_refresh_margin_seconds

        def ttl(tok: AccessToken) -> float:
            life = tok.expiry - time.time()
            return max(0.0, min(life - margin, life / 2))

        async def load() -> AccessToken:
            budget = min(self.settings.auth_timeout_seconds, deadline.remaining())
            if budget <= 0:
                raise Unavailable("the mount's deadline passed before a Google token was obtained")
            if identity.mode == "pod-adc":
                assert self._pool is not None
                token = self._pod_token(mount, self._pool)
                return await self._workload_identity(identity, token, budget)
            if identity.mode == "provider-adc":
                return await self.services.timed(
                    "gcp", "provider_adc_token", self._provider_adc, budget
                )
            text = mount.secrets.get(KEY_JSON, "")
            return await self.services.timed("gcp", "key_json_token", self._key_json, text, budget)

        cached = await self._tokens.get_or_load(identity.principal, load, ttl=ttl)
        return cached.token

    async def _workload_identity(
        self, identity: Identity, token: str, budget: float
    ) -> AccessToken:
        audience, ns, ksa = identity.audience, identity.namespace, identity.service_account
        gsa, delegates = identity.gsa, identity.delegates
        source = _identity_pool.Credentials(
            audience=audience,
            subject_token_type=JWT_TYPE,
            token_url=self.settings.sts_url,
            subject_token_supplier=_Supplier(token),
            scopes=[SCOPE],
        )
        request = self._request(budget)
        self.exchanges += 1
        try:
            await self.services.timed("gcp", "sts_exchange", source.refresh, request)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise self._sts_error(exc, audience, ns, ksa, request.last_status) from None
        if not gsa:
            return AccessToken(str(source.token), _expiry(source.expiry))
        # Hand IAM the federated token already obtained: impersonated credentials copy and
        # re-scope a scoped source, which would exchange the pod's token a second time.
        federated = _oauth2_credentials.Credentials(token=source.token, expiry=source.expiry)
        target = _impersonated.Credentials(
            source_credentials=federated,
            target_principal=gsa,
            target_scopes=[SCOPE],
            delegates=list(delegates) or None,
            lifetime=self.settings.token_lifetime_seconds,
            iam_endpoint_override=(
                f"{self.settings.iam_credentials_url.rstrip('/')}/v1/projects/-/serviceAccounts/"
                f"{gsa}:generateAccessToken"
            ),
        )
        self.impersonations += 1
        try:
            await self.services.timed("gcp", "generate_access_token", target.refresh, request)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise self._iam_error(exc, gsa, ns, ksa, request.last_status) from None
        return AccessToken(str(target.token), _expiry(target.expiry))

    def _sts_error(
        self, exc: BaseException, audience: str, ns: str, ksa: str, status: int | None = None
    ) -> KeyferryError:
        detail = _error_detail(exc)
        if _is_outage(exc, status) and "invalid_grant" not in detail:
            return Unavailable(
                f"the Google STS endpoint {self.settings.sts_url} failed to exchange the token "
                f"of {ns}/{ksa} ({_status_text(status)}, {type(exc).__name__}); kubelet will "
                "retry the mount"
            )
        return PermissionDenied(
            f"Google STS rejected the workload identity token of service account {ns}/{ksa} "
            f"for audience '{audience}'"
            + (f" ({detail})" if detail else "")
            + "; check that the cluster is registered with this workload identity pool and "
            "provider, and that the driver's tokenRequests audience matches"
        )

    def _iam_error(
        self, exc: BaseException, gsa: str, ns: str, ksa: str, status: int | None = None
    ) -> KeyferryError:
        detail = _error_detail(exc)
        if _is_outage(exc, status):
            return Unavailable(
                f"IAM Credentials at {self.settings.iam_credentials_url} failed to impersonate "
                f"{gsa} ({_status_text(status)}, {type(exc).__name__}); kubelet will retry "
                "the mount"
            )
        pool = self._pool.pool if self._pool else "<project>.svc.id.goog"
        return PermissionDenied(
            f"Kubernetes service account {ns}/{ksa} may not impersonate {gsa}"
            + (f" ({detail})" if detail else "")
            + f"; the IAM binding is probably missing: grant roles/iam.workloadIdentityUser on "
            f"{gsa} to member 'serviceAccount:{pool}[{ns}/{ksa}]', or remove the "
            f"{GSA_ANNOTATION} annotation to use the pod's own principal"
        )

    def _provider_adc(self, budget: float) -> AccessToken:
        request = self._request(budget)
        self.exchanges += 1
        try:
            if self.settings.provider_credentials_file:
                creds, _ = _google_auth.load_credentials_from_file(
                    self.settings.provider_credentials_file, scopes=[SCOPE]
                )
                creds.refresh(request)
                return AccessToken(str(creds.token), _expiry(creds.expiry))
            root = self.settings.metadata_url.rstrip("/") + "/computeMetadata/v1/"
            data = _metadata_get(
                request,
                "instance/service-accounts/default/token",
                root=root,
                params={"scopes": SCOPE},
                retry_count=2,
                timeout=budget,
            )
        except google.auth.exceptions.DefaultCredentialsError:
            raise FailedPrecondition(
                "backends.gcp.provider_credentials_file "
                f"({self.settings.provider_credentials_file}) is missing or is not a Google "
                "credentials file; fix the path or the file in the keyferry server configuration"
            ) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            path = self.settings.provider_credentials_file
            if path:
                source = f"backends.gcp.provider_credentials_file ({path})"
                fix = "the key may be disabled or deleted: replace the credentials file"
            else:
                source = f"the metadata server at {self.settings.metadata_url}"
                fix = "check the node's service account and its access scopes"
            if _is_outage(exc, request.last_status):
                raise Unavailable(
                    f"keyferry could not get its own Google credentials (provider-adc) from "
                    f"{source} ({_status_text(request.last_status)}, {type(exc).__name__}); "
                    "kubelet will retry the mount"
                ) from None
            detail = _error_detail(exc)
            raise PermissionDenied(
                f"Google refused keyferry's own credentials (provider-adc) from {source}"
                + (f" ({detail})" if detail else "")
                + f"; {fix}"
            ) from None
        if not isinstance(data, Mapping) or "access_token" not in data:
            raise Unavailable("the metadata server returned no access token (provider-adc)")
        return AccessToken(str(data["access_token"]), time.time() + float(data["expires_in"]))

    def _key_json(self, text: str, budget: float) -> AccessToken:
        try:
            info = json.loads(text)
        except ValueError:
            raise InvalidArgument(
                f"nodePublishSecretRef {KEY_JSON} is not valid JSON; store a service account "
                "key file under that key"
            ) from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise InvalidArgument(
                f"nodePublishSecretRef {KEY_JSON} must be a service account key "
                '("type": "service_account"); other credential types are not accepted'
            )
        # The token endpoint comes from server configuration, not from the key file.
        info = {**info, "token_uri": self.settings.oauth2_token_url}
        try:
            creds = _service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, KeyError, TypeError, google.auth.exceptions.GoogleAuthError):
            raise InvalidArgument(
                f"nodePublishSecretRef {KEY_JSON} is missing fields of a service account key "
                "(client_email, private_key, ...)"
            ) from None
        self.exchanges += 1
        request = self._request(budget)
        try:
            creds.refresh(request)
        except google.auth.exceptions.GoogleAuthError as exc:
            if _is_outage(exc, request.last_status):
                raise Unavailable(
                    f"{self.settings.oauth2_token_url} failed for the {KEY_JSON} service account "
                    f"({_status_text(request.last_status)}); kubelet will retry the mount"
                ) from None
            # Never the key's client_email or key id: nodePublishSecretRef data.
            detail = _error_detail(exc)
            for field_name in ("client_email", "private_key_id", "client_id"):
                value = info.get(field_name)
                if isinstance(value, str) and len(value) >= 3:
                    detail = detail.replace(value, f"<{field_name}>")
            raise PermissionDenied(
                f"Google rejected the nodePublishSecretRef {KEY_JSON} service account"
                + (f" ({detail})" if detail else "")
                + "; the key may be disabled or deleted"
            ) from None
        return AccessToken(str(creds.token), _expiry(creds.expiry))
