"""The identity each cloud's objects use, checked against the ServiceAccount's
annotations and keyferry's server settings; each check also says which token
audiences the CSIDriver must request for it.

One function per cloud, chosen by the plan's ``spec.backend``: the cloud's dialect
built those refs, so each function takes its own cloud's locators as they are.
The annotation names are the ones the backends read (``provider/clouds/<cloud>/``);
they are repeated here so that doctor loads no cloud SDK.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ... import config as kconfig
from ...clouds.aws.ref import IRSA_AUDIENCE, POD_IDENTITY_AUDIENCE, AwsRef
from ...clouds.aws.ref import ROLE_ANNOTATION as IRSA_ANNOTATION
from ...clouds.azure.ref import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_TENANT_ID,
    WORKLOAD_AUDIENCE,
    AzureRef,
)
from ...clouds.gcp.ref import GSA_ANNOTATION as GKE_ANNOTATION
from ...clouds.gcp.ref import GcpRef
from ...clouds.local.ref import LocalRef
from ...model import Plan
from .cluster import Target
from .report import Report, Status

ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
GSA_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.:-]+\.gserviceaccount\.com$")


@dataclass
class Identity:
    """What the identity checks of one class see, and what they find it needs."""

    report: Report
    section: str
    target: Target
    config: kconfig.Config | None
    """``None``: keyferry's ConfigMap could not be read; settings are not checked."""
    annotations: Mapping[str, str]
    sa_known: bool
    """The ServiceAccount was read (it exists and may be read)."""
    needed: dict[str, str] = field(default_factory=dict)
    """Token audience -> why a Mount needs it."""

    @property
    def ns(self) -> str:
        return self.target.namespace

    @property
    def sa(self) -> str:
        return self.target.service_account

    @property
    def annotate(self) -> str:
        return f"kubectl -n {self.ns} annotate serviceaccount {self.sa}"

    def add(self, status: Status, text: str, fix: str = "") -> None:
        self.report.add(self.section, status, text, fix)

    def settings(self, cloud: str) -> Mapping[str, Any]:
        """The server's ``backends.<cloud>`` section as written (empty when unknown)."""
        return (self.config.backends.get(cloud) or {}) if self.config else {}


def aws(ctx: Identity, refs: Sequence[AwsRef]) -> None:
    ns, sa, annotate = ctx.ns, ctx.sa, ctx.annotate
    if any(r.auth == "irsa" for r in refs):
        ctx.needed[IRSA_AUDIENCE] = "AWS IRSA"
        role = ctx.annotations.get(IRSA_ANNOTATION, "")
        if ctx.sa_known and not role:
            ctx.add(
                "FAIL",
                f"ServiceAccount {ns}/{sa} has no {IRSA_ANNOTATION} annotation (IRSA)",
                f"{annotate} {IRSA_ANNOTATION}=arn:aws:iam::<account>:role/<role> (its trust "
                "policy: examples/aws/irsa-trust-policy.json)",
            )
        elif ctx.sa_known and not ROLE_ARN_RE.match(role):
            ctx.add(
                "FAIL",
                f"{IRSA_ANNOTATION} {role!r} is not an IAM role ARN",
                f"{annotate} --overwrite {IRSA_ANNOTATION}=arn:aws:iam::<account>:role/<role>",
            )
        elif ctx.sa_known:
            ctx.add("PASS", f"IRSA role {role} (ServiceAccount annotation)")
    if any(r.auth == "pod-identity" for r in refs):
        ctx.needed[POD_IDENTITY_AUDIENCE] = "EKS Pod Identity"
        ctx.add(
            "NOTE",
            "EKS Pod Identity: the association lives on the AWS side; check it with "
            f"aws eks list-pod-identity-associations --cluster-name <cluster> "
            f"--namespace {ns} --service-account {sa}",
        )
    region = str(ctx.settings("aws").get("region", ""))
    if any(not r.region for r in refs) and not region:
        ctx.add(
            "NOTE",
            "an AWS object names no region and backends.aws.region is unset: the region "
            "comes from AWS_REGION or the node label (RBAC: components/aws-node-region)",
        )


