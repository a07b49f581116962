"""The reads doctor makes through the Kubernetes API: the :class:`Kube` protocol, and
:class:`LightkubeReader`, which serves it with lightkube's sync client and the user's
kubeconfig."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


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
