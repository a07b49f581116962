"""Who the pod is to AWS: IRSA, EKS Pod Identity, or (only if allowed) the node.

Per mount and identity method (``usePodIdentity``):

1. :meth:`Identities.check_token` (no I/O): the driver passed the pod's token for
   the method's audience, else a message naming the CSIDriver's ``tokenRequests``;
2. :meth:`Identities.resolve`: IRSA reads the ServiceAccount's role annotation and
   assumes the role with the pod's token (AssumeRoleWithWebIdentity); Pod Identity
   asks the node's EKS Pod Identity agent. Credentials and clients are kept per
   principal by :class:`~.credentials.IdentityPool` and refreshed only when they
   near expiry; errors name the trust policy, association or add-on to fix.
"""

from __future__ import annotations

import asyncio
import re

from ... import sync_controller
from ...backend import Services
from ...errors import (
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    KeyferryError,
    NotFound,
    PermissionDenied,
)
from ...model import Deadline, Mount, Token
from ...observe import get_logger
from .. import budget
from .api import Api
from .credentials import Identity, IdentityPool, Principal
from .ref import (
    IRSA_AUDIENCE,
    POD_IDENTITY_AUDIENCE,
    ROLE_ANNOTATION,
    AddressType,
    Auth,
    audience,
    parse_arn,
)
from .settings import AwsSettings

_log = get_logger("aws")
_SESSION_NAME_BAD = re.compile(r"[^\w+=,.@-]")


def role_session_name(mount: Mount) -> str:
    """``<namespace>.<pod>`` (``<namespace>.<service account>`` when the request names no pod
    of its namespace, as the sync controller's) in the characters and length STS allows
    (2..64)."""
    pod = mount.pod
    name = f"{pod.namespace}.{sync_controller.workload_pod(mount) or pod.service_account}"
    name = _SESSION_NAME_BAD.sub("-", name)[:64]
    return name if len(name) >= 2 else "keyferry"


