"""The pod's workload identity (``pod-adc``): which pool this node's cluster
belongs to, and the token exchange.

The pod's service-account token for the workload identity audience is exchanged
at STS (google-auth's identity-pool credentials with a subject-token supplier);
when the pod's ServiceAccount names a Google service account the federated token
is then used to impersonate it (IAM Credentials generateAccessToken). The pool
and its audience come from server configuration, else from the metadata server
(GKE), and are looked up once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
from google.auth import identity_pool, impersonated_credentials
from google.oauth2 import credentials as oauth2_credentials

from ...backend import Services
from ...errors import FailedPrecondition, KeyferryError
from ...model import Deadline
from ..budget import RESERVE, Call, begin
from . import retrying
from .errors import iam_error, sts_error
from .settings import GcpSettings
from .tokens import SCOPE, AccessToken, BoundedRequest, TokenClient, expiry

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
_POOL_ERROR_SECONDS = 30.0
"""How long a failure to configure the pool is answered from memory."""

# google-auth ships py.typed but leaves these untyped; call them through Any.
_identity_pool: Any = identity_pool
_impersonated: Any = impersonated_credentials
_oauth2_credentials: Any = oauth2_credentials


@dataclass(frozen=True)
class WorkloadIdentityPool:
    audience: str
    """The STS audience."""
    token_audiences: tuple[str, ...]
    """Driver token audiences to look for, in order."""
    pool: str


_FULL_POOL = re.compile(
    r"//iam\.googleapis\.com/(projects/[^/]+/locations/global/workloadIdentityPools/[^/]+)/"
)


def federated_member(pool: WorkloadIdentityPool, ns: str, ksa: str) -> str:
    """The pod's workload identity principal as an IAM member, for messages.

    GKE pools (``<project>.svc.id.goog``) name the subject ``ns/<ns>/sa/<ksa>``; their
    project number is not known here and is left as PROJECT_NUMBER. A pool provider
    given by its full resource name carries the number; its subject is the token's
    ``sub`` under the default mapping ``google.subject=assertion.sub``."""
    m = _FULL_POOL.match(pool.audience)
    if m:
        return (
            f"principal://iam.googleapis.com/{m.group(1)}/subject/system:serviceaccount:{ns}:{ksa}"
        )
    return (
        "principal://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/"
        f"workloadIdentityPools/{pool.pool}/subject/ns/{ns}/sa/{ksa}"
    )


def impersonation_member(pool: WorkloadIdentityPool | None, ns: str, ksa: str) -> str:
    """The IAM member to grant ``roles/iam.workloadIdentityUser`` on a Google service account
    so that ``ns/ksa`` may impersonate it, for messages.

    A pool provider given by its full resource name (a workload identity pool outside GKE)
    names the principal ``principal://.../workloadIdentityPools/POOL/subject/SUBJECT``, as
    :func:`federated_member` does; a GKE pool (``<project>.svc.id.goog``) takes the member
    ``serviceAccount:<pool>[ns/ksa]``."""
    if pool is not None and _FULL_POOL.match(pool.audience):
        return federated_member(pool, ns, ksa)
    name = pool.pool if pool is not None else "<project>.svc.id.goog"
    return f"serviceAccount:{name}[{ns}/{ksa}]"


class _Supplier(identity_pool.SubjectTokenSupplier):
    """Hands google-auth the pod's token from the driver (never read from disk)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self._token


