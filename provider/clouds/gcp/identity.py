"""Whose Google credentials a Mount uses, and the access tokens for them.

``pod-adc`` (the default): the pod's own workload identity (workload.py), as the
Google service account its ServiceAccount names in ``iam.gke.io/gcp-service-account``
if any. ``provider-adc`` (keyferry's own identity: metadata server or a configured
credentials file) and nodePublishSecretRef ``key.json`` (tokens.py) are available
only when the server configuration allows them.

Access tokens are cached per identity (for pod-adc: audience, namespace, service
account, target) until shortly before they expire, so a burst of mounts of one
service account costs one exchange. Errors are turned into messages a user can
act on (errors.py); tokens never appear in them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from ... import sync_controller
from ...backend import Services
from ...cache import TTLCache
from ...errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from ...jwt import unverified_claims
from ...model import Deadline, Mount
from ...observe import get_logger
from .ref import DELEGATES_ANNOTATION, GSA_ANNOTATION, KEY_JSON, AuthMode, GcpLocator
from .settings import GcpSettings
from .tokens import AccessToken, TokenClient
from .workload import WorkloadIdentity, WorkloadIdentityPool, federated_member

log = get_logger("gcp")


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


class Identities:
    """Resolves identities for refs and hands out cached access tokens."""

    def __init__(self, settings: GcpSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self._tokens: TTLCache[AccessToken] = TTLCache(3600.0)
        self.http = TokenClient(settings)
        self.workload = WorkloadIdentity(settings, services, self.http)

    @property
    def exchanges(self) -> int:
        """STS exchanges (and key/ADC token fetches) made; for tests and the benchmark."""
        return self.workload.exchanges + self.http.exchanges

    def close(self) -> None:
        self.http.close()

    async def authorize(
        self, ref: GcpLocator, mount: Mount, deadline: Deadline
    ) -> tuple[Identity, str]:
        """The identity ``ref`` is fetched as in ``mount``, and an access token for it."""
        mode = self.effective_mode(ref, mount)
        identity = await self.resolve(mode, mount, deadline)
        return identity, await self.access_token(identity, mount, deadline)

    # -- which identity -------------------------------------------------------------

    def effective_mode(self, ref: GcpLocator, mount: Mount) -> AuthMode:
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
            _ignore_key_json(mount)
            return "pod-adc"
        if ref.key_json:
            if allow_key:
                raise InvalidArgument(
                    f"attempting to set both nodePublishSecretRef {KEY_JSON} and auth "
                    f"'{ref.auth}'; remove the 'auth' parameter or the nodePublishSecretRef"
                )
            _ignore_key_json(mount)
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
        pool = await self.workload.pool(deadline)
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
            else federated_member(pool, pod.namespace, pod.service_account),
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
                f"the request carries no service-account token for audience '{wanted}'; "
                f"{sync_controller.token_fix(mount, wanted)} so the pod's workload identity "
                "can be used"
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
                token = self._pod_token(mount, await self.workload.pool(deadline))
                return await self.workload.exchange(
                    token,
                    audience=identity.audience,
                    namespace=identity.namespace,
                    service_account=identity.service_account,
                    gsa=identity.gsa,
                    delegates=identity.delegates,
                    deadline=deadline,
                )
            if identity.mode == "provider-adc":
                return await self.services.timed(
                    "gcp", "provider_adc_token", self.http.provider_adc, budget
                )
            text = mount.secrets.get(KEY_JSON, "")
            return await self.services.timed(
                "gcp", "key_json_token", self.http.key_json, text, budget
            )

        cached = await self._tokens.get_or_load(identity.principal, load, ttl=ttl)
        return cached.token


def _ignore_key_json(mount: Mount) -> None:
    log.warning(
        "ignoring nodePublishSecretRef key.json: not allowed by server configuration",
        extra={"backend": "gcp", "namespace": mount.pod.namespace, "ignored_key": KEY_JSON},
    )
