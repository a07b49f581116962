"""Read-only Kubernetes API lookups (ServiceAccount annotations, pod and node
metadata), cached briefly, through lightkube's asyncio client.

Authenticates as keyferry's own ServiceAccount with the projected token file
(``kubernetes.token_file``): lightkube's token-file auth reads it for the first
request and reads it again whenever the API server answers 401, so a token that
kubelet rotated is picked up without a restart. In a cluster the API is
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` verified with the
mounted ``ca.crt``; ``kubernetes.api_url`` and ``ca_file`` override both. The API
location never comes from a SecretProviderClass.

Needs RBAC ``get`` on ``serviceaccounts`` (and ``pods``/``nodes`` only for AWS
region discovery); each failure says which rule, token or file to fix.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

from .cache import TTLCache
from .config import KubeConfig
from .errors import (
    FailedPrecondition,
    KeyferryError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

# Kind -> the resource name a ClusterRole rule uses.
RESOURCES = {"serviceaccount": "serviceaccounts", "pod": "pods", "node": "nodes"}


class KubeClient:
    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._client: Any = None
        self._cache: TTLCache[Mapping[str, Any]] = TTLCache(config.cache_seconds)
        self.requests = 0

    @property
    def enabled(self) -> bool:
        return bool(self.config.api_url or os.environ.get("KUBERNETES_SERVICE_HOST"))

    def _url(self) -> str:
        if self.config.api_url:
            return self.config.api_url.rstrip("/")
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def _api(self) -> Any:
        if self._client is not None:
            return self._client
        if not self.enabled:
            raise FailedPrecondition(
                "keyferry has no Kubernetes API access (not in a cluster and "
                "kubernetes.api_url unset in the server configuration)"
            )
        try:
            import httpx2
            from lightkube import AsyncClient, KubeConfig
            from lightkube.config.models import Cluster, User
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise FailedPrecondition(
                "the lightkube package is missing; install keyferry[kube]"
            ) from exc
        cfg = self.config
        if not os.path.isfile(cfg.token_file):
            raise FailedPrecondition(
                f"keyferry's ServiceAccount token file {cfg.token_file} does not exist; mount "
                "the projected ServiceAccount token (automountServiceAccountToken: true on the "
                "DaemonSet) or set kubernetes.token_file in the server configuration"
            )
        cluster = Cluster(server=self._url(), insecure=cfg.insecure)
        if not cfg.insecure and os.path.isfile(cfg.ca_file):
            cluster.certificate_auth = cfg.ca_file
        config = KubeConfig.from_one(cluster=cluster, user=User(token_file=cfg.token_file))
        self._client = AsyncClient(
            config, timeout=httpx2.Timeout(cfg.timeout_seconds), trust_env=False
        )
        return self._client

    async def _get(self, kind: str, namespace: str, name: str) -> Mapping[str, Any]:
        async def load() -> Mapping[str, Any]:
            from lightkube.resources.core_v1 import Node, Pod, ServiceAccount

            api = self._api()
            resource = {"serviceaccount": ServiceAccount, "pod": Pod, "node": Node}[kind]
            self.requests += 1
            try:
                if namespace:
                    obj = await api.get(resource, name, namespace=namespace)
                else:
                    obj = await api.get(resource, name)
            except Exception as exc:
                what = f"{namespace}/{name}" if namespace else name
                raise self._translate(exc, kind, what) from None
            meta = obj.metadata
            return {
                "annotations": dict(meta.annotations or {}),
                "labels": dict(meta.labels or {}),
                "node_name": getattr(getattr(obj, "spec", None), "nodeName", None) or "",
            }

        return await self._cache.get_or_load((kind, namespace, name), load)

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._get("serviceaccount", namespace, name)

    async def pod(self, namespace: str, name: str) -> Mapping[str, Any]:
        return await self._get("pod", namespace, name)

    async def node(self, name: str) -> Mapping[str, Any]:
        return await self._get("node", "", name)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _translate(self, exc: Exception, kind: str, what: str) -> KeyferryError:
        import httpx2
        from lightkube import ApiError, ConfigError

        where = f"Kubernetes {kind} {what}"
        if isinstance(exc, ApiError):
            status = exc.response.status_code
            if status == 404:
                return NotFound(f"{where} not found")
            if status == 401:
                return Unauthenticated(
                    f"the Kubernetes API rejected keyferry's own ServiceAccount token from "
                    f"{self.config.token_file} (HTTP 401) while reading {kind} {what}: the token "
                    "is expired, revoked or from another cluster; check that the DaemonSet mounts "
                    "a current projected token and that kubernetes.token_file points at it"
                )
            if status == 403:
                return PermissionDenied(
                    f"keyferry's ServiceAccount may not get {kind} {what} (HTTP 403); add this "
                    f'rule to keyferry\'s ClusterRole: apiGroups: [""], resources: '
                    f'["{RESOURCES[kind]}"], verbs: ["get"]'
                )
            return Unavailable(f"the Kubernetes API answered HTTP {status} to a read of {where}")
        if isinstance(exc, httpx2.TimeoutException):
            return Unavailable(
                f"the Kubernetes API did not answer within {self.config.timeout_seconds:g} s "
                f"(kubernetes.timeout_seconds) to a read of {where}"
            )
        if isinstance(exc, ConfigError | OSError) and not isinstance(exc, ssl.SSLError):
            return FailedPrecondition(
                f"keyferry cannot authenticate to the Kubernetes API to read {where}: "
                f"{type(exc).__name__}; check kubernetes.token_file ({self.config.token_file})"
            )
        if isinstance(exc, httpx2.TransportError):
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, ssl.SSLError) or "CERTIFICATE" in str(exc).upper():
                return Unavailable(
                    f"TLS verification of the Kubernetes API at {self._url()} failed while "
                    f"reading {where}: its certificate is not signed by the CA in "
                    f"kubernetes.ca_file ({self.config.ca_file})"
                )
            return Unavailable(
                f"the Kubernetes API at {self._url()} could not be reached to read {where}: "
                f"{type(exc).__name__}"
            )
        return Unavailable(f"Kubernetes API lookup of {where} failed: {type(exc).__name__}")
