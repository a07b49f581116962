"""The keyferry pipeline with the real ``aws`` backend, without gRPC, for tests.

``AwsStack(endpoint=proxy.url, kube=kube)`` builds Services, the backend
registry and the pipeline exactly as the server does, on one private event
loop, so tests can mount and then look at the backend's state and metrics.
A mount without ``tokens`` carries what kubelet would pass: the pod's own
``sts.amazonaws.com`` token from the fake cluster issuer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import generate_latest

from keyferry_fakes.oidc import ISSUER
from provider import config as kconfig
from provider.backend import Registry, Services
from provider.cache import TTLCache
from provider.kube import KubeClient
from provider.model import Deadline, Fetched, Mount, Pod, Result, Token
from provider.observe import Metrics
from provider.pipeline import Pipeline

IRSA = "sts.amazonaws.com"
POD_IDENTITY = "pods.eks.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/web"
POD = Pod("team-a", "web-0", "uid-0", "web")


class AwsStack:
    def __init__(
        self,
        *,
        endpoint: str,
        kube: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        cache_ttl: float = 0.0,
        **overrides: Any,
    ) -> None:
        aws: dict[str, Any] = {"endpoint_url": endpoint, "region": "us-east-1"}
        aws.update(settings or {})
        aws = {k: v for k, v in aws.items() if v is not None}
        values: dict[str, Any] = {
            "cache_ttl_seconds": cache_ttl,
            "backends": {"aws": aws},
            **overrides,
        }
        if kube:
            values["kubernetes"] = dict(kube)
        self.config = kconfig.load(None, env={}, overrides=values)
        self.executor = ThreadPoolExecutor(8)
        self.metrics = Metrics()
        self.services = Services(
            config=self.config,
            metrics=self.metrics,
            executor=self.executor,
            kube=KubeClient(self.config.kubernetes),
            values=TTLCache[Fetched](self.config.cache_ttl_seconds),
        )
        self.registry = Registry(self.services)
        self.pipeline = Pipeline(self.registry, self.metrics)
        self.loop = asyncio.new_event_loop()

    def mount(
        self,
        params: Mapping[str, str],
        *,
        dialect: str = "aws",
        tokens: Mapping[str, str] | None = None,
        pod: Pod = POD,
        current: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Result:
        if tokens is None:
            tokens = {IRSA: pod_token(IRSA, pod)}
        mount = Mount(
            pod=pod,
            parameters=dict(params),
            tokens={aud: Token(aud, tok) for aud, tok in tokens.items()},
            dialect=dialect,
            provider_name=dialect if dialect != "native" else "keyferry",
            current_versions=dict(current or {}),
        )
        return self.loop.run_until_complete(self.pipeline.mount(mount, Deadline(timeout)))

    @property
    def backend(self) -> Any:
        return self.loop.run_until_complete(self.registry.get("aws"))

    def metrics_text(self) -> str:
        return generate_latest(self.metrics.registry).decode()

    def close(self) -> None:
        self.loop.run_until_complete(self.registry.close())
        self.loop.close()
        self.executor.shutdown(wait=False)


def pod_token(audience: str, pod: Pod = POD, **kwargs: Any) -> str:
    """The projected token of ``pod``'s ServiceAccount for ``audience``."""
    return ISSUER.pod_token(audience, pod.namespace, pod.service_account, pod=pod.name, **kwargs)


def files(result: Result) -> dict[str, bytes]:
    return {f.path: f.contents for f in result.files}


def modes(result: Result) -> dict[str, int]:
    return {f.path: f.mode for f in result.files}


def versions(result: Result) -> dict[str, str]:
    return {v.id: v.version for v in result.versions}