def gcp(ctx: Identity, refs: Sequence[GcpRef]) -> None:
    ns, sa, annotate = ctx.ns, ctx.sa, ctx.annotate
    settings = ctx.settings("gcp")
    if any(r.auth == "pod-adc" and not r.key_json for r in refs):
        audience = str(settings.get("token_audience", "")) or str(
            settings.get("workload_identity_pool", "")
        )
        if not audience and settings.get("project"):
            audience = f"{settings['project']}.svc.id.goog"
        if audience:
            ctx.needed[audience] = "GKE workload identity"
        else:
            ctx.add(
                "NOTE",
                "GKE workload identity: the token audience is <cluster project>.svc.id.goog "
                "(backends.gcp.project is unset, so keyferry asks the metadata server); "
                "the CSIDriver must request it",
            )
        gsa = ctx.annotations.get(GKE_ANNOTATION, "")
        if gsa and not GSA_RE.match(gsa):
            ctx.add(
                "FAIL",
                f"{GKE_ANNOTATION} {gsa!r} is not a Google service account email",
                f"{annotate} --overwrite {GKE_ANNOTATION}=<name>@<project>.iam.gserviceaccount.com",
            )
        elif gsa:
            ctx.add(
                "PASS",
                f"impersonates {gsa} (it must grant roles/iam.workloadIdentityUser to "
                f"serviceAccount:<project>.svc.id.goog[{ns}/{sa}])",
            )
        elif ctx.sa_known:
            ctx.add(
                "NOTE",
                f"no {GKE_ANNOTATION} annotation: the federated principal "
                f".../subject/ns/{ns}/sa/{sa} itself needs access to the secrets",
            )
    provider_adc = any(r.auth == "provider-adc" for r in refs)
    if provider_adc and ctx.config and not settings.get("allow_provider_adc"):
        ctx.add(
            "FAIL",
            "auth: provider-adc is refused: backends.gcp.allow_provider_adc is not true",
            "set backends.gcp.allow_provider_adc: true in keyferry's ConfigMap, or use pod-adc",
        )
    key_json = any(r.auth == "node-publish-secret" or r.key_json for r in refs)
    if key_json and ctx.target.volume and not ctx.target.node_publish_secret:
        ctx.add(
            "FAIL",
            "the class uses a nodePublishSecretRef key.json, the volume names none",
            "set csi.nodePublishSecretRef.name on the volume",
        )


def azure(ctx: Identity, refs: Sequence[AzureRef]) -> None:
    ns, sa, annotate = ctx.ns, ctx.sa, ctx.annotate
    settings = ctx.settings("azure")
    for ref in refs:
        mode = ref.auth.mode
        if mode == "vm_managed_identity":
            if ctx.config and not settings.get("allow_vm_managed_identity"):
                ctx.add(
                    "FAIL",
                    "useVMManagedIdentity is refused: backends.azure.allow_vm_managed_identity "
                    "is not true",
                    "use workload identity (clientID / the client-id annotation)",
                )
            continue
        if mode == "auto" and ctx.target.node_publish_secret:
            ctx.add(
                "NOTE",
                "Azure service principal from nodePublishSecretRef "
                f"{ctx.target.node_publish_secret}",
            )
            continue
        ctx.needed[WORKLOAD_AUDIENCE] = "Azure workload identity"
        if not ref.auth.client_id and ctx.sa_known:
            client = ctx.annotations.get(ANNOTATION_CLIENT_ID, "")
            if not client:
                ctx.add(
                    "FAIL",
                    f"no clientID in the class and ServiceAccount {ns}/{sa} has no "
                    f"{ANNOTATION_CLIENT_ID} annotation",
                    f"{annotate} {ANNOTATION_CLIENT_ID}=<managed identity client id> "
                    "(federated credential: examples/azure/bind-identity.sh)",
                )
            else:
                ctx.add("PASS", f"Azure client id {client} (ServiceAccount annotation)")
        tenant = ctx.annotations.get(ANNOTATION_TENANT_ID)
        if not ref.auth.tenant_id and ctx.sa_known and not tenant:
            ctx.add(
                "FAIL",
                f"no tenantID in the class and ServiceAccount {ns}/{sa} has no "
                f"{ANNOTATION_TENANT_ID} annotation",
                f"{annotate} {ANNOTATION_TENANT_ID}=<tenant id>, or set tenantID in the class",
            )
        break  # one identity per class is checked once


def local(ctx: Identity, refs: Sequence[LocalRef]) -> None:
    """Any local object needs ``local_root``; the refs themselves need no identity."""
    if ctx.config and ctx.config.local_root is None:
        ctx.add(
            "FAIL",
            "the class reads the local backend, which local_root does not enable",
            "set local_root in keyferry's ConfigMap",
        )


CHECKS: dict[str, Callable[[Identity, Sequence[Any]], None]] = {
    "aws": aws,
    "gcp": gcp,
    "azure": azure,
    "local": local,
}
"""Cloud name (an object's ``spec.backend``) -> its identity check, in report order."""


def check(ctx: Identity, plan: Plan) -> dict[str, str]:
    """Check the identities of the plan's objects; return the token audiences needed
    (and why)."""
    by_cloud: dict[str, list[Any]] = {}
    for spec in plan.objects:
        by_cloud.setdefault(spec.backend, []).append(spec.ref)
    for cloud, check_cloud in CHECKS.items():
        if cloud in by_cloud:
            check_cloud(ctx, by_cloud[cloud])
    return ctx.needed
