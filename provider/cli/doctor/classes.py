"""Each class to check: its ``spec.provider`` is a socket keyferry serves, it validates
as a Mount would parse it, its objects' identities are set up, and the CSIDriver
requests the token audiences they need."""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import KeyferryError
from ...model import Pod
from .. import manifest
from . import identities
from .cluster import DRIVER, Cluster, Server, Target
from .report import Report

HELM_FIX = (
    "helm upgrade csi-secrets-store secrets-store-csi-driver/secrets-store-csi-driver "
    "-n kube-system --reuse-values {sets} (or kubectl patch csidriver {driver} --type merge "
    "--patch-file deploy/csidriver/token-requests.yaml; docs/install.md)"
)


class Doctor:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.report: Report = cluster.report

    def run(self, targets: list[Target], *, pod: tuple[str, str] | None) -> Report:
        server = self.cluster.server()
        audiences, have_driver = self.cluster.csidriver()
        if pod is not None:
            targets = self.cluster.pod_targets(*pod)
        for target in targets:
            self.check(target, server, audiences, have_driver)
        return self.report

    def check(self, target: Target, server: Server, audiences: set[str], have_driver: bool) -> None:
        spc = target.spc
        section = f"SecretProviderClass {target.namespace}/{spc.name}" + (
            f" (volume {target.volume}, service account {target.service_account})"
            if target.volume
            else f" (service account {target.service_account})"
        )
        add = self.report.add
        dialect = server.providers.get(spc.provider)
        served = ", ".join(sorted(server.providers))
        if dialect is None:
            fix = f"set spec.provider to one of {served}"
            if spc.provider in manifest.PROVIDER_DIALECTS:
                fix += (
                    f", or add {spc.provider} to providers in keyferry's ConfigMap "
                    "(the drop-in overlay serves aws, gcp and azure)"
                )
            add(
                section,
                "FAIL",
                f"spec.provider {spc.provider!r} is not a socket keyferry serves",
                fix,
            )
            return
        add(section, "PASS", f"spec.provider {spc.provider!r} is served (dialect {dialect})")
        pod = Pod(
            namespace=target.namespace,
            name="doctor",
            uid="",
            service_account=target.service_account,
        )
        try:
            plan = manifest.static_plan(spc, pod, dialect=dialect)
        except KeyferryError as exc:
            add(
                section,
                "FAIL",
                f"the class does not validate: {exc.message}",
                "fix the field it names",
            )
            return
        add(section, "PASS", f"the class validates ({len(plan.objects)} objects)")

        sa = self.cluster.service_account(section, target)
        annotations: Mapping[str, str] = (sa or {}).get("metadata", {}).get("annotations") or {}
        identity = identities.Identity(
            self.report, section, target, server.config, annotations, sa_known=sa is not None
        )
        needed = identities.check(identity, plan)
        if not have_driver:
            return
        # Helm replaces lists: the fix sets the whole list, present audiences first.
        wanted = sorted(audiences) + sorted(set(needed) - audiences)
        sets = " ".join(
            f"--set 'tokenRequests[{i}].audience={audience}'" for i, audience in enumerate(wanted)
        )
        for audience, why in sorted(needed.items()):
            if audience in audiences:
                add(section, "PASS", f"the CSIDriver requests token audience {audience} ({why})")
            else:
                add(
                    section,
                    "FAIL",
                    f"the CSIDriver requests no token for audience {audience} ({why})",
                    HELM_FIX.format(sets=sets, driver=DRIVER),
                )
