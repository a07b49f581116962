"""End to end over the driver's protocol: the real server on Unix sockets, the
``gcp`` drop-in socket and the native socket, against the Google fakes and a
fake Kubernetes API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from keyferry_fakes.gcp import GoogleStack, pod_token
from keyferry_fakes.harness import DEFAULT_POD, Server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import Issuer

NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
GSA = "web@my-project.iam.gserviceaccount.com"
CANARY = b"CANARY-gcp-secret-8c1f0e"


@pytest.fixture
def stack(google: GoogleStack) -> GoogleStack:
    sm = google.secret_manager
    sm.add_version("my-project", "testsecret", CANARY)
    sm.add_version("my-project", "creds", json.dumps({"user": "app", "pass": "pw"}).encode())
    sm.add_version("my-project", "config", b"user: yamluser\nport: 5432\n")
    google.regional["us-east1"].add_version("my-project", "testsecret", b"east")
    google.parameter_manager.add_version("my-project", "app", "v1", b'{"mode": "prod"}')
    return google


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account(NS, KSA, {"iam.gke.io/gcp-service-account": GSA})
    return kube


@pytest.fixture
def srv(tmp_path: Path, serve: Callable[..., Server], stack: GoogleStack, kube: FakeKube) -> Server:
    stack.google.bind(GSA, NS, KSA)  # roles/iam.workloadIdentityUser on the GSA
    stack.google.allow_project(f"serviceAccount:{GSA}")  # secretAccessor, parameterViewer
    root = tmp_path / "root"
    root.mkdir()
    (root / "local.txt").write_text("from local")
    return serve(
        providers="keyferry,gcp",
        backends={"gcp": stack.settings()},
        kubernetes=kube.settings(),
        local_root=root,
        cache_ttl_seconds=0,
    )


def secrets(text: str, **extra: str) -> dict[str, str]:
    return {"secrets": text, **extra}


def status(srv: Server, stack: GoogleStack, params: dict[str, str], **kw: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("gcp", params, tokens=stack.token(NS, KSA), **kw)  # type: ignore[arg-type]
    return info.value


DOCUMENTED = """
- resourceName: "projects/my-project/secrets/testsecret/versions/latest"
  path: "good1.txt"
- resourceName: "projects/my-project/secrets/testsecret/versions/latest"
  fileName: "good2.txt"
"""


def test_documented_example_produces_the_documented_files(srv: Server, stack: GoogleStack) -> None:
    resp = srv.mount("gcp", secrets(DOCUMENTED), tokens=stack.token(NS, KSA))
    files = {f.path: (f.mode, f.contents) for f in resp.files}
    assert files == {"good1.txt": (0o644, CANARY), "good2.txt": (0o644, CANARY)}
    versions = {v.id: v.version for v in resp.object_version}
    assert versions == {
        "projects/my-project/secrets/testsecret/versions/latest": (
            "projects/1449000001/secrets/testsecret/versions/1"
        )
    }
    # the pod's identity: one exchange, one impersonation of the annotated GSA
    assert stack.google.counts["sts"] == 1 and stack.google.counts["iam"] == 1


def test_modes_extract_keys_regional_and_parameters(srv: Server, stack: GoogleStack) -> None:
    text = """
- resourceName: projects/my-project/secrets/creds/versions/1
  path: db/user
  mode: 0400
  extractJSONKey: user
- resourceName: projects/my-project/secrets/config/versions/latest
  path: db/yaml-user
  extractYAMLKey: user
- resourceName: projects/my-project/locations/us-east1/secrets/testsecret/versions/latest
  path: east.txt
- resourceName: projects/my-project/locations/global/parameters/app/versions/v1
  path: app.json
  mode: 0o440
"""
    resp = srv.mount("gcp", secrets(text, auth="pod-adc"), tokens=stack.token(NS, KSA))
    files = {f.path: (f.mode, f.contents) for f in resp.files}
    assert files == {
        "db/user": (0o400, b"app"),
        "db/yaml-user": (0o644, b"yamluser"),
        "east.txt": (0o644, b"east"),
        "app.json": (0o440, b'{"mode": "prod"}'),
    }
    versions = {v.id: v.version for v in resp.object_version}
    assert (
        versions["projects/my-project/locations/us-east1/secrets/testsecret/versions/latest"]
        == "projects/1449000001/locations/us-east1/secrets/testsecret/versions/1"
    )
    assert versions["projects/my-project/locations/global/parameters/app/versions/v1"].startswith(
        "projects/1449000001/locations/global/parameters/app/versions/v1@"
    )


def test_extracted_values_are_the_bytes_upstream_writes(srv: Server, stack: GoogleStack) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "flags", b"enabled: yes\nwindow: 12:30\nsince: 2024-05-01\n")
    sm.add_version("my-project", "odd", b'{"k": "a\\ud800b"}')
    text = """
