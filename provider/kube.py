"""Read-only Kubernetes API lookups (ServiceAccount annotations, pod and node
metadata), cached briefly, through the official ``kubernetes`` client.

Needs RBAC ``get`` on ``serviceaccounts`` (and ``pods``/``nodes`` only for
AWS region discovery). The API location comes from server configuration or
the in-cluster environment, never from a SecretProviderClass.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .cache import TTLCache
from .config import KubeConfig
from .errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable


class KubeClient:
    def __init__(self, config: KubeConfig, executor: ThreadPoolExecutor) -> None:
        self.config = config
        self._executor = executor
        self._api: Any = None
        self._cache: TTLCache[Mapping[str, Any]] = TTLCache(config.cache_seconds)
        self.requests = 0

    @property
    def enabled(self) -> bool:
        return bool(self.config.api_url or os.environ.get("KUBERNETES_SERVICE_HOST"))

    def _core(self) -> Any:
        if self._api is not None:
            return self._api
        if not self.enabled:
            raise FailedPrecondition(
                "keyferry has no Kubernetes API access (not in a cluster and "
                "kubernetes.api_url unset in the server configuration)"
            )
        try:
            from kubernetes import client
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise FailedPrecondition(
                "the kubernetes package is missing; install keyferry[kube]"
            ) from exc
        cfg = client.Configuration()
        if self.config.api_url:
            cfg.host = self.config.api_url
        else:
            host = os.environ["KUBERNETES_SERVICE_HOST"]
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            cfg.host = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        if self.config.insecure:
            cfg.verify_ssl = False
        elif os.path.exists(self.config.ca_file):
            cfg.ssl_ca_cert = self.config.ca_file
        token_file = self.config.token_file

        def refresh(conf: Any) -> None:
            # Projected tokens rotate; read the file on every request.
            try:
                with open(token_file, encoding="utf-8") as fh:
                    conf.api_key["authorization"] = "Bearer " + fh.read().strip()
            except OSError:
                conf.api_key.pop("authorization", None)

        cfg.refresh_api_key_hook = refresh  # type: ignore[assignment]
        cfg.api_key = {}
        self._api = client.CoreV1Api(client.ApiClient(cfg))
        return self._api

    async def _get(
        self, kind: str, key: tuple[str, ...], call: str, *args: str
    ) -> Mapping[str, Any]:
        async def load() -> Mapping[str, Any]:
            api = self._core()
            loop = asyncio.get_running_loop()
            self.requests += 1
            try:
                obj = await loop.run_in_executor(self._executor, lambda: getattr(api, call)(*args))
            except Exception as exc:
                raise _translate(exc, kind, "/".join(args)) from None
            meta = obj.metadata
            return {
                "annotations": dict(meta.annotations or {}),
                "labels": dict(meta.labels or {}),
                "node_name": getattr(getattr(obj, "spec", None), "node_name", None) or "",
            }

        return await self._cache.get_or_load((kind, *key), load)

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._get(
            "serviceaccount", (namespace, name), "read_namespaced_service_account", name, namespace
        )

    async def pod(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._get("pod", (namespace, name), "read_namespaced_pod", name, namespace)

    async def node(self, name: str) -> Mapping[str, Any]:
        return await self._get("node", (name,), "read_node", name)


def _translate(exc: Exception, kind: str, what: str) -> Exception:
    status = getattr(exc, "status", None)
    if status == 404:
        return NotFound(f"Kubernetes {kind} {what} not found")
    if status in (401, 403):
        return PermissionDenied(
            f"keyferry may not read {kind} {what} from the Kubernetes API "
            f"(HTTP {status}); grant its ClusterRole 'get' on {kind}s"
        )
    return Unavailable(f"Kubernetes API lookup of {kind} {what} failed: {type(exc).__name__}")
