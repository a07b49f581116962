"""End to end: a driver-shaped MountRequest over the real gRPC server on the
``azure`` socket (drop-in dialect) and the ``keyferry`` socket (native dialect),
with the real Azure SDKs talking to the fake Key Vault and Entra ID."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.fakes.azure import TENANT, FakeAzure, fake_azure, pod_token
from tests.fakes.azure_certs import chain, jwk, new_key, public_pem
from tests.fakes.kube import FakeKube
from tests.harness import Server, running_server

AUD = "api://AzureADTokenExchange"
POD = ("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")


def objects(*items: str) -> str:
    out = ["array:"]
    for item in items:
        out.append("  - |")
        out.extend("    " + line for line in item.strip().splitlines())
    return "\n".join(out) + "\n"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeAzure]:
    with fake_azure(str(tmp_path)) as fa:
        fa.entra.federate("app-1", "team-a", "web")
        yield fa


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    k = FakeKube()
    yield k
    k.close()


@pytest.fixture
def srv(tmp_path: Path, fake: FakeAzure, kube: FakeKube) -> Iterator[Server]:
    with running_server(
        tmp_path,
        providers="keyferry,azure",
        backends={"azure": fake.settings(retry_backoff_factor=0.01)},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as s:
        yield s


def mount(srv: Server, params: dict[str, str], socket: str = "azure", **kw: Any) -> Any:
    kw.setdefault("tokens", {AUD: pod_token()})
    kw.setdefault("pod", POD)
    return srv.mount(socket, params, **kw)


def files(resp: Any) -> dict[str, tuple[bytes, int]]:
    return {f.path: (f.contents, f.mode) for f in resp.files}


def versions(resp: Any) -> dict[str, str]:
    return {v.id: v.version for v in resp.object_version}


def test_drop_in_class_writes_upstream_files_bytes_ids_and_versions(
    srv: Server, fake: FakeAzure
) -> None:
    vault = fake.vault
    v_secret = vault.add_secret("kv1", "db-password", "hunter2")
    v_b64 = vault.add_secret("kv1", "blob", base64.b64encode(b"\x00\xffbin").decode())
    key = new_key("p384")
    v_key = vault.add_key("kv1", "signing", jwk(key))
    ch = chain("rsa")
    der = ch.leaf.public_bytes(Encoding.DER)
    pfx = ch.pfx_value([ch.root, ch.inter])
    v_cert = vault.add_certificate("kv1", "web", der, secret_value=pfx)
    hist = [vault.add_secret("kv1", "rotating", f"r{i}") for i in range(4)]

    resp = mount(
        srv,
        {
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "clientID": "app-1",
            "objects": objects(
                "objectName: db-password\nobjectType: secret",
                "objectName: blob\nobjectType: secret\nobjectEncoding: base64\n"
                "filePermission: 0600",
                "objectName: signing\nobjectType: key\nobjectAlias: keys/signing.pem",
                "objectName: web\nobjectType: cert\nobjectAlias: web.crt",
                "objectName: web\nobjectType: secret\nobjectAlias: web.pem",
                "objectName: web\nobjectType: secret\nobjectAlias: web.pfx\nobjectFormat: pfx",
                "objectName: rotating\nobjectType: secret\nobjectVersionHistory: 2",
            ),
        },
    )
    got = files(resp)
    assert got == {
        "db-password": (b"hunter2", 0o644),
        "blob": (b"\x00\xffbin", 0o600),
        "keys/signing.pem": (public_pem(key), 0o644),
        "web.crt": (ch.pem(ch.leaf), 0o644),
        "web.pem": (ch.key_pem() + ch.ordered_pem(), 0o644),
        "web.pfx": (pfx.encode(), 0o644),
        "rotating/0": (b"r3", 0o644),
        "rotating/1": (b"r2", 0o644),
    }
    assert versions(resp) == {
        "secret/db-password": v_secret,
        "secret/blob": v_b64,
        "key/signing": v_key,
        "cert/web": v_cert,
        "secret/web": v_cert,
        "secret/rotating/0": hist[3],
        "secret/rotating/1": hist[2],
    }


def test_history_with_fewer_versions_than_asked(srv: Server, fake: FakeAzure) -> None:
    v = fake.vault.add_secret("kv1", "only", "one")
    resp = mount(
        srv,
        {
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "clientID": "app-1",
            "objects": objects("objectName: only\nobjectType: secret\nobjectVersionHistory: 3"),
        },
    )
    assert files(resp) == {"only/0": (b"one", 0o644)}
    assert versions(resp) == {"secret/only/0": v}
    # empty history slots are by design, not missing optional objects
    audit = [json.loads(line)["audit"] for line in srv.logs if '"audit"' in line]
    assert "skipped_optional" not in audit[-1]
    assert "keyferry_optional_objects_skipped_total{" not in srv.metrics_text()


def test_bad_class_is_one_invalid_argument_before_any_network_call(
    srv: Server, fake: FakeAzure
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        mount(
            srv,
            {
                "keyvaultName": "kv1",
                "tenantID": TENANT,
                "clientID": "app-1",
                "objects": objects(
                    "objectName: a\nobjectType: secrets",
                    "objectName: b\nobjectType: key\nobjectFormat: pfx",
                    "objectName: c\nobjectType: secret\nobjectEncoding: base32",
                    "objectName: d\nobjectType: secret\nfilePermission: rw",
                    "objectName: e\nobjectType: secret\nobjectAlias: ../../etc/x",
                ),
            },
        )
    err = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    for i in range(5):
        assert f"objects[{i}]" in (err.details() or "")
    assert fake.vault.requests == {} and fake.entra.token_requests == 0


def test_missing_object_is_not_found_and_names_it(srv: Server, fake: FakeAzure) -> None:
    fake.vault.add_secret("kv1", "here", "x")
    with pytest.raises(grpc.RpcError) as info:
        mount(
            srv,
            {
                "keyvaultName": "kv1",
                "tenantID": TENANT,
                "clientID": "app-1",
                "objects": objects(
                    "objectName: here\nobjectType: secret",
                    "objectName: gone\nobjectType: secret",
                ),
            },
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "secret 'gone' in vault 'kv1'" in (info.value.details() or "")


def test_client_and_tenant_from_service_account_annotations(
    srv: Server, fake: FakeAzure, kube: FakeKube
) -> None:
    kube.add_service_account(
        "team-a",
        "web",
        {
            "azure.workload.identity/client-id": "app-1",
            "azure.workload.identity/tenant-id": TENANT,
        },
    )
    fake.vault.add_secret("kv1", "db", "from-annotations")
    resp = mount(
        srv,
        {"keyvaultName": "kv1", "objects": objects("objectName: db\nobjectType: secret")},
    )
    assert files(resp) == {"db": (b"from-annotations", 0o644)}


def test_missing_token_audience_names_token_requests(srv: Server, fake: FakeAzure) -> None:
    with pytest.raises(grpc.RpcError) as info:
        mount(
            srv,
            {
                "keyvaultName": "kv1",
                "tenantID": TENANT,
                "clientID": "app-1",
                "objects": objects("objectName: db\nobjectType: secret"),
            },
            tokens={},
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "tokenRequests" in (info.value.details() or "")


def test_native_certificate_as_separate_tls_files(srv: Server, fake: FakeAzure) -> None:
    ch = chain("p256")
    der = ch.leaf.public_bytes(Encoding.DER)
    fake.vault.add_certificate("kv1", "web", der, secret_value=ch.pfx_value([ch.inter, ch.root]))
    common = (
        f"vault: kv1\n  name: web\n  type: certificate\n  tenantID: {TENANT}\n  clientID: app-1"
    )
    resp = mount(
        srv,
        {
            "objects": (
                f"- backend: azure\n  {common}\n  format: fullchain\n  path: tls.crt\n"
                f"- backend: azure\n  {common}\n  format: key\n  path: tls.key\n  mode: '0600'\n"
                f"- backend: azure\n  {common}\n  format: cert\n  path: leaf.crt\n"
            )
        },
        socket="keyferry",
    )
    assert files(resp) == {
        "tls.crt": (ch.ordered_pem(), 0o644),
        "tls.key": (ch.key_pem(), 0o600),
        "leaf.crt": (ch.pem(ch.leaf), 0o644),
    }
    # tls.crt and tls.key came from one read of the backing secret (plus the challenge).
    assert sum(n for p, n in fake.vault.requests.items() if "/secrets/web" in p) <= 2


def test_throttling_is_visible_in_metrics(srv: Server, fake: FakeAzure) -> None:
    fake.vault.add_secret("kv1", "db", "x")
    fake.vault.inject(429, 1, retry_after="1", path="/secrets/db")
    resp = mount(
        srv,
        {
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "clientID": "app-1",
            "objects": objects("objectName: db\nobjectType: secret"),
        },
    )
    assert files(resp) == {"db": (b"x", 0o644)}
    text = srv.metrics_text()
    assert (
        'keyferry_backend_requests_total{backend="azure",operation="http",outcome="throttled"} 1.0'
        in text
    )


def test_secret_material_never_reaches_logs(srv: Server, fake: FakeAzure) -> None:
    fake.entra.add_client_secret("sp-app", "very-secret-value")
    fake.vault.add_secret("kv1", "db", "top-secret-content")
    token = pod_token()
    resp = mount(
        srv,
        {
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "objects": objects("objectName: db\nobjectType: secret"),
        },
        secrets={"clientid": "sp-app", "clientsecret": "very-secret-value"},
        tokens={AUD: token},
    )
    assert files(resp) == {"db": (b"top-secret-content", 0o644)}
    joined = "\n".join(srv.logs)
    for needle in ("very-secret-value", "top-secret-content", token):
        assert needle not in joined