- {resourceName: projects/my-project/secrets/flags/versions/1, path: e, extractYAMLKey: enabled}
- {resourceName: projects/my-project/secrets/flags/versions/1, path: w, extractYAMLKey: window}
- {resourceName: projects/my-project/secrets/flags/versions/1, path: s, extractYAMLKey: since}
- {resourceName: projects/my-project/secrets/odd/versions/1, path: k, extractJSONKey: k}
"""
    resp = srv.mount("gcp", secrets(text), tokens=stack.token(NS, KSA))
    files = {f.path: f.contents for f in resp.files}
    assert files == {"e": b"yes", "w": b"12:30", "s": b"2024-05-01", "k": b"a\xef\xbf\xbdb"}


def test_bad_input_fails_before_any_network_call(
    srv: Server, stack: GoogleStack, kube: FakeKube
) -> None:
    text = """
- resourceName: "projects/my-project/secrets/testsecret"
  path: "a"
- resourceName: "projects/my-project/secrets/testsecret/versions/1"
  path: "../escape"
- resourceName: "projects/my-project/secrets/testsecret/versions/1"
  path: "b"
  mode: 04755
- resourceName: "projects/my-project/secrets/testsecret/versions/1"
  path: "c"
  extractJSONKey: a
  extractYAMLKey: b
- objectName: "projects/my-project/secrets/testsecret/versions/1"
  path: "d"
"""
    err = status(srv, stack, secrets(text))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = err.details() or ""
    for part in ("secrets[0]", "secrets[1]", "secrets[2]", "secrets[3]", "secrets[4]"):
        assert part in message
    assert "resourceName" in message
    assert sum(stack.google.counts.values()) == 0
    assert sum(kube.requests.values()) == 0


def test_failures_name_each_object_and_pick_the_code(srv: Server, stack: GoogleStack) -> None:
    stack.secret_manager.add_version("other-project", "locked", b"x")  # no role there
    text = """
- resourceName: projects/my-project/secrets/missing/versions/1
  path: a
- resourceName: projects/my-project/secrets/testsecret/versions/1
  path: b
"""
    err = status(srv, stack, secrets(text))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "projects/my-project/secrets/missing/versions/1" in (err.details() or "")
    text += "- resourceName: projects/other-project/secrets/locked/versions/1\n  path: c\n"
    err = status(srv, stack, secrets(text))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    details = err.details() or ""
    assert "missing" in details and "locked" in details
    assert CANARY.decode() not in details


def test_extracting_from_non_json_is_invalid_argument(srv: Server, stack: GoogleStack) -> None:
    text = """
- resourceName: projects/my-project/secrets/testsecret/versions/1
  path: a
  extractJSONKey: user
"""
    err = status(srv, stack, secrets(text))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "JSON" in (err.details() or "")
    assert CANARY.decode() not in (err.details() or "")


def test_missing_token_audience_is_actionable(srv: Server, stack: GoogleStack) -> None:
    with pytest.raises(grpc.RpcError) as info:
        srv.mount(
            "gcp",
            secrets(DOCUMENTED),
            tokens={"sts.amazonaws.com": pod_token(NS, KSA, "sts.amazonaws.com")},
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tokenRequests" in (info.value.details() or "")


def test_provider_adc_is_refused_by_default(srv: Server, stack: GoogleStack) -> None:
    err = status(srv, stack, secrets(DOCUMENTED, auth="provider-adc"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow_provider_adc" in (err.details() or "")


def test_hundred_mounts_one_exchange(srv: Server, stack: GoogleStack, kube: FakeKube) -> None:
    for _ in range(100):
        resp = srv.mount("gcp", secrets(DOCUMENTED), tokens=stack.token(NS, KSA))
        assert len(resp.files) == 2
    assert stack.google.counts["sts"] == 1
    assert stack.google.counts["iam"] == 1
    assert stack.google.counts["secretmanager"] == 100
    assert kube.requests[f"/api/v1/namespaces/{NS}/serviceaccounts/{KSA}"] == 1
    metrics = srv.metrics_text()
    assert 'backend="gcp"' in metrics and "AccessSecretVersion" in metrics


def test_native_dialect_mixes_gcp_with_other_backends(srv: Server, stack: GoogleStack) -> None:
    objects = """
- backend: local
  name: local.txt
  path: local.txt