class WorkloadIdentity:
    """The node's workload identity pool, and exchanges of pod tokens in it."""

    def __init__(self, settings: GcpSettings, services: Services, http: TokenClient) -> None:
        self.settings = settings
        self.services = services
        self.http = http
        self._pool: WorkloadIdentityPool | None = None
        self._pool_error_until = 0.0
        self._pool_error: KeyferryError | None = None
        self.exchanges = 0
        """STS exchanges made; for tests and the benchmark."""
        self.impersonations = 0

    # -- the pool --------------------------------------------------------------------

    async def pool(self, deadline: Deadline) -> WorkloadIdentityPool:
        if self._pool is not None:
            return self._pool
        if self._pool_error is not None and time.monotonic() < self._pool_error_until:
            raise self._pool_error
        try:
            pool = await self.services.run_blocking(self._configure_pool, deadline.remaining())
        except KeyferryError as exc:
            self._pool_error = exc
            self._pool_error_until = time.monotonic() + _POOL_ERROR_SECONDS
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
        request = self.http.request(budget)
        found: dict[str, str] = {}
        paths = {
            "project": "project/project-id",
            "location": "instance/attributes/cluster-location",
            "cluster": "instance/attributes/cluster-name",
        }
        for key, path in paths.items():
            try:
                value = self.http.metadata(request, path, retry_count=1, timeout=budget)
            except Exception:  # unreachable or not on GCE: configuration is then required
                return found
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            found[key] = str(value).strip()
        return found

    # -- the exchange ----------------------------------------------------------------

    async def exchange(
        self,
        token: str,
        *,
        audience: str,
        namespace: str,
        service_account: str,
        gsa: str,
        delegates: tuple[str, ...],
        deadline: Deadline,
    ) -> AccessToken:
        """The pod's ``token`` exchanged at STS for ``audience``, then, with a ``gsa``,
        for that Google service account's token (through ``delegates``). Each request is
        retried within the Mount's budget and ``auth_timeout_seconds`` (:mod:`.retrying`)."""
        ns, ksa = namespace, service_account
        s = self.settings
        source = _identity_pool.Credentials(
            audience=audience,
            subject_token_type=JWT_TYPE,
            token_url=s.sts_url,
            subject_token_supplier=_Supplier(token),
            scopes=[SCOPE],
        )
        call = begin(
            "gcp",
            "sts_exchange",
            deadline,
            max_attempts=s.max_attempts,
            metrics=self.services.metrics,
            reserve=RESERVE,
            limit=s.auth_timeout_seconds,
        )
        request = self.http.request(s.auth_timeout_seconds, call)
        self.exchanges += 1
        try:
            await self.services.timed(
                "gcp", "sts_exchange", self._retrying, source.refresh, request, call
            )
        except google.auth.exceptions.GoogleAuthError as exc:
            error = sts_error(exc, request.last_status, s.sts_url, audience, ns, ksa)
            raise call.outcome(error) from None
        if not gsa:
            return AccessToken(str(source.token), expiry(source.expiry))
        # Hand IAM the federated token already obtained: impersonated credentials copy and
        # re-scope a scoped source, which would exchange the pod's token a second time.
        federated = _oauth2_credentials.Credentials(token=source.token, expiry=source.expiry)
        iam_url = s.iam_credentials_url
        target = _impersonated.Credentials(
            source_credentials=federated,
            target_principal=gsa,
            target_scopes=[SCOPE],
            delegates=list(delegates) or None,
            lifetime=s.token_lifetime_seconds,
            iam_endpoint_override=(
                f"{iam_url.rstrip('/')}/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken"
            ),
        )
        self.impersonations += 1
        iam = call.child("generate_access_token", s.max_attempts)
        request = self.http.request(s.auth_timeout_seconds, iam)
        try:
            await self.services.timed(
                "gcp", "generate_access_token", self._retrying, target.refresh, request, iam
            )
        except google.auth.exceptions.GoogleAuthError as exc:
            member = impersonation_member(self._pool, ns, ksa)
            error = iam_error(exc, request.last_status, iam_url, gsa, ns, ksa, member)
            raise iam.outcome(error) from None
        return AccessToken(str(target.token), expiry(target.expiry))

    def _retrying(
        self, refresh: Callable[[BoundedRequest], None], request: BoundedRequest, call: Call
    ) -> None:
        """``refresh(request)``, retried as :mod:`.retrying` does, judged by the HTTP
        status ``request`` saw."""
        retrying.run(
            lambda: refresh(request),
            call,
            initial=self.settings.retry_initial_seconds,
            maximum=self.settings.retry_max_seconds,
            outcome_of=lambda _: retrying.http_outcome(request.last_status, request.timed_out),
            asked_of=lambda _: request.last_asked,
        )