class Identities:
    def __init__(
        self, settings: AwsSettings, services: Services, pool: IdentityPool, api: Api
    ) -> None:
        self.settings = settings
        self.services = services
        self.pool = pool
        self.api = api

    def check_token(self, mount: Mount, auth: Auth) -> KeyferryError | None:
        """Why the mount cannot use ``auth`` (no I/O), or ``None``."""
        wanted = audience(auth)
        token = mount.tokens.get(wanted)
        if token is not None and token.token:
            return None
        if self.settings.allow_node_identity:
            return None
        other = IRSA_AUDIENCE if wanted == POD_IDENTITY_AUDIENCE else POD_IDENTITY_AUDIENCE
        mode = "EKS Pod Identity" if auth == "pod-identity" else "IRSA"
        if token is not None:
            problem = f"the service-account token for audience '{wanted}' is empty"
        elif not mount.tokens:
            problem = "the request carries no service-account tokens"
        else:
            found = ", ".join(sorted(f"'{a}'" for a in mount.tokens))
            problem = f"no service-account token for audience '{wanted}' (got {found})"
        hint = ""
        if other in mount.tokens:
            switch = 'usePodIdentity: "true"' if auth == "irsa" else 'usePodIdentity: "false"'
            hint = f"; or, if this pod should use the other method, set {switch}"
        fix = sync_controller.token_fix(mount, wanted)
        return FailedPrecondition(
            f"{mode} needs a service-account token: {problem}. {fix[0].upper()}{fix[1:]}{hint}"
        )

    async def resolve(
        self,
        mount: Mount,
        auth: Auth,
        address_type: AddressType,
        region: str,
        deadline: Deadline,
    ) -> Identity:
        """The identity, its credentials loaded (``region``: where IRSA calls STS unless
        ``sts_region`` is set)."""
        token = mount.tokens.get(audience(auth))
        ns, sa = mount.pod.namespace, mount.pod.service_account
        if token is None or not token.token:
            _log.warning("no pod token; using the node's identity (allow_node_identity)")
            return self.pool.node()
        if not ns or not sa:
            raise FailedPrecondition(
                "the driver did not pass the pod's namespace and service account; set "
                "podInfoOnMount: true on the CSIDriver secrets-store.csi.k8s.io"
            )
        if auth == "irsa":
            return await self._irsa(mount, token, region, deadline)
        return await self._pod_identity(mount, token, address_type, deadline)

    async def _irsa(self, mount: Mount, token: Token, region: str, deadline: Deadline) -> Identity:
        ns, sa = mount.pod.namespace, mount.pod.service_account
        role_arn = await self._role_arn(ns, sa, deadline)
        if role_arn is None:
            if self.settings.allow_node_identity:
                return self.pool.node()
            raise FailedPrecondition(
                f"IRSA: service account {ns}/{sa} has no '{ROLE_ANNOTATION}' annotation; "
                f"annotate it with the IAM role to assume: kubectl annotate serviceaccount "
                f"-n {ns} {sa} {ROLE_ANNOTATION}=arn:aws:iam::<account>:role/<role> "
                '(or set usePodIdentity: "true" for EKS Pod Identity)'
            )
        principal = Principal("irsa", ns, sa, role_arn)
        identity = self.pool.irsa(principal, self.settings.sts_region or region)
        identity.update(token.token, role_session_name(mount))
        assert identity.credentials is not None
        if not identity.credentials.refresh_needed():
            # What get_frozen_credentials would hand back without calling STS: no thread.
            return identity
        what = f"IRSA: AssumeRoleWithWebIdentity for {principal.describe()}"
        hint = (
            "the role's trust policy must allow sts:AssumeRoleWithWebIdentity for "
            f"system:serviceaccount:{ns}:{sa} from the cluster's OIDC provider"
        )
        token_hint = (
            f"the pod's service-account token for audience '{IRSA_AUDIENCE}' has expired; "
            "kubelet requests it per mount as spec.tokenRequests of the CSIDriver "
            "secrets-store.csi.k8s.io says (expirationSeconds): check those and the node's "
            "clock"
        )
        if sync_controller.from_sync_controller(mount):
            token_hint = (
                f"the service-account token for audience '{IRSA_AUDIENCE}' has expired; the "
                f"{sync_controller.NAME} requests 10-minute tokens and renews them before they "
                "expire: check the clocks of its node and of the API server"
            )
        oidc_hint = (
            "STS cannot verify the pod's token: the AWS account needs an IAM OIDC provider "
            f"for the cluster's issuer URL with audience (client ID) '{IRSA_AUDIENCE}', and "
            f"the token must be the one the CSIDriver requests for '{IRSA_AUDIENCE}'"
        )
        await self.api.call(
            "sts",
            "AssumeRoleWithWebIdentity",
            identity.credentials.get_frozen_credentials,
            deadline,
            what=what,
            hint=hint,
            hints={
                "ExpiredTokenException": token_hint,
                "ExpiredToken": token_hint,
                "InvalidIdentityToken": oidc_hint,
                "IDPRejectedClaim": oidc_hint,
            },
        )
        return identity

    async def _pod_identity(
        self, mount: Mount, token: Token, address_type: AddressType, deadline: Deadline
    ) -> Identity:
        ns, sa = mount.pod.namespace, mount.pod.service_account
        principal = Principal("pod-identity", ns, sa)
        key, identity = self.pool.pod_identity(principal, address_type)
        identity.update(token.token, role_session_name(mount))
        what = f"EKS Pod Identity: credentials for service account {ns}/{sa}"
        try:
            if identity.credentials is None:
                identity = await self.api.call(
                    "pod-identity",
                    "GetCredentials",
                    self.pool.load_pod_identity,
                    deadline,
                    key,
                    identity,
                    what=what,
                )
            else:
                await self.api.call(
                    "pod-identity",
                    "GetCredentials",
                    identity.credentials.get_frozen_credentials,
                    deadline,
                    what=what,
                )
        except KeyferryError as exc:
            raise self._agent_error(identity, exc, ns, sa) from None
        return identity

    def _agent_error(
        self, identity: Identity, exc: KeyferryError, ns: str, sa: str
    ) -> KeyferryError:
        fetcher = identity.fetcher
        status = getattr(fetcher, "last_status", 0)
        tried = ", ".join(dict.fromkeys(getattr(fetcher, "tried", []) or []))
        if status in (400, 401, 403):
            return PermissionDenied(
                f"EKS Pod Identity: the agent refused the pod's token for {ns}/{sa} "
                f"(HTTP {status}); "
                "check that a Pod Identity association exists for this service account and "
                "that the CSIDriver tokenRequests include audience 'pods.eks.amazonaws.com'"
            )
        if status == 404:
            return NotFound(
                f"EKS Pod Identity: no Pod Identity association for service account {ns}/{sa} "
                "(agent answered 404); create one with aws eks create-pod-identity-association"
            )
        if exc.code not in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
            return exc
        call = budget.attached(exc)
        why = f"; {call.why()}" if call is not None else ""
        if status:
            problem = f"the agent answered HTTP {status} for {ns}/{sa} ({why[2:] or '1 attempt'})"
            fix = "kubelet will retry the mount"
        elif call is None or call.last == "timeout":
            problem = (
                f"no credentials from the Pod Identity agent for {ns}/{sa} within the mount's "
                f"budget (tried {tried or 'nothing'}{why})"
            )
            fix = "the agent is slow or overloaded; kubelet will retry the mount"
        else:
            problem = (
                f"cannot reach the Pod Identity agent for {ns}/{sa} (tried {tried or 'nothing'}"
                f"{why})"
            )
            fix = "is the eks-pod-identity-agent add-on running on this node?"
        return type(exc)(f"EKS Pod Identity: {problem}; {fix}", code=exc.code)

    async def _role_arn(self, ns: str, sa: str, deadline: Deadline) -> str | None:
        """The role in the ServiceAccount's IRSA annotation; ``None`` without one."""
        try:
            account = await asyncio.wait_for(
                self.services.kube.service_account(ns, sa), timeout=max(0.05, deadline.remaining())
            )
        except TimeoutError:
            raise DeadlineExceeded(
                f"IRSA: reading service account {ns}/{sa} from the Kubernetes API timed out"
            ) from None
        except KeyferryError as exc:
            raise type(exc)(
                f"IRSA: cannot read the role annotation of service account {ns}/{sa}: "
                + exc.message,
                code=exc.code,
            ) from None
        role = str(account.get("annotations", {}).get(ROLE_ANNOTATION, "")).strip()
        if not role:
            return None
        arn = parse_arn(role)
        if arn is None or arn.service != "iam" or not arn.resource.startswith("role/"):
            raise FailedPrecondition(
                f"IRSA: the '{ROLE_ANNOTATION}' annotation of service account {ns}/{sa} is not "
                "an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
            )
        return role