- backend: gcp
  name: projects/my-project/secrets/creds/versions/latest
  path: creds.json
  extract:
    - path: creds/user
      jsonKey: user
- backend: gcp
  name: projects/my-project/locations/us-east1/secrets/testsecret/versions/latest
"""
    resp = srv.mount("keyferry", {"objects": objects}, tokens=stack.token(NS, KSA))
    files = {f.path: f.contents for f in resp.files}
    assert files["local.txt"] == b"from local"
    assert json.loads(files["creds.json"]) == {"user": "app", "pass": "pw"}
    assert files["creds/user"] == b"app"
    assert files["testsecret"] == b"east"


def test_no_secret_or_token_in_logs(srv: Server, stack: GoogleStack) -> None:
    tokens = stack.token(NS, KSA)
    srv.mount("gcp", secrets(DOCUMENTED), tokens=tokens)
    text = "\n".join(srv.logs)
    assert CANARY.decode() not in text
    for token in tokens.values():
        assert token not in text
    for issued in stack.google.tokens:
        assert issued not in text


# -- identities the fakes refuse, as Google would ------------------------------------------

OTHER = (NS, "other-0", "22222222-3333-4444-5555-666666666666", "other")


def test_unbound_service_account_names_the_workload_identity_binding(
    srv: Server, stack: GoogleStack, kube: FakeKube
) -> None:
    # team-a/other claims the GSA by annotation, but nobody granted it the right to act as it.
    kube.add_service_account(NS, "other", {"iam.gke.io/gcp-service-account": GSA})
    tokens = stack.token(NS, "other")
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("gcp", secrets(DOCUMENTED), tokens=tokens, pod=OTHER)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details() or ""
    member = f"serviceAccount:{stack.google.pool}[{NS}/other]"
    assert "roles/iam.workloadIdentityUser" in details and GSA in details and member in details
    assert "iam.serviceAccounts.getAccessToken" in details  # IAM's own reason
    assert stack.google.counts["secretmanager"] == 0
    # the binding the message names is the one that works
    stack.google.grant(
        f"projects/-/serviceAccounts/{GSA}", "roles/iam.workloadIdentityUser", member
    )
    resp = srv.mount("gcp", secrets(DOCUMENTED), tokens=stack.token(NS, "other"), pod=OTHER)
    assert {f.path for f in resp.files} == {"good1.txt", "good2.txt"}


def test_principal_without_secret_access_names_the_role_and_the_principal(
    srv: Server, stack: GoogleStack, kube: FakeKube
) -> None:
    # No GSA annotation: the pod's own federated principal reads, and holds no role.
    kube.add_service_account(NS, "other", {})
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("gcp", secrets(DOCUMENTED), tokens=stack.token(NS, "other"), pod=OTHER)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details() or ""
    assert "roles/secretmanager.secretAccessor" in details
    principal = f"workloadIdentityPools/{stack.google.pool}/subject/ns/{NS}/sa/other"
    assert principal in details, details
    assert stack.google.counts["iam"] == 0


def test_token_of_another_service_account_is_refused(srv: Server, stack: GoogleStack) -> None:
    # The pod is team-a/web; the token is kube-system/admin's (a valid, signed token).
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("gcp", secrets(DOCUMENTED), tokens=stack.token("kube-system", "admin"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not belong" in (info.value.details() or "")
    assert stack.google.counts["sts"] == 0


def test_forged_pod_token_is_refused_by_sts(srv: Server, stack: GoogleStack) -> None:
    forged = Issuer().pod_token(stack.google.pool, NS, KSA)  # right claims, wrong key
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("gcp", secrets(DOCUMENTED), tokens={stack.google.pool: forged})
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details() or ""
    assert "STS rejected" in details and "signature" in details
    assert forged not in details
    assert stack.google.counts["sts"] == 1 and stack.google.counts["secretmanager"] == 0


def test_every_object_of_a_wide_mount_is_in_flight_at_once(srv: Server, stack: GoogleStack) -> None:
    """The fake holds each read until 24 wait: the Mount succeeds only with all 24 in
    flight together (a pool of 16 workers shared by every Mount used to cap it)."""
    names = [f"wide-{i}" for i in range(24)]
    for name in names:
        stack.secret_manager.add_version("my-project", name, name.encode())
    lines = [
        f"- resourceName: projects/my-project/secrets/{n}/versions/1\n  path: {n}" for n in names
    ]
    stack.secret_manager.hold(len(names), prefix="projects/my-project/secrets/wide-")
    resp = srv.mount("gcp", secrets("\n".join(lines)), tokens=stack.token(NS, KSA))
    assert sorted(f.path for f in resp.files) == sorted(names)
