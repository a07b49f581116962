"""End to end: the real server on Unix sockets, called over gRPC as the driver calls it."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.aws_stack import ROLE
from keyferry_fakes.backends import gated_cloud
from keyferry_fakes.gate import Gate
from keyferry_fakes.harness import Server, driver_request, running_server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from provider import __version__
from provider._proto.v1alpha1 import service_pb2 as pb
from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc
from provider.cli.embedded import EmbeddedProvider
from provider.config import load
from provider.errors import ConfigError
from tests.core.test_pipeline import DEEP, LOCAL_HEAD, alias_bomb

CANARY_VALUE = "CANARY-file-4f1d9c2e77"
CANARY_TOKEN = "CANARY-token-eyJhbGciOi9a8b7c"
CANARY_NPS = "CANARY-nps-clientsecret-31337"


def objects(*items: str) -> dict[str, str]:
    return {"objects": "\n".join(items)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "db").mkdir(parents=True)
    (r / "db" / "password").write_text(CANARY_VALUE)
    (r / "db" / "creds.json").write_text(json.dumps({"user": "app", "password": CANARY_VALUE}))
    (r / "plain.txt").write_text("hello")
    (r / "big.bin").write_bytes(b"x" * 300_000)
    outside = tmp_path / "outside.txt"
    outside.write_text("outside the root")
    (r / "escape").symlink_to(outside)
    # documents a parser can choke on (hostile input below)
    (r / "bigint.json").write_text('{"n": ' + "1" * 5000 + ', "user": "app"}')
    (r / "surrogate.json").write_text('{"user": "\\ud800"}')
    (r / "bigint.yaml").write_text("n: " + "1" * 5000 + "\nuser: app\n")
    (r / "badfloat.yaml").write_text("n: !!float 1x\nuser: app\n")
    return r


@pytest.fixture
def srv(serve: Callable[..., Server], root: Path) -> Server:
    return serve(local_root=root)


GOOD = objects("- backend: local", "  name: plain.txt", "  path: plain.txt")


def test_version_answers_over_both_driver_dial_styles(srv: Server) -> None:
    for dial in ("v1.6", "v1.5"):
        with srv.channel("keyferry", dial=dial) as ch:
            from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc

            reply = pb_grpc.CSIDriverProviderStub(ch).Version(
                pb.VersionRequest(version="v1alpha1"), timeout=10
            )
        assert reply.version == "v1alpha1"
        assert reply.runtime_name == "keyferry"
        assert reply.runtime_version == __version__
        resp = srv.mount("keyferry", GOOD, dial=dial)
        assert [f.path for f in resp.files] == ["plain.txt"]


def test_mount_returns_every_file_with_modes_and_versions(srv: Server) -> None:
    params = objects(
        "- backend: local",
        "  name: db/creds.json",
        "  path: creds/all.json",
        "  mode: '0640'",
        "  extract:",
        "    - path: creds/password",
        "      jsonKey: password",
        "      mode: '0400'",
        "- backend: local",
        "  name: plain.txt",
    )
    resp = srv.mount("keyferry", params)
    files = {f.path: (f.mode, f.contents) for f in resp.files}
    assert files["creds/all.json"][0] == 0o640
    assert files["creds/password"] == (0o400, CANARY_VALUE.encode())
    assert files["plain.txt"] == (0o644, b"hello")  # default from permission "420"
    ids = [v.id for v in resp.object_version]
    assert ids == sorted(set(ids)) and ids == ["creds/all.json", "plain.txt"]
    assert all(v.version.startswith("hmac-sha256:") for v in resp.object_version)
    assert CANARY_VALUE not in "".join(v.version for v in resp.object_version)


def test_default_mode_comes_from_the_permission_field(srv: Server) -> None:
    resp = srv.mount("keyferry", GOOD, permission="256")
    assert resp.files[0].mode == 0o400


def test_versions_are_stable_and_change_exactly_when_content_changes(
    srv: Server, root: Path
) -> None:
    first = srv.mount("keyferry", GOOD).object_version[0].version
    assert srv.mount("keyferry", GOOD).object_version[0].version == first
    (root / "plain.txt").write_text("hello, rotated")
    second = srv.mount("keyferry", GOOD).object_version[0].version
    assert second != first
    (root / "plain.txt").write_text("hello")
    assert srv.mount("keyferry", GOOD).object_version[0].version == first


def test_v15_rotation_call_without_volume_context_keys(srv: Server) -> None:
    request = srv.request(GOOD, current={"plain.txt": "old"})
    attrs = json.loads(request.attributes)
    for key in ("secretProviderClass", "csi.storage.k8s.io/ephemeral"):
        attrs.pop(key)
    request.attributes = json.dumps(attrs)
    request.secrets = "{}"
    resp = srv.send("keyferry", request)
    assert [v.id for v in resp.object_version] == ["plain.txt"]
    audit = [json.loads(line) for line in srv.logs if '"audit"' in line]
    assert audit[-1]["audit"]["rotation"] is True


def _raw(srv: Server, **fields: str) -> pb.MountRequest:
    request = srv.request(GOOD)
    for k, v in fields.items():
        setattr(request, k, v)
    return request


BAD_PARAMS = [
    ("bad-yaml", objects("- backend: local", "  name: [unclosed"), "INVALID_ARGUMENT", "line"),
    ("unknown-key", objects("- backend: local", "  name: plain.txt", "  pth: x"), None, "path"),
    (
        "wrong-type",
        objects("- backend: local", "  name: plain.txt", "  mode: [1]"),
        "INVALID_ARGUMENT",
        "mode",
    ),
    ("traversal", objects("- backend: local", "  name: plain.txt", "  path: ../x"), None, "'..'"),
    (
        "absolute",
        objects("- backend: local", "  name: plain.txt", "  path: /etc/x"),
        None,
        "absolute",
    ),
    ("dot", objects("- backend: local", "  name: plain.txt", "  path: ."), None, "'.'"),
    (
        "duplicate",
        objects(
            "- {backend: local, name: plain.txt, path: same}",
            "- {backend: local, name: db/password, path: same}",
        ),
        None,
        "also written by objects[0]",
    ),
    (
        "clash",
        objects(
            "- {backend: local, name: plain.txt, path: a}",
            "- {backend: local, name: db/password, path: a/b}",
        ),
        None,
        "needs a directory 'a'",
    ),
    ("unknown-backend", objects("- backend: vault", "  name: x"), None, "unknown backend 'vault'"),
    ("escape-name", objects("- backend: local", "  name: ../outside.txt"), None, "local root"),
    (
        "escape-symlink",
        objects("- backend: local", "  name: escape"),
        None,
        "outside the local root",
    ),
    ("empty-list", {"objects": "[]"}, None, "empty list"),
    ("unknown-parameter", {**GOOD, "regoin": "x"}, None, "regoin"),
]


@pytest.mark.parametrize(
    ("name", "params", "code", "needle"), BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS]
)
def test_bad_parameters_get_invalid_argument_naming_the_culprit(
    srv: Server, name: str, params: dict[str, str], code: str | None, needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", params)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")
    # the server keeps serving
    assert srv.mount("keyferry", GOOD).files[0].contents == b"hello"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("attributes", "{not json", "attributes is not valid JSON"),
        ("attributes", '{"objects": 5}', "'objects' is a int"),
        ("attributes", "[]", "must be a JSON object"),
        ("secrets", '{"a": 1}', "every value must be a string"),
        ("permission", '"rw"', "permission"),
        ("permission", "4095", "permission"),
    ],
)
def test_malformed_requests_get_invalid_argument(
    srv: Server, field: str, value: str, needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        srv.send("keyferry", _raw(srv, **{field: value}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.value.details() or "")
    assert srv.version().version == "v1alpha1"


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff",  # a field tag whose varint never ends
        b"\x0a\x05ab",  # attributes says 5 bytes, 2 follow
        b"\x22\x02\xff\xfe",  # permission is not UTF-8
        b"\x0b",  # a group start (wire type 3) that never ends
    ],
)
def test_request_bytes_that_are_not_protobuf_get_invalid_argument(srv: Server, raw: bytes) -> None:
    with srv.channel("keyferry") as ch:
        mount = ch.unary_unary(
            "/v1alpha1.CSIDriverProvider/Mount",
            request_serializer=None,
            response_deserializer=pb.MountResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            mount(raw, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MountRequest could not be decoded" in (err.value.details() or "")
    assert srv.mount("keyferry", GOOD).files[0].contents == b"hello"


def test_version_request_bytes_that_are_not_protobuf_get_invalid_argument(srv: Server) -> None:
    with srv.channel("keyferry") as ch:
        version = ch.unary_unary(
            "/v1alpha1.CSIDriverProvider/Version",
            request_serializer=None,
            response_deserializer=pb.VersionResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            version(b"\x0a\x05ab", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "VersionRequest could not be decoded" in (err.value.details() or "")
    assert srv.version().version == "v1alpha1"


def test_empty_permission_is_invalid_argument_naming_the_field(srv: Server) -> None:
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", GOOD, permission="")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MountRequest.permission is empty" in (err.value.details() or "")
    assert srv.mount("keyferry", GOOD).files[0].contents == b"hello"


def test_malformed_tokens_json_is_rejected_without_echoing_it(srv: Server) -> None:
    request = srv.request(GOOD)
    attrs = json.loads(request.attributes)
    attrs["csi.storage.k8s.io/serviceAccount.tokens"] = '{"aud": {"token": "' + CANARY_TOKEN
    request.attributes = json.dumps(attrs)
    with pytest.raises(grpc.RpcError) as err:
        srv.send("keyferry", request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "serviceAccount.tokens" in (err.value.details() or "")
    assert CANARY_TOKEN not in (err.value.details() or "")


def test_missing_local_file_is_not_found_and_every_failure_is_listed(srv: Server) -> None:
    params = objects(
        "- {backend: local, name: nope-1}",
        "- {backend: local, name: plain.txt}",
        "- {backend: local, name: nope-2}",
    )
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", params)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    details = err.value.details() or ""
    assert "2 of 3 objects failed" in details
    assert "objects[0]" in details and "nope-1" in details
    assert "objects[2]" in details and "nope-2" in details


def test_optional_missing_object_is_skipped_and_audited(srv: Server) -> None:
    params = objects(
        "- {backend: local, name: nope, optional: true}",
        "- {backend: local, name: plain.txt}",
    )
    resp = srv.mount("keyferry", params)
    assert [f.path for f in resp.files] == ["plain.txt"]
    audit = [json.loads(line)["audit"] for line in srv.logs if '"audit"' in line]
    assert audit[-1]["skipped_optional"] == ["objects[0] (local: nope)"]
    assert 'keyferry_optional_objects_skipped_total{backend="local"} 1.0' in srv.metrics_text()


def test_all_optional_and_none_found_is_an_error_not_an_empty_success(srv: Server) -> None:
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", objects("- {backend: local, name: nope, optional: true}"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "every object is optional" in (err.value.details() or "")


def test_oversized_result_is_resource_exhausted_naming_the_largest(
    tmp_path: Path, root: Path
) -> None:
    with running_server(tmp_path, local_root=root, max_response_bytes=450_000) as s:
        params = objects(
            "- {backend: local, name: big.bin, path: one.bin}",
            "- {backend: local, name: big.bin, path: two.bin}",
            GOOD["objects"],
        )
        with pytest.raises(grpc.RpcError) as err:
            s.mount("keyferry", params)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = err.value.details() or ""
        assert "450000-byte budget" in details
        assert "one.bin (300000 bytes" in details and "two.bin (300000 bytes" in details
        assert s.mount("keyferry", GOOD).files


def test_local_backend_disabled_without_a_root(tmp_path: Path) -> None:
    with running_server(tmp_path) as s, pytest.raises(grpc.RpcError) as err:
        s.mount("keyferry", GOOD)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "local_root" in (err.value.details() or "")


def test_invalid_backend_settings_are_failed_precondition_naming_the_section(
    tmp_path: Path,
) -> None:
    # Backend sections are read when a Mount first needs them (found by test_fuzz.py:
    # this was INTERNAL "unexpected ConfigError").
    bad = {"gcp": {"secret_manager_regional_endpoint": "127.0.0.1:9"}}
    params = {"secrets": "- {resourceName: projects/p/secrets/s/versions/1, path: s}"}
    with running_server(tmp_path, providers="gcp", backends=bad) as s:
        for _ in range(2):  # and it stays so: the failed creation is not kept
            with pytest.raises(grpc.RpcError) as err:
                s.mount("gcp", params)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = err.value.details() or ""
            assert "secret_manager_regional_endpoint" in details
            assert "fix backends.gcp in the keyferry server configuration" in details


def test_slow_backend_hits_the_mount_deadline(tmp_path: Path, root: Path) -> None:
    with (
        gated_cloud() as gate,
        running_server(tmp_path, local_root=root, mount_timeout_seconds=1) as s,
    ):
        with pytest.raises(grpc.RpcError) as err:
            s.mount("keyferry", objects("- {backend: gated, name: slow}"))
        assert gate.entered == 1 and not gate.is_open
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "backend gated" in (err.value.details() or "")
        assert s.mount("keyferry", GOOD).files


def test_local_symlinks_inside_the_root_are_followed_and_those_leaving_it_refused(
    tmp_path: Path, root: Path, serve: Callable[..., Server]
) -> None:
    # The layout of a mounted Kubernetes Secret: names -> ..data/<name>, ..data -> a dir.
    (root / "..2026").mkdir()
    (root / "..2026" / "token").write_text("in-root")
    (root / "..data").symlink_to("..2026")
    (root / "token").symlink_to("..data/token")
    (root / "linked").symlink_to("db")  # a directory symlink that stays inside
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_text("outside the root")
    (root / "away").symlink_to(outside)  # a directory symlink that leaves
    srv = serve(local_root=root)
    got = srv.mount(
        "keyferry",
        objects(
            "- {backend: local, name: token, path: t}",
            "- {backend: local, name: linked/password, path: p}",
        ),
    )
    assert {f.path: f.contents for f in got.files} == {"t": b"in-root", "p": CANARY_VALUE.encode()}
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", objects("- {backend: local, name: away/secret}"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the local root" in (err.value.details() or "")


def test_a_mount_past_max_concurrent_mounts_is_refused_at_once_and_counted(
    tmp_path: Path, root: Path
) -> None:
    held_params = objects("- {backend: gated, name: held}")
    with (
        gated_cloud() as gate,
        running_server(tmp_path, local_root=root, max_concurrent_mounts=2) as s,
        ThreadPoolExecutor(2) as pool,
    ):
        held = [pool.submit(s.mount, "keyferry", held_params) for _ in range(2)]
        gate.wait_entered(2)  # two Mounts executing: the bound
        with pytest.raises(grpc.RpcError) as err:
            s.mount("keyferry", objects("- {backend: gated, name: third}"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_concurrent_mounts: 2" in (err.value.details() or "")
        assert gate.entered == 2  # refused before it reached a backend
        assert 'keyferry_mounts_rejected_total{dialect="native"} 1.0' in s.metrics_text()
        gate.open()
        assert all(len(f.result(timeout=30).files) == 1 for f in held)
        assert s.mount("keyferry", GOOD).files  # below the bound again


def test_a_mount_repeating_parameters_reuses_their_parsed_plan(srv: Server) -> None:
    for pod in ("web-0", "web-1", "web-0"):
        assert srv.mount("keyferry", GOOD, pod=("team-a", pod, f"uid-{pod}", "web")).files
    metrics = srv.metrics_text()
    assert 'keyferry_cache_events_total{cache="plans",result="miss"} 1.0' in metrics
    assert 'keyferry_cache_events_total{cache="plans",result="hit"} 2.0' in metrics


def test_a_fifo_under_the_local_root_is_refused_without_waiting_for_a_writer(
    srv: Server, root: Path
) -> None:
    os.mkfifo(root / "fifo")  # opening it for reading would block until a writer appears
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", objects("- {backend: local, name: fifo}"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'fifo' is not a regular file" in (err.value.details() or "")
    assert srv.mount("keyferry", GOOD).files


def test_secrets_never_reach_logs_or_errors(srv: Server) -> None:
    tokens = {"sts.amazonaws.com": CANARY_TOKEN}
    secrets = {"clientsecret": CANARY_NPS}
    ok = srv.mount(
        "keyferry", objects("- {backend: local, name: db/password}"), tokens=tokens, secrets=secrets
    )
    assert ok.files[0].contents == CANARY_VALUE.encode()
    messages = []
    failing = [
        objects("- {backend: local, name: db/creds.json, extract: [{path: x, jsonKey: nokey}]}"),
        objects("- {backend: local, name: db/password, extract: [{path: x, jsonKey: k}]}"),
        objects(
            "- {backend: local, name: db/creds.json, extract: [{path: x, jmesPath: user}]}",
            "- {backend: local, name: missing}",
        ),
    ]
    for params in failing:
        with pytest.raises(grpc.RpcError) as err:
            srv.mount("keyferry", params, tokens=tokens, secrets=secrets)
        messages.append(err.value.details() or "")
    haystack = "\n".join(srv.logs + messages) + srv.metrics_text()
    assert srv.logs, "expected captured log lines"
    for canary in (CANARY_VALUE, CANARY_TOKEN, CANARY_NPS):
        assert canary not in haystack


def test_grpc_health_is_served_on_the_same_socket(srv: Server) -> None:
    with srv.channel("keyferry") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "v1alpha1.CSIDriverProvider"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_http_probes_and_metrics(tmp_path: Path, root: Path) -> None:
    with running_server(tmp_path, local_root=root, http_address="127.0.0.1:0") as s:
        s.mount("keyferry", GOOD)
        with pytest.raises(grpc.RpcError):
            s.mount("keyferry", objects("- {backend: local, name: nope}"))
        assert s.http_get("/healthz") == (200, "ok\n")
        assert s.http_get("/readyz") == (200, "ok\n")
        code, text = s.http_get("/metrics")
        assert code == 200
        assert 'keyferry_mounts_total{dialect="native",outcome="ok"} 1.0' in text
        assert 'keyferry_mounts_total{dialect="native",outcome="error"} 1.0' in text
        assert (
            'keyferry_backend_requests_total{backend="local",operation="read",outcome="ok"}' in text
        )
        assert "keyferry_mount_duration_seconds_bucket" in text
        assert "plain.txt" not in text and "web-0" not in text  # no high-cardinality labels
        # readiness really goes through the socket: remove it and readiness fails
        s.socket("keyferry").unlink()
        code, text = s.http_get("/readyz")
        assert code == 503 and "keyferry" in text


def test_socket_is_private_and_every_name_gets_its_own(tmp_path: Path, root: Path) -> None:
    with running_server(tmp_path, providers="keyferry,dev=native", local_root=root) as s:
        for name in ("keyferry", "dev"):
            mode = s.socket(name).stat().st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert s.mount(name, GOOD).files[0].contents == b"hello"
    assert not (tmp_path / "sockets" / "keyferry.sock").exists()


def test_stale_socket_is_replaced_but_a_live_one_is_refused(tmp_path: Path, root: Path) -> None:
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sockets / "keyferry.sock"))
    stale.close()  # the file stays, nothing listens: a crashed provider's leftover
    with running_server(tmp_path, local_root=root) as s:
        assert s.mount("keyferry", GOOD).files
        cfg = load(None, env={}, overrides={"socket_dir": sockets, "http_address": ""})
        with pytest.raises(ConfigError, match="in use"):
            EmbeddedProvider(cfg).start()
        assert s.mount("keyferry", GOOD).files


@dataclass
class Process:
    """A real ``keyferry serve`` and the JSON lines it logged so far."""

    proc: subprocess.Popen[str]
    sockets: Path
    lines: list[dict[str, Any]] = field(default_factory=list)

    def read_until(self, msg: str) -> dict[str, Any]:
        assert self.proc.stderr is not None
        while True:
            line = self.proc.stderr.readline()
            assert line, f"keyferry ended before logging {msg!r}"
            if line.startswith("{"):
                self.lines.append(json.loads(line))
                if self.lines[-1].get("msg") == msg:
                    return self.lines[-1]

    def mount(self, name: str) -> Callable[..., Any]:
        channel = grpc.insecure_channel(f"unix:{self.sockets / name}.sock")
        return pb_grpc.CSIDriverProviderStub(channel).Mount  # type: ignore[no-any-return]


@pytest.fixture
def gated(
    tmp_path: Path, root: Path, aws_proxy: AwsFaults, kube: FakeKube
) -> Iterator[tuple[Gate, Callable[..., Process], Callable[[str], pb.MountRequest]]]:
    """A gate holding AWS's GetSecretValue; ``start(**config)`` runs ``keyferry serve``
    (native and aws sockets, AWS behind the gate); ``request(value)`` is an aws-socket
    MountRequest for a new secret holding ``value``."""
    aws_proxy.trust(ROLE, "team-a", "web")
    kube.add_service_account("team-a", "web", {"eks.amazonaws.com/role-arn": ROLE})
    sm, _ = seed_clients("us-east-1")
    token = ISSUER.pod_token("sts.amazonaws.com", "team-a", "web", pod="web-0")
    gate = Gate(aws_proxy.url, hold="GetSecretValue")
    started: list[Process] = []

    def request(value: str) -> pb.MountRequest:
        name = f"drain-{uuid.uuid4().hex[:8]}"  # distinct: identical Mounts share one call
        sm.create_secret(Name=name, SecretString=value)
        params = {"objects": f"- objectName: {name}\n  objectType: secretsmanager\n"}
        return driver_request(params, tokens={"sts.amazonaws.com": token})

    def start(**config: Any) -> Process:
        settings = {
            "socket_dir": str(tmp_path / "sockets"),
            "providers": "keyferry,aws",
            "http_address": "",
            "local_root": str(root),
            "cache_ttl_seconds": 0,
            "kubernetes": kube.settings(),
            "backends": {
                "aws": {"endpoint_url": gate.url, "region": "us-east-1", "read_timeout_seconds": 90}
            },
            **config,
        }
        path = tmp_path / "keyferry.yaml"
        path.write_text(json.dumps(settings))  # YAML is a superset of JSON
        command = [sys.executable, "-m", "provider", "serve", "--config", str(path)]
        process = Process(
            subprocess.Popen(command, stderr=subprocess.PIPE, text=True), tmp_path / "sockets"
        )
        started.append(process)
        for _ in ("keyferry", "aws"):
            process.read_until("listening")
        return process

    try:
        yield gate, start, request
    finally:
        gate.close()
        for process in started:
            if process.proc.poll() is None:
                process.proc.kill()
            process.proc.wait()
            if process.proc.stderr is not None:
                process.proc.stderr.close()


def test_sigterm_under_load_finishes_in_flight_mounts_refuses_new_ones_and_exits_zero(
    gated: tuple[Gate, Callable[..., Process], Callable[[str], pb.MountRequest]],
) -> None:
    """SIGTERM while Mounts wait inside their backend call: new Mounts are refused with
    UNAVAILABLE (the driver retries those), the ones in flight finish with their files
    within the grace period, the sockets go and the exit code is 0."""
    gate, start, request = gated
    server = start(grace_seconds=60)  # the test opens the gate well before that
    mount_aws, mount_local = server.mount("aws"), server.mount("keyferry")
    assert mount_local(driver_request(GOOD), timeout=30).files[0].contents == b"hello"
    values = [f"drained {i}" for i in range(3)]
    with ThreadPoolExecutor(len(values)) as pool:
        running = [pool.submit(mount_aws, request(v), timeout=90) for v in values]
        gate.wait_held(len(values))  # every one of them waits inside its AWS call

        server.proc.send_signal(signal.SIGTERM)
        assert server.read_until("signal received; draining")["in_flight"] == len(values)
        refused = rpc_error_of(mount_local, driver_request(GOOD))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (refused.details() or "")
        assert all(not f.done() for f in running)

        gate.open()  # the backend answers: the Mounts in flight finish
        assert [f.result().files[0].contents.decode() for f in running] == values
    assert server.proc.wait(timeout=60) == 0
    assert not list(server.sockets.iterdir())
    server.read_until("stopped")
    audit = [e["audit"] for e in server.lines if e.get("msg") == "mount"]
    assert [a["outcome"] for a in audit].count("ok") == 1 + len(values)
    assert {a.get("code") for a in audit if a["outcome"] == "error"} == {"UNAVAILABLE"}


def test_a_mount_stuck_past_the_grace_period_is_cut_off_and_keyferry_still_exits_zero(
    gated: tuple[Gate, Callable[..., Process], Callable[[str], pb.MountRequest]],
) -> None:
    gate, start, request = gated
    server = start(grace_seconds=0.5)
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(server.mount("aws"), request("never"), timeout=90)
        gate.wait_held(1)
        server.proc.send_signal(signal.SIGTERM)
        # the gate stays shut: the backend call never returns
        with pytest.raises(grpc.RpcError) as cut:
            stuck.result()
        assert cut.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert server.proc.wait(timeout=30) == 0  # without waiting for the stuck call
    assert not list(server.sockets.iterdir())
    server.read_until("stopped")


def rpc_error_of(call: Callable[..., Any], request: pb.MountRequest) -> grpc.RpcError:
    """The error a new call gets once the server refuses them. Until the signal got that
    far one may still be served, so ask until one is refused (bounded)."""
    for _ in range(400):
        try:
            call(request, timeout=10)
        except grpc.RpcError as err:
            return err
        time.sleep(0.02)
    pytest.fail("new calls were still served while draining")


# -- hostile parameters and documents, log integrity ----------------------------------

HELLO = "- {backend: local, name: plain.txt, path: plain.txt}"


def rpc_error(srv: Server, params: dict[str, str], **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("keyferry", params, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_alias_amplified_parameter_gets_a_short_invalid_argument_over_grpc(
    srv: Server,
) -> None:
    # 10**4-fold: small enough to finish, big enough that the echoed repr() overflows
    # gRPC's metadata limit, so the driver sees RESOURCE_EXHAUSTED, not the cause.
    err = rpc_error(srv, {"objects": alias_bomb(4, "decode", LOCAL_HEAD)})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert len(err.details() or "") < 4096
    assert srv.version().version == "v1alpha1"


def test_deeply_nested_parameters_get_invalid_argument_over_grpc(srv: Server) -> None:
    err = rpc_error(srv, {"objects": DEEP})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "objects" in (err.details() or "")
    assert srv.version().version == "v1alpha1"


@pytest.mark.parametrize(
    ("name", "extract"),
    [
        ("bigint.json", "jsonKey: user"),
        ("bigint.json", "jmesPath: user"),
        ("badfloat.yaml", "yamlKey: user"),
    ],
    ids=["json-5000-digits", "jmespath-5000-digits", "yaml-bad-float"],
)
def test_unparseable_secret_document_fails_that_object_with_invalid_argument(
    srv: Server, name: str, extract: str
) -> None:
    # A ValueError that is not a JSONDecodeError/YAMLError escapes render() and turns
    # the whole mount into an anonymous INTERNAL "incident" instead of naming the object.
    err = rpc_error(
        srv, {"objects": f"- {{backend: local, name: {name}, extract: [{{path: x, {extract}}}]}}"}
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert name in (err.details() or "")


@pytest.mark.parametrize(
    ("name", "extract", "written"),
    [
        # yaml.v3 reads a number beyond float range as text, so the document is valid.
        ("bigint.yaml", "yamlKey: user", b"app"),
        # Go's encoding/json writes U+FFFD for a lone surrogate escape.
        ("surrogate.json", "jsonKey: user", b"\xef\xbf\xbd"),
    ],
)
def test_documents_the_official_providers_read_are_written_like_them(
    srv: Server, name: str, extract: str, written: bytes
) -> None:
    resp = srv.mount(
        "keyferry",
        {"objects": f"- {{backend: local, name: {name}, extract: [{{path: x, {extract}}}]}}"},
    )
    assert [(f.path, f.contents) for f in resp.files] == [("x", written)]


def test_overlong_local_name_is_a_user_error_not_internal(srv: Server) -> None:
    err = rpc_error(srv, {"objects": "- {backend: local, name: " + "a" * 300 + ", path: x}"})
    assert err.code() is not grpc.StatusCode.INTERNAL, err.details()


def test_one_tenants_secret_values_cannot_blank_another_tenants_audit_record(
    srv: Server,
) -> None:
    # Tenant A puts the string "team-b" in its nodePublishSecretRef Secret; the global
    # redactor then scrubs it from every later log line, hiding team-b's mounts.
    srv.mount("keyferry", {"objects": HELLO}, secrets={"anything": "team-b"})
    srv.mount(
        "keyferry",
        {"objects": HELLO},
        pod=("team-b", "api-0", "22222222-2222-3333-4444-555555555555", "api"),
    )
    records = [json.loads(line)["audit"] for line in srv.logs if '"audit"' in line]
    assert records[-1]["pod"]["namespace"] == "team-b"
