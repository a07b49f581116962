"""``keyferry doctor``: from a workstation, check what a Mount would need — without
fetching any secret.

Given a pod (``--pod ns/name``), a SecretProviderClass in the cluster (``--class
ns/name``) or in a file (``-f``), it reads through the Kubernetes API (kubeconfig):

- the keyferry DaemonSet and its ConfigMap: which socket names keyferry serves, and the
  server settings that decide identities (regions, the GKE pool, ``allow_*``);
- the CSIDriver ``secrets-store.csi.k8s.io``: the token audiences kubelet hands over;
- each class: that ``spec.provider`` is a socket keyferry serves, that it validates
  (the same checks ``keyferry validate`` and a Mount run), and which identities and token
  audiences its objects need;
- the pod's ServiceAccount: the annotations those identities read.

Every check prints PASS or FAIL (with the fix) or NOTE; the exit code is 1 when any
check fails. Secrets are never read: not the backends' values, not Kubernetes Secrets
(a nodePublishSecretRef is reported by name only).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from .. import config as kconfig
from ..clouds.aws.ref import AwsRef
from ..clouds.azure.ref import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_TENANT_ID,
    WORKLOAD_AUDIENCE,
    AzureRef,
)
from ..clouds.gcp.ref import ParameterVersionRef, SecretVersionRef
from ..clouds.local.ref import LocalRef
from ..errors import ConfigError, KeyferryError
from ..model import Plan, Pod
from . import manifest

DRIVER = "secrets-store.csi.k8s.io"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
GKE_ANNOTATION = "iam.gke.io/gcp-service-account"
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
GSA_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.:-]+\.gserviceaccount\.com$")
HELM_FIX = (
    "helm upgrade csi-secrets-store secrets-store-csi-driver/secrets-store-csi-driver "
    "-n kube-system --reuse-values {sets} (or kubectl patch csidriver {driver} --type merge "
    "--patch-file deploy/csidriver/token-requests.yaml; docs/install.md)"
)

Status = Literal["PASS", "FAIL", "NOTE"]


class Forbidden(Exception):
    """The kubeconfig's user may not read an object (HTTP 401/403)."""


class Unreachable(Exception):
    """The API server could not be reached or answered with an error."""


class Kube(Protocol):
    """The reads doctor makes; every object comes back as its JSON dict, or ``None``
    when it does not exist."""

    def get(
        self, kind: str, name: str, namespace: str | None = None
    ) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Check:
    status: Status
    text: str
    fix: str = ""


@dataclass
class Target:
    """One class to check, with the pod context a Mount of it would have."""

    spc: manifest.SecretProviderClass
    namespace: str
    service_account: str
    volume: str = ""
    node_publish_secret: str = ""
    """The pod volume's nodePublishSecretRef name, if any (never its content)."""


@dataclass
class Server:
    """What doctor learnt about the keyferry installation."""

    providers: Mapping[str, str] = field(default_factory=lambda: dict(manifest.PROVIDER_DIALECTS))
    config: kconfig.Config | None = None
    """``None``: the ConfigMap could not be read; defaults are assumed."""


@dataclass
class Report:
    checks: list[tuple[str, Check]] = field(default_factory=list)

    def add(self, section: str, status: Status, text: str, fix: str = "") -> None:
        self.checks.append((section, Check(status, text, fix)))

    @property
    def failed(self) -> int:
        return sum(1 for _, c in self.checks if c.status == "FAIL")

    def lines(self) -> Iterator[str]:
        section = None
        for name, check in self.checks:
            if name != section:
                section = name
                yield ""
                yield name
            yield f"  {check.status:<4}  {check.text}"
            if check.fix:
                yield f"        fix: {check.fix}"
        yield ""
        yield (
            f"{self.failed} check(s) failed"
            if self.failed
            else "all checks passed: a Mount has what it needs on the Kubernetes side"
        )


def split_ref(value: str, flag: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"{flag} expects NAMESPACE/NAME, got {value!r}")
    return namespace, name


