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

Here: the command and its arguments. :mod:`.api` reads the Kubernetes API (lightkube),
:mod:`.cluster` what keyferry's installation and the pod look like, :mod:`.classes`
checks each class, :mod:`.identities` the identities per cloud, :mod:`.report` collects
and prints the checks.
"""

from __future__ import annotations

from typing import Any

from ...errors import KeyferryError
from .. import manifest
from .api import Forbidden, Kube, LightkubeReader, Unreachable
from .classes import Doctor
from .cluster import Cluster, Target
from .report import Report


class Usage(Exception):
    """Bad arguments or an unusable ``-f`` file: exit code 2."""


def split_ref(value: str, flag: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise Usage(f"{flag} expects NAMESPACE/NAME, got {value!r}")
    return namespace, name


def file_targets(args: Any) -> list[Target]:
    """The classes of ``-f FILE`` (``--name``: only that one) as the pods would mount them."""
    try:
        found = manifest.select(args.file, args.name)
    except OSError as exc:
        raise Usage(f"{args.file}: cannot read: {exc.strerror}") from None
    except KeyferryError as exc:
        raise Usage(exc.message) from None
    if not found:
        raise Usage(f"{args.file}: no SecretProviderClass to check")
    return [
        Target(spc, args.namespace or spc.namespace or "default", args.service_account)
        for spc in found
    ]


def command(args: Any, kube: Kube | None = None) -> int:
    """``keyferry doctor``: print the report; 1 when a check failed, 2 on bad usage."""
    try:
        pod = split_ref(args.pod, "--pod") if args.pod else None
        cls = split_ref(args.class_, "--class") if args.class_ else None
        targets = file_targets(args) if args.file else []
    except Usage as exc:
        print(f"keyferry doctor: {exc}")
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
        cluster = Cluster(
            reader,
            Report(),
            provider_namespace=args.provider_namespace,
            daemonset=args.daemonset,
        )
        if cls:
            spc = cluster.cluster_class(f"class {args.class_}", *cls)
            if spc is not None:
                targets = [Target(spc, cls[0], args.service_account)]
        report = Doctor(cluster).run(targets, pod=pod)
    except (Forbidden, Unreachable) as exc:
        kind = "not allowed" if isinstance(exc, Forbidden) else "failed"
        print(f"  FAIL  Kubernetes API read {kind}: {exc}")
        print("        fix: check the kubeconfig, the context and your RBAC (get on the objects)")
        return 1
    for line in report.lines():
        print(line)
    return 1 if report.failed else 0
