"""Mount as the secrets-store-sync-controller calls it: from its own Deployment, with the
SecretSync's namespace and ServiceAccount, its own pod's name and uid, the fixed target
path ``/mnt/secrets-store``, ``{}`` secrets and no current versions (docs/sync-controller.md),
through a real server on a Unix socket."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from keyferry_fakes.harness import (
    SYNC_CONTROLLER_POD,
    Server,
    driver_request,
    sync_controller_request,
)
from provider import protocol, sync_controller
from provider.clouds.aws.identity import role_session_name
from provider.model import Mount, Pod

CANARY = "CANARY-sync-controller-3f9a1c"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "db").mkdir(parents=True)
    (r / "db" / "password").write_text(CANARY)
    (r / "db" / "creds.json").write_text(json.dumps({"user": "app", "password": CANARY}))
    return r


@pytest.fixture
def srv(serve: Callable[..., Server], root: Path) -> Server:
    # No Kubernetes API at all: nothing in a local class needs one.
    return serve(local_root=root)


CLASS = {
    "objects": "\n".join(
        [
            "- backend: local",
            "  name: db/password",
            "  path: password",
            "- backend: local",
            "  name: db/creds.json",
            "  path: creds.json",
            "  extract:",
            "    - path: username",
            "      jsonKey: user",
        ]
    )
}


def audits(srv: Server) -> list[dict[str, Any]]:
    return [json.loads(line)["audit"] for line in srv.logs if '"audit"' in line]


def secret_data(sync: Mapping[str, str], files: Mapping[str, bytes]) -> dict[str, bytes]:
    """What the controller puts into the Secret: each ``sourcePath`` file under its
    ``targetKey`` (a missing file fails the sync there)."""
    return {target: files[source] for source, target in sync.items()}


def test_the_controllers_request_decodes_to_the_secretsyncs_identity() -> None:
    request = sync_controller_request(
        CLASS, namespace="team-a", service_account="web", tokens={"aud-1": "tok-1"}
    )
    attrs = json.loads(request.attributes)
    assert "secretProviderClass" not in attrs and "csi.storage.k8s.io/ephemeral" not in attrs
    assert json.loads(attrs[protocol.TOKENS_KEY]) == {
        "aud-1": {"token": "tok-1", "expirationTimestamp": "2030-01-01T00:00:00Z"}
    }
    mount = protocol.decode(request)
    assert mount.pod == Pod("team-a", SYNC_CONTROLLER_POD[0], SYNC_CONTROLLER_POD[1], "web")
    assert mount.tokens["aud-1"].token == "tok-1"
    assert mount.secrets == {} and mount.current_versions == {}
    assert mount.default_mode == 0o644 and mount.secret_provider_class == ""
    assert sync_controller.from_sync_controller(mount)
    assert sync_controller.workload_pod(mount) == ""
    assert not sync_controller.from_sync_controller(protocol.decode(driver_request(CLASS)))


def test_a_local_class_mounts_for_the_controller_without_any_kubernetes_lookup(
    srv: Server,
) -> None:
    resp = srv.sync_mount("keyferry", CLASS, namespace="team-a", service_account="web")
    files = {f.path: f.contents for f in resp.files}
    assert files["password"] == CANARY.encode() and files["username"] == b"app"
    assert {f.mode for f in resp.files} == {0o644}  # permission "420" from the controller
    assert {v.id for v in resp.object_version} == {"password", "creds.json"}
    # The controller copies sourcePath files into the Secret under targetKey.
    data = secret_data({"password": "DB_PASSWORD", "username": "DB_USER"}, files)
    assert data == {"DB_PASSWORD": CANARY.encode(), "DB_USER": b"app"}


def test_the_audit_record_names_the_namespace_and_the_controller_not_a_pod(srv: Server) -> None:
    srv.sync_mount("keyferry", CLASS, namespace="team-a", service_account="web")
    record = audits(srv)[-1]
    assert record["outcome"] == "ok"
    assert record["pod"] == {"namespace": "team-a", "name": "", "uid": ""}
    assert record["service_account"] == "web"
    assert record["caller"] == {
        "name": "secrets-store-sync-controller",
        "pod": {"name": SYNC_CONTROLLER_POD[0], "uid": SYNC_CONTROLLER_POD[1]},
    }
    assert "rotation" not in record
    # A driver Mount's record has no caller and names its pod.
    srv.mount("keyferry", CLASS)
    driver = audits(srv)[-1]
    assert "caller" not in driver and driver["pod"]["name"] == "web-0"


def test_a_controller_without_its_pod_environment_still_mounts_and_audits(srv: Server) -> None:
    # SYNC_CONTROLLER_POD_NAME/_UID unset: empty pod name and uid.
    resp = srv.sync_mount(
        "keyferry", CLASS, namespace="team-a", service_account="web", controller_pod=("", "")
    )
    assert {f.path for f in resp.files} == {"password", "creds.json", "username"}
    record = audits(srv)[-1]
    assert record["outcome"] == "ok"
    assert record["caller"]["pod"] == {"name": "", "uid": ""}


def test_secret_values_never_reach_the_logs(srv: Server) -> None:
    srv.sync_mount("keyferry", CLASS, namespace="team-a", service_account="web")
    assert srv.logs and CANARY not in "\n".join(srv.logs) + srv.metrics_text()


def _mount(pod: Pod, target_path: str) -> Mount:
    return Mount(pod=pod, parameters={}, target_path=target_path)


@pytest.mark.parametrize(
    ("pod", "target_path", "expected"),
    [
        (Pod("team-a", "web-0", "u", "web"), "/var/lib/kubelet/pods/u/v/mount", "team-a.web-0"),
        # The sync controller's pod.name is its own pod: the session names the ServiceAccount.
        (Pod("team-a", "ctrl-0", "u", "web"), sync_controller.TARGET_PATH, "team-a.web"),
        (Pod("team-a", "", "", "web"), sync_controller.TARGET_PATH, "team-a.web"),
        (Pod("", "", "", ""), sync_controller.TARGET_PATH, "keyferry"),
        (Pod("ns:x", "", "", "a/b"), sync_controller.TARGET_PATH, "ns-x.a-b"),
        (Pod("n" * 63, "", "", "sa"), sync_controller.TARGET_PATH, "n" * 63 + "."),
    ],
)
def test_the_aws_role_session_name_is_well_formed_without_a_pod(
    pod: Pod, target_path: str, expected: str
) -> None:
    name = role_session_name(_mount(pod, target_path))
    assert name == expected
    assert 2 <= len(name) <= 64