class Doctor:
    def __init__(self, kube: Kube, *, provider_namespace: str, daemonset: str) -> None:
        self.kube = kube
        self.provider_namespace = provider_namespace
        self.daemonset = daemonset
        self.report = Report()

    # -- the cluster side, once -------------------------------------------------------------

    def server(self) -> Server:
        section = f"keyferry DaemonSet {self.provider_namespace}/{self.daemonset}"
        where = f"-n {self.provider_namespace}"
        try:
            ds = self.kube.get("DaemonSet", self.daemonset, self.provider_namespace)
        except Forbidden:
            self.report.add(
                section,
                "NOTE",
                "may not read the DaemonSet; socket names checked against keyferry's defaults "
                f"({', '.join(manifest.PROVIDER_DIALECTS)})",
            )
            return Server()
        if ds is None:
            self.report.add(
                section,
                "FAIL",
                "not found: nothing serves keyferry's sockets on the nodes",
                "kubectl apply -k deploy/overlays/native (or drop-in); docs/install.md. "
                "Installed elsewhere? pass --provider-namespace and --daemonset",
            )
            return Server()
        status = ds.get("status") or {}
        desired, ready = status.get("desiredNumberScheduled"), status.get("numberReady")
        if desired is not None and ready is not None:
            if ready < desired:
                self.report.add(
                    section,
                    "FAIL",
                    f"{ready} of {desired} provider pods ready: mounts on the other nodes fail",
                    f"kubectl {where} describe daemonset {self.daemonset}; kubectl {where} logs "
                    f"daemonset/{self.daemonset}",
                )
            else:
                self.report.add(section, "PASS", f"{ready} of {desired} provider pods ready")
        cfg = self._server_config(ds, section)
        if cfg is None:
            return Server()
        return Server(providers=dict(cfg.providers), config=cfg)

    def _server_config(self, ds: Mapping[str, Any], section: str) -> kconfig.Config | None:
        pod = (ds.get("spec") or {}).get("template", {}).get("spec", {})
        (container, *_) = pod.get("containers") or [{}]
        args = list(container.get("args") or [])
        path = args[args.index("--config") + 1] if "--config" in args[:-1] else ""
        mounts = {m.get("mountPath"): m.get("name") for m in container.get("volumeMounts") or []}
        volume_name = mounts.get(str(Path(path).parent)) if path else None
        volume: Mapping[str, Any] = next(
            (v for v in pod.get("volumes") or [] if v.get("name") == volume_name), {}
        )
        cm_name = (volume.get("configMap") or {}).get("name")
        if not cm_name:
            self.report.add(
                section,
                "NOTE",
                "no --config from a ConfigMap; assuming keyferry's default configuration",
            )
            return kconfig.Config()
        try:
            cm = self.kube.get("ConfigMap", cm_name, self.provider_namespace)
        except Forbidden:
            self.report.add(
                section,
                "NOTE",
                f"may not read ConfigMap {cm_name}; socket names checked against keyferry's "
                "defaults",
            )
            return None
        data = (cm or {}).get("data") or {}
        text = data.get(Path(path).name)
        if text is None:
            self.report.add(
                section,
                "FAIL",
                f"ConfigMap {cm_name} has no {Path(path).name}: the provider cannot start",
                "kubectl apply -k the overlay again",
            )
            return None
        with tempfile.TemporaryDirectory(prefix="keyferry-doctor-") as tmp:
            file = Path(tmp) / "config.yaml"
            file.write_text(text, encoding="utf-8")
            try:
                cfg = kconfig.load(file, env={})
            except ConfigError as exc:
                self.report.add(
                    section,
                    "FAIL",
                    f"ConfigMap {cm_name}: {exc}".replace(str(file), "config.yaml"),
                    "fix config.yaml in the overlay (docs/configuration-reference.md)",
                )
                return None
        self.report.add(
            section,
            "PASS",
            f"serves sockets {', '.join(sorted(cfg.providers))} (ConfigMap {cm_name})",
        )
        return cfg

    def csidriver(self) -> tuple[set[str], bool]:
        section = f"CSIDriver {DRIVER}"
        try:
            obj = self.kube.get("CSIDriver", DRIVER)
        except Forbidden:
            self.report.add(
                section, "NOTE", "may not read the CSIDriver; token audiences unchecked"
            )
            return set(), False
        if obj is None:
            self.report.add(
                section,
                "FAIL",
                "not found: the Secrets Store CSI Driver is not installed",
                "install it with Helm (docs/install.md, step 1)",
            )
            return set(), False
        spec = obj.get("spec") or {}
        audiences = {str(t.get("audience", "")) for t in spec.get("tokenRequests") or []}
        if spec.get("podInfoOnMount"):
            self.report.add(section, "PASS", "podInfoOnMount: true (the pod's identity is passed)")
        else:
            self.report.add(
                section,
                "FAIL",
                "podInfoOnMount is not true: kubelet sends no pod namespace, name or service "
                "account, so no identity can be used",
                "the driver's chart sets it; kubectl patch csidriver "
                f'{DRIVER} --type merge -p \'{{"spec":{{"podInfoOnMount":true}}}}\'',
            )
        shown = ", ".join(sorted(audiences)) or "none"
        self.report.add(section, "PASS", f"token audiences requested: {shown}")
        return audiences, True

    # -- targets ---------------------------------------------------------------------------

    def pod_targets(self, namespace: str, name: str) -> list[Target]:
        section = f"pod {namespace}/{name}"
        pod = self.kube.get("Pod", name, namespace)
        if pod is None:
            self.report.add(section, "FAIL", "not found", "check the name: kubectl get pods -A")
            return []
        spec = pod.get("spec") or {}
        sa = spec.get("serviceAccountName") or "default"
        targets = []
        volumes = [v for v in spec.get("volumes") or [] if (v.get("csi") or {}).get("driver")]
        ours = [v for v in volumes if v["csi"]["driver"] == DRIVER]
        if not ours:
            self.report.add(
                section,
                "FAIL",
                f"has no CSI volume of driver {DRIVER}",
                "add a volume: csi: {driver: secrets-store.csi.k8s.io, readOnly: true, "
                "volumeAttributes: {secretProviderClass: <name>}}",
            )
        for volume in ours:
            csi = volume["csi"]
            attrs = dict(csi.get("volumeAttributes") or {})
            class_name = attrs.pop("secretProviderClass", "")
            where = f"volume {volume.get('name')}"
            if not class_name:
                self.report.add(
                    section,
                    "FAIL",
                    f"{where} names no secretProviderClass",
                    "set volumeAttributes.secretProviderClass",
                )
                continue
            if not csi.get("readOnly"):
                self.report.add(
                    section,
                    "FAIL",
                    f"{where} is not readOnly: the driver refuses read-write mounts",
                    "set csi.readOnly: true",
                )
            spc = self.cluster_class(section, namespace, class_name)
            if spc is None:
                continue
            if attrs:
                # The driver lays volumeAttributes over the class's parameters.
                spc = replace(spc, parameters={**spc.parameters, **attrs})
            secret_ref = (csi.get("nodePublishSecretRef") or {}).get("name", "")
            targets.append(Target(spc, namespace, sa, str(volume.get("name")), secret_ref))
        return targets

    def cluster_class(
        self, section: str, namespace: str, name: str
    ) -> manifest.SecretProviderClass | None:
        obj = self.kube.get("SecretProviderClass", name, namespace)
        if obj is None:
            self.report.add(
                section,
                "FAIL",
                f"SecretProviderClass {namespace}/{name} not found (classes are namespaced: "
                "the pod's namespace)",
                f"kubectl apply -n {namespace} -f <the class>",
            )
            return None
        parsed = manifest.from_object(obj, f"SecretProviderClass {namespace}/{name}")
        if isinstance(parsed, KeyferryError):
            self.report.add(section, "FAIL", parsed.message, "fix the class")
            return None
        return parsed

    # -- per class -------------------------------------------------------------------------

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

        sa = self._service_account(section, target)
        annotations: Mapping[str, str] = (sa or {}).get("metadata", {}).get("annotations") or {}
        needed = self._identities(section, target, plan, server, annotations, sa is not None)
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

    def _service_account(self, section: str, target: Target) -> Mapping[str, Any] | None:
        name, ns = target.service_account, target.namespace
        try:
            sa = self.kube.get("ServiceAccount", name, ns)
        except Forbidden:
            self.report.add(section, "NOTE", f"may not read ServiceAccount {ns}/{name}")
            return None
        if sa is None:
            self.report.add(
                section,
                "FAIL",
                f"ServiceAccount {ns}/{name} not found",
                f"kubectl -n {ns} create serviceaccount {name}",
            )
        return sa

    def _identities(
        self,
        section: str,
        target: Target,
        plan: Plan,
        server: Server,
        annotations: Mapping[str, str],
        sa_known: bool,
    ) -> dict[str, str]:
        """Check each object's identity; return the token audiences needed (and why)."""
        add = self.report.add
        ns, sa = target.namespace, target.service_account
        annotate = f"kubectl -n {ns} annotate serviceaccount {sa}"
        cfg = server.config
        backends: Mapping[str, Mapping[str, Any]] = cfg.backends if cfg else {}
        needed: dict[str, str] = {}
        refs = [o.ref for o in plan.objects]

        aws = [r for r in refs if isinstance(r, AwsRef)]
        if any(r.auth == "irsa" for r in aws):
            needed["sts.amazonaws.com"] = "AWS IRSA"
            role = annotations.get(IRSA_ANNOTATION, "")
            if sa_known and not role:
                add(
                    section,
                    "FAIL",
                    f"ServiceAccount {ns}/{sa} has no {IRSA_ANNOTATION} annotation (IRSA)",
                    f"{annotate} {IRSA_ANNOTATION}=arn:aws:iam::<account>:role/<role> (its trust "
                    "policy: examples/aws/irsa-trust-policy.json)",
                )
            elif sa_known and not ROLE_ARN_RE.match(role):
                add(
                    section,
                    "FAIL",
                    f"{IRSA_ANNOTATION} {role!r} is not an IAM role ARN",
                    f"{annotate} --overwrite {IRSA_ANNOTATION}=arn:aws:iam::<account>:role/<role>",
                )
            elif sa_known:
                add(section, "PASS", f"IRSA role {role} (ServiceAccount annotation)")
        if any(r.auth == "pod-identity" for r in aws):
            needed["pods.eks.amazonaws.com"] = "EKS Pod Identity"
            add(
                section,
                "NOTE",
                "EKS Pod Identity: the association lives on the AWS side; check it with "
                f"aws eks list-pod-identity-associations --cluster-name <cluster> "
                f"--namespace {ns} --service-account {sa}",
            )
        region = str((backends.get("aws") or {}).get("region", ""))
        if any(not r.region for r in aws) and not region:
            add(
                section,
                "NOTE",
                "an AWS object names no region and backends.aws.region is unset: the region "
                "comes from AWS_REGION or the node label (RBAC: components/aws-node-region)",
            )

        gcp = [r for r in refs if isinstance(r, SecretVersionRef | ParameterVersionRef)]
        gcp_settings = backends.get("gcp") or {}
        if any(r.auth == "pod-adc" and not r.key_json for r in gcp):
            audience = str(gcp_settings.get("token_audience", "")) or str(
                gcp_settings.get("workload_identity_pool", "")
            )
            if not audience and gcp_settings.get("project"):
                audience = f"{gcp_settings['project']}.svc.id.goog"
            if audience:
                needed[audience] = "GKE workload identity"
            else:
                add(
                    section,
                    "NOTE",
                    "GKE workload identity: the token audience is <cluster project>.svc.id.goog "
                    "(backends.gcp.project is unset, so keyferry asks the metadata server); "
                    "the CSIDriver must request it",
                )
            gsa = annotations.get(GKE_ANNOTATION, "")
            if gsa and not GSA_RE.match(gsa):
                add(
                    section,
                    "FAIL",
                    f"{GKE_ANNOTATION} {gsa!r} is not a Google service account email",
                    f"{annotate} --overwrite "
                    f"{GKE_ANNOTATION}=<name>@<project>.iam.gserviceaccount.com",
                )
            elif gsa:
                add(
                    section,
                    "PASS",
                    f"impersonates {gsa} (it must grant roles/iam.workloadIdentityUser to "
                    f"serviceAccount:<project>.svc.id.goog[{ns}/{sa}])",
                )
            elif sa_known:
                add(
                    section,
                    "NOTE",
                    f"no {GKE_ANNOTATION} annotation: the federated principal "
                    f".../subject/ns/{ns}/sa/{sa} itself needs access to the secrets",
                )
        for mode, setting in (("provider-adc", "allow_provider_adc"),):
            if any(r.auth == mode for r in gcp) and cfg and not gcp_settings.get(setting):
                add(
                    section,
                    "FAIL",
                    f"auth: {mode} is refused: backends.gcp.{setting} is not true",
                    f"set backends.gcp.{setting}: true in keyferry's ConfigMap, or use pod-adc",
                )
        key_json = any(r.auth == "node-publish-secret" or r.key_json for r in gcp)
        if key_json and target.volume and not target.node_publish_secret:
            add(
                section,
                "FAIL",
                "the class uses a nodePublishSecretRef key.json, the volume names none",
                "set csi.nodePublishSecretRef.name on the volume",
            )

        azure = [r for r in refs if isinstance(r, AzureRef)]
        azure_settings = backends.get("azure") or {}
        for ref in azure:
            mode = ref.auth.mode
            if mode == "vm_managed_identity":
                if cfg and not azure_settings.get("allow_vm_managed_identity"):
                    add(
                        section,
                        "FAIL",
                        "useVMManagedIdentity is refused: backends.azure.allow_vm_managed_identity "
                        "is not true",
                        "use workload identity (clientID / the client-id annotation)",
                    )
                continue
            if mode == "auto" and target.node_publish_secret:
                add(
                    section,
                    "NOTE",
                    "Azure service principal from nodePublishSecretRef "
                    f"{target.node_publish_secret}",
                )
                continue
            needed[WORKLOAD_AUDIENCE] = "Azure workload identity"
            if not ref.auth.client_id and sa_known:
                client = annotations.get(ANNOTATION_CLIENT_ID, "")
                if not client:
                    add(
                        section,
                        "FAIL",
                        f"no clientID in the class and ServiceAccount {ns}/{sa} has no "
                        f"{ANNOTATION_CLIENT_ID} annotation",
                        f"{annotate} {ANNOTATION_CLIENT_ID}=<managed identity client id> "
                        "(federated credential: examples/azure/bind-identity.sh)",
                    )
                else:
                    add(section, "PASS", f"Azure client id {client} (ServiceAccount annotation)")
            if not ref.auth.tenant_id and sa_known and not annotations.get(ANNOTATION_TENANT_ID):
                add(
                    section,
                    "FAIL",
                    f"no tenantID in the class and ServiceAccount {ns}/{sa} has no "
                    f"{ANNOTATION_TENANT_ID} annotation",
                    f"{annotate} {ANNOTATION_TENANT_ID}=<tenant id>, or set tenantID in the class",
                )
            break  # one identity per class is checked once

        if any(isinstance(r, LocalRef) for r in refs) and cfg and cfg.local_root is None:
            add(
                section,
                "FAIL",
                "the class reads the local backend, which local_root does not enable",
                "set local_root in keyferry's ConfigMap",
            )
        return needed

    # -- entry point -----------------------------------------------------------------------

    def run(self, targets: list[Target], *, pod: tuple[str, str] | None) -> Report:
        server = self.server()
        audiences, have_driver = self.csidriver()
        if pod is not None:
            targets = self.pod_targets(*pod)
        for target in targets:
            self.check(target, server, audiences, have_driver)
        return self.report


