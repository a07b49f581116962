"""What doctor reads from the cluster: keyferry's DaemonSet and ConfigMap (the sockets
it serves, the server settings), the CSIDriver (podInfoOnMount, token audiences), and
the classes to check — from a pod's volumes or by name — with their ServiceAccount.

Every read reports what it found; a read the kubeconfig's user may not make is a NOTE
and doctor goes on with keyferry's defaults."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ... import config as kconfig
from ...errors import ConfigError, KeyferryError
from .. import manifest
from .api import Forbidden, Kube
from .report import Report

DRIVER = "secrets-store.csi.k8s.io"


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


class Cluster:
    """The cluster's side of a Mount, read through :class:`Kube` into a :class:`Report`."""

    def __init__(
        self, kube: Kube, report: Report, *, provider_namespace: str, daemonset: str
    ) -> None:
        self.kube = kube
        self.report = report
        self.provider_namespace = provider_namespace
        self.daemonset = daemonset

    # -- the installation, once -------------------------------------------------------------

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
        """The token audiences the CSIDriver requests, and whether it could be read."""
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

    # -- the classes to check ----------------------------------------------------------------

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

    def service_account(self, section: str, target: Target) -> Mapping[str, Any] | None:
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
