"""Mounts the secrets-store-sync-controller sends, told apart from the CSI driver's.

The sync controller (kubernetes-sigs/secrets-store-sync-controller) turns a SecretSync
into a Kubernetes Secret without any pod mounting a volume: it calls Mount itself, over
the provider socket it shares with a keyferry sidecar in its own Deployment
(docs/sync-controller.md). Its request carries the SecretSync's namespace and
ServiceAccount and the tokens it requested for that ServiceAccount, so identity works as
for the driver; but ``pod.name`` and ``pod.uid`` are the controller's own (from its
environment, empty when unset) in a namespace where that pod does not live, and
``target_path`` is always the fixed ``/mnt/secrets-store``. There is no workload pod and
no node to look up, and a fix that names the CSIDriver object is the wrong fix.

What this module decides from ``target_path`` is only the wording of errors, which pod an
AWS session and the audit record name, and that a pod/node lookup that cannot succeed is
not attempted; identity never depends on it (the tokens and the ServiceAccount they name
decide).
"""

from __future__ import annotations

from .model import Mount

TARGET_PATH = "/mnt/secrets-store"
"""The target path the sync controller sends on every Mount (the driver sends kubelet's
``.../pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount``)."""
NAME = "secrets-store-sync-controller"


def from_sync_controller(mount: Mount) -> bool:
    """Whether the request is the sync controller's rather than the CSI driver's."""
    return mount.target_path == TARGET_PATH


def workload_pod(mount: Mount) -> str:
    """The name of the pod the Mount is for; ``""`` when the request names none (the sync
    controller's ``pod.name`` is its own pod, not one of the SecretSync's namespace)."""
    return "" if from_sync_controller(mount) else mount.pod.name


def no_pod(mount: Mount) -> str:
    """Why the request names no pod whose node could be looked up, for messages."""
    if from_sync_controller(mount):
        return (
            f"the request comes from the {NAME} (targetPath {TARGET_PATH}), which names "
            f"its own pod, not a pod of namespace {mount.pod.namespace or '<none>'}, so there "
            "is no pod or node to look up"
        )
    return "the driver did not pass the pod's name (csi.storage.k8s.io/pod.name)"


def token_fix(mount: Mount, audience: str) -> str:
    """How to make the caller send a token for ``audience`` (starts in lower case)."""
    if from_sync_controller(mount):
        return (
            f"add '{audience}' to the {NAME}'s --token-request-audience flag (Helm value "
            f"tokenRequestAudience: [{{audience: {audience}}}])"
        )
    return (
        f"add '- audience: {audience}' to spec.tokenRequests of the CSIDriver "
        "secrets-store.csi.k8s.io"
    )


def caller(mount: Mount) -> dict[str, object]:
    """The audit record's account of who sent the Mount, when it is not the driver: the
    sync controller's own pod, kept apart from the workload's pod (which it has none of)."""
    if not from_sync_controller(mount):
        return {}
    return {
        "pod": {"namespace": mount.pod.namespace, "name": "", "uid": ""},
        "caller": {"name": NAME, "pod": {"name": mount.pod.name, "uid": mount.pod.uid}},
    }
