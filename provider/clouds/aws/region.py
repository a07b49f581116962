"""The region each ref is read in.

A ref's own region (the SecretProviderClass's ``region``, or the ARN's), else the
server's ``backends.aws.region`` / ``AWS_REGION``, else the
``topology.kubernetes.io/region`` label of the pod's node, looked up through the
Kubernetes API once per pod and kept for ``region_cache_seconds``. A request that names
no pod of its namespace (the sync controller's) has no node: the region must be given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ... import sync_controller
from ...backend import Services
from ...cache import TTLCache
from ...errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    KeyferryError,
    NotFound,
)
from ...model import Deadline, Mount
from .ref import REGION_RE, AwsRef, is_arn, parse_arn
from .settings import AwsSettings

REGION_LABEL = "topology.kubernetes.io/region"


class Regions:
    def __init__(self, settings: AwsSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self._cache: TTLCache[str] = TTLCache(settings.region_cache_seconds)

    def clear(self) -> None:
        self._cache.clear()

    async def primary(
        self, mount: Mount, refs: Sequence[AwsRef], deadline: Deadline
    ) -> list[str | KeyferryError]:
        """Each ref's primary region, or why it cannot be read there; the default region
        is looked up at most once, and only if a ref needs it."""
        out: list[str | KeyferryError] = []
        default: str | KeyferryError | None = None
        for ref in refs:
            region = ref.region
            if not region:
                if default is None:
                    try:
                        default = await self.default(mount, deadline)
                    except KeyferryError as exc:
                        default = exc
                if isinstance(default, KeyferryError):
                    out.append(default)
                    continue
                region = default
            problem = region_problem(ref, region)
            out.append(InvalidArgument(problem) if problem else region)
        return out

    async def default(self, mount: Mount, deadline: Deadline) -> str:
        """The server's region, else the region label of the pod's node."""
        if self.settings.region:
            return self.settings.region
        ns, pod = mount.pod.namespace, sync_controller.workload_pod(mount)
        fix = (
            "set 'region' in the SecretProviderClass, or backends.aws.region (or AWS_REGION) "
            "in keyferry's configuration"
        )
        if not ns or not pod:
            raise FailedPrecondition(f"no AWS region: {sync_controller.no_pod(mount)}; {fix}")
        fix += f", or label the node with {REGION_LABEL}"

        async def load() -> str:
            try:
                info = await self.services.kube.pod(ns, pod)
                node = str(info.get("node_name", ""))
                if not node:
                    raise FailedPrecondition(f"pod {ns}/{pod} is not scheduled on a node yet")
                labels = (await self.services.kube.node(node)).get("labels", {})
            except NotFound as exc:  # no such pod (or node): a lookup again will not help
                raise FailedPrecondition(
                    f"no AWS region: looking up the node of pod {ns}/{pod} found nothing "
                    f"({exc.message}); {fix}"
                ) from None
            except KeyferryError as exc:
                raise type(exc)(
                    f"no AWS region: looking up the node of pod {ns}/{pod} failed "
                    f"({exc.message}); {fix}",
                    code=exc.code,
                ) from None
            region = str(labels.get(REGION_LABEL, "")).strip()
            if not region:
                raise FailedPrecondition(
                    f"no AWS region: node {node} has no {REGION_LABEL} label; {fix}"
                )
            if not REGION_RE.match(region):
                raise FailedPrecondition(
                    f"node {node} label {REGION_LABEL}={region!r} is not a region"
                )
            return region

        try:
            return await asyncio.wait_for(
                self._cache.get_or_load(("pod", ns, pod), load),
                timeout=max(0.05, deadline.remaining()),
            )
        except TimeoutError:
            raise DeadlineExceeded(f"no AWS region: the node lookup timed out; {fix}") from None


def region_problem(ref: AwsRef, region: str) -> str:
    """Why ``ref`` cannot be read in ``region`` (and its failover region), or ``""``."""
    names = [(ref.target.name, region)]
    if ref.failover_region:
        if ref.failover_region == region:
            return (
                f"failoverRegion {ref.failover_region!r} is also the primary region; "
                "a failover region must differ"
            )
        if ref.failover is not None:
            names.append((ref.failover.name, ref.failover_region))
    for name, where in names:
        if is_arn(name):
            arn = parse_arn(name)
            if arn is not None and arn.region != where:
                return (
                    f"the ARN's region {arn.region!r} does not match the region {where!r} it is "
                    "read from; set 'region' to the ARN's region or use an ARN of that region"
                )
    return ""
