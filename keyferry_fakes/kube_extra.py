"""The strict fake Kubernetes API (keyferry_fakes/kube.py) with what ``keyferry doctor``
reads besides core/v1: CSIDrivers (storage.k8s.io/v1), SecretProviderClasses
(secrets-store.csi.x-k8s.io/v1), DaemonSets (apps/v1) and ConfigMaps, plus a user for a
workstation's kubeconfig and that kubeconfig file.

RBAC works as in the base fake for every path, /apis/<group>/<version>/... included:
a user gets 403 on a resource it has no ``get`` for, and 401 without a valid token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from keyferry_fakes.kube import FakeKube

OPERATOR = "jane@example.com"
OPERATOR_GRANTS = frozenset(
    {
        "pods",
        "serviceaccounts",
        "configmaps",
        "daemonsets",
        "csidrivers",
        "secretproviderclasses",
    }
)


class FakeKubeExtra(FakeKube):
    def reset(self) -> None:
        super().reset()
        self.operator_token = self.issue_token(OPERATOR)
        self.granted[OPERATOR] = set(OPERATOR_GRANTS)

    def kubeconfig(self, directory: Path, token: str | None = None) -> Path:
        """A kubeconfig for this fake, as a workstation would have one."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "jane", "user": {"token": token or self.operator_token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "jane"}}],
            "current-context": "fake",
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    # -- objects ----------------------------------------------------------------------

    def add_object(self, doc: dict[str, Any]) -> None:
        """Any object as ``kubectl apply`` would store it (the path from its kind)."""
        kind, meta = doc["kind"], doc["metadata"]
        name, namespace = meta["name"], meta.get("namespace")
        group_version = doc["apiVersion"]
        plural = {
            "Pod": "pods",
            "ServiceAccount": "serviceaccounts",
            "ConfigMap": "configmaps",
            "DaemonSet": "daemonsets",
            "CSIDriver": "csidrivers",
            "SecretProviderClass": "secretproviderclasses",
        }[kind]
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        self.objects[f"{root}{scope}/{plural}/{name}"] = doc

    def add_csidriver(self, audiences: list[str], *, pod_info: bool = True) -> None:
        self.add_object(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSIDriver",
                "metadata": {"name": "secrets-store.csi.k8s.io"},
                "spec": {
                    "attachRequired": False,
                    "podInfoOnMount": pod_info,
                    "volumeLifecycleModes": ["Ephemeral"],
                    "tokenRequests": [{"audience": a} for a in audiences],
                },
            }
        )

    def add_workload_pod(
        self,
        namespace: str,
        name: str,
        service_account: str,
        volumes: list[dict[str, Any]],
    ) -> None:
        self.add_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "nodeName": "node-1",
                    "serviceAccountName": service_account,
                    "containers": [{"name": "app", "image": "app"}],
                    "volumes": volumes,
                },
            }
        )