# -- the Kubernetes API through lightkube ------------------------------------------------------


class LightkubeReader:
    """Sync lightkube client reads as plain dicts."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from lightkube import Client, KubeConfig
        from lightkube.generic_resource import create_namespaced_resource
        from lightkube.resources.apps_v1 import DaemonSet
        from lightkube.resources.core_v1 import ConfigMap, Pod, ServiceAccount
        from lightkube.resources.storage_v1 import CSIDriver

        try:
            config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
            self.client = Client(config=config.get(context_name=context) if context else config)
        except Exception as exc:  # missing file, unknown context, no in-cluster environment
            raise Unreachable(f"kubeconfig: {type(exc).__name__}: {exc}") from None
        spc = create_namespaced_resource(
            "secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass", "secretproviderclasses"
        )
        self.kinds: dict[str, Any] = {
            "Pod": Pod,
            "ServiceAccount": ServiceAccount,
            "ConfigMap": ConfigMap,
            "DaemonSet": DaemonSet,
            "CSIDriver": CSIDriver,
            "SecretProviderClass": spc,
        }

    def get(self, kind: str, name: str, namespace: str | None = None) -> Mapping[str, Any] | None:
        from lightkube import ApiError

        try:
            obj = self.client.get(self.kinds[kind], name, namespace=namespace)
        except ApiError as exc:
            code = getattr(exc.status, "code", None)
            if code == 404:
                return None
            if code in (401, 403):
                raise Forbidden(f"{kind} {name}: HTTP {code}") from None
            raise Unreachable(f"reading {kind} {name}: {exc.status.message}") from None
        except Exception as exc:  # httpx transport errors, bad kubeconfig, TLS
            raise Unreachable(f"reading {kind} {name}: {type(exc).__name__}: {exc}") from None
        result: Mapping[str, Any] = obj.to_dict()
        return result


def command(args: Any, kube: Kube | None = None) -> int:
    """``keyferry doctor``: print the report; 1 when a check failed, 2 on bad usage."""
    try:
        pod = split_ref(args.pod, "--pod") if args.pod else None
        cls = split_ref(args.class_, "--class") if args.class_ else None
    except ValueError as exc:
        print(f"keyferry doctor: {exc}")
        return 2
    targets: list[Target] = []
    if args.file:
        try:
            items = list(manifest.load(args.file))
        except OSError as exc:
            print(f"keyferry doctor: {args.file}: cannot read: {exc.strerror}")
            return 2
        for item in items:
            if isinstance(item, KeyferryError):
                print(f"keyferry doctor: {item.message}")
                return 2
            if args.name is None or item.name == args.name:
                ns = args.namespace or item.namespace or "default"
                targets.append(Target(item, ns, args.service_account))
        if not targets:
            print(f"keyferry doctor: {args.file}: no SecretProviderClass to check")
            return 2
    what = (
        f"pod {args.pod}"
        if pod
        else f"class {args.class_}"
        if cls
        else f"{len(targets)} class(es) from {args.file}"
    )
    print(f"keyferry doctor: {what} (nothing is fetched; no secret is read)")
    try:
        reader = kube or LightkubeReader(args.kubeconfig, args.context)
        doctor = Doctor(
            reader, provider_namespace=args.provider_namespace, daemonset=args.daemonset
        )
        if cls:
            spc = doctor.cluster_class(f"class {args.class_}", *cls)
            if spc is not None:
                targets = [Target(spc, cls[0], args.service_account)]
        report = doctor.run(targets, pod=pod)
    except (Forbidden, Unreachable) as exc:
        kind = "not allowed" if isinstance(exc, Forbidden) else "failed"
        print(f"  FAIL  Kubernetes API read {kind}: {exc}")
        print("        fix: check the kubeconfig, the context and your RBAC (get on the objects)")
        return 1
    for line in report.lines():
        print(line)
    return 1 if report.failed else 0
