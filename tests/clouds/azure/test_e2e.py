"""End to end: a driver-shaped MountRequest over the real gRPC server on the
``azure`` socket (drop-in dialect) and the ``keyferry`` socket (native dialect),
with the real Azure SDKs talking to the fake Key Vault and Entra ID."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.azure_certs import chain, jwk, new_key, public_pem
from keyferry_fakes.harness import Server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER, Issuer

AUD = "api://AzureADTokenExchange"
POD = ("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")


def objects(*items: str) -> str:
    out = ["array:"]
    for item in items:
        out.append("  - |")
        out.extend("    " + line for line in item.strip().splitlines())
    return "\n".join(out) + "\n"


@pytest.fixture
def srv(serve: Callable[..., Server], fake: FakeAzure, kube: FakeKube) -> Server:
    return serve(
        providers="keyferry,azure",
        backends={"azure": fake.settings(retry_backoff_factor=0.01)},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )


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
    attempts = 'keyferry_backend_attempts_total{backend="azure",operation="get_secret"'
    assert f'{attempts},outcome="throttled"}} 1.0' in text
    assert f'{attempts},outcome="ok"}} 1.0' in text


def test_secret_material_never_reaches_logs(srv: Server, fake: FakeAzure) -> None:
    fake.entra.add_client_secret("sp-app", "very-secret-value")
    fake.vault.grant("kv1", "secrets", "sp-app")
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


# -- identity and access refused by the fakes, through a keyferry Mount ------------------------

OTHER_TENANT = "0c6a1f3e-5d2b-4e8f-9a7c-1b2d3e4f5a6b"
DB = objects("objectName: db\nobjectType: secret")


def refused(srv: Server, params: dict[str, str], **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, params, **kw)
    return info.value


def test_service_account_without_federated_credential_names_the_one_to_create(
    srv: Server, fake: FakeAzure
) -> None:
    fake.vault.add_secret("kv1", "db", "x")
    pod = ("team-b", "api-0", "22222222-2222-3333-4444-555555555555", "api")
    err = refused(
        srv,
        {"keyvaultName": "kv1", "tenantID": TENANT, "clientID": "app-1", "objects": DB},
        tokens={AUD: pod_token("team-b", "api")},
        pod=pod,
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    details = err.details() or ""
    assert "AADSTS70021" in details and "federated identity credential" in details
    assert "app-1" in details
    assert f"'{ISSUER.url}'" in details
    assert "'system:serviceaccount:team-b:api'" in details
    assert f"'{AUD}'" in details
    assert fake.entra.errors[70021] == 1 and fake.entra.issued == {}


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda: Issuer().pod_token(AUD, "team-a", "web"), "AADSTS700027"),
        (lambda: pod_token(lifetime=-120), "AADSTS700024"),
    ],
    ids=["signed-by-another-cluster", "expired"],
)
def test_pod_token_entra_cannot_verify_is_unauthenticated(
    srv: Server, fake: FakeAzure, token: Any, code: str
) -> None:
    err = refused(
        srv,
        {"keyvaultName": "kv1", "tenantID": TENANT, "clientID": "app-1", "objects": DB},
        tokens={AUD: token()},
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert code in (err.details() or "")
    assert fake.entra.errors[int(code[6:])] == 1


@pytest.mark.parametrize("rbac", [True, False], ids=["rbac", "access-policy"])
def test_identity_without_vault_access_is_permission_denied_naming_the_grant(
    srv: Server, fake: FakeAzure, rbac: bool
) -> None:
    fake.vault.rbac = rbac
    fake.vault.add_secret("kv1", "db", "x")
    fake.entra.federate("app-2", "team-a", "web")  # federated, but no access to kv1
    err = refused(
        srv, {"keyvaultName": "kv1", "tenantID": TENANT, "clientID": "app-2", "objects": DB}
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    details = err.details() or ""
    assert "secret 'db' in vault 'kv1'" in details and "app-2" in details
    if rbac:
        assert "ForbiddenByRbac" in details and "'Key Vault Secrets User'" in details
    else:
        assert "AccessDenied" in details and "add get permission on secrets" in details
    assert fake.vault.refused[403] >= 1


def test_class_tenant_other_than_the_vaults_is_unauthenticated(
    srv: Server, fake: FakeAzure
) -> None:
    fake.vault.tenants["kv-b"] = OTHER_TENANT
    fake.vault.grant_reader("kv-b", "app-1")
    fake.vault.add_secret("kv-b", "db", "x")
    err = refused(
        srv, {"keyvaultName": "kv-b", "tenantID": TENANT, "clientID": "app-1", "objects": DB}
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    details = err.details() or ""
    assert "AKV10032" in details and "tenantID" in details
    assert fake.vault.refused[401] >= 1


@pytest.mark.parametrize(
    "identity",
    [
        {"params": {"clientID": "app-1"}, "secrets": None},
        {"params": {}, "secrets": {"clientid": "sp-app", "clientsecret": "very-secret-value"}},
    ],
    ids=["workload-identity", "service-principal"],
)
def test_unknown_tenant_names_tenant_id(
    srv: Server, fake: FakeAzure, identity: dict[str, Any]
) -> None:
    fake.entra.add_client_secret("sp-app", "very-secret-value")
    err = refused(
        srv,
        {"keyvaultName": "kv1", "tenantID": OTHER_TENANT, "objects": DB, **identity["params"]},
        secrets=identity["secrets"],
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED, err.details()
    details = err.details() or ""
    assert "AADSTS90002" in details and "check tenantID" in details
    assert "very-secret-value" not in details and "sp-app" not in details
    assert fake.entra.errors[90002] == 1


# -- a bad tenantID from the class -------------------------------------------------------


@pytest.mark.parametrize(
    "identity",
    [
        {"params": {"clientID": "app-1"}, "secrets": None},
        {"params": {}, "secrets": {"clientid": "sp-1", "clientsecret": "CANARY-sp-secret-1"}},
    ],
    ids=["workload-identity", "service-principal"],
)
def test_azure_tenant_id_with_path_characters_is_rejected_before_any_token_is_sent(
    srv: Server, fake: FakeAzure, identity: dict[str, Any]
) -> None:
    # tenantID goes unchecked into the Entra token URL: with workload identity the pod's
    # service-account token is POSTed to "/steal/oauth2/v2.0/token" on the authority
    # host; with a service principal azure-identity raises ValueError -> INTERNAL.
    fake.vault.add_secret("kv1", "db", "pw")
    with pytest.raises(grpc.RpcError) as info:
        srv.mount(
            "azure",
            {
                "keyvaultName": "kv1",
                "tenantID": "x/../../steal",
                "objects": objects("objectName: db\nobjectType: secret"),
                **identity["params"],
            },
            tokens={AUD: pod_token()},
            pod=POD,
            secrets=identity["secrets"],
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "tenantID" in (info.value.details() or "")
    assert fake.entra.token_requests == 0
    assert not [r for r in fake.entra.requests if "steal" in r]


def test_azure_good_tenant_still_mounts(srv: Server, fake: FakeAzure) -> None:
    """Regression guard for the tenantID test above: the same class with the real tenant
    works."""
    fake.vault.add_secret("kv1", "db", "pw")
    resp = srv.mount(
        "azure",
        {
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "clientID": "app-1",
            "objects": objects("objectName: db\nobjectType: secret"),
        },
        tokens={AUD: pod_token()},
        pod=POD,
    )
    assert [(f.path, f.contents) for f in resp.files] == [("db", b"pw")]


def test_azure_credentials_of_one_service_account_are_not_reused_for_another(
    srv: Server, fake: FakeAzure
) -> None:
    """Regression guard: same clientID and tenant, a different pod ServiceAccount whose
    subject the federated credential does not trust, right after a successful mount
    that left a cached Entra token behind."""
    fake.vault.add_secret("kv1", "db", "pw")
    params = {
        "keyvaultName": "kv1",
        "tenantID": TENANT,
        "clientID": "app-1",
        "objects": objects("objectName: db\nobjectType: secret"),
    }
    ok = srv.mount("azure", params, tokens={AUD: pod_token()}, pod=POD)
    assert [f.contents for f in ok.files] == [b"pw"]
    assert fake.entra.token_requests == 1
    other = ("team-b", "api-0", "33333333-2222-3333-4444-555555555555", "web")
    with pytest.raises(grpc.RpcError) as info:
        srv.mount("azure", params, tokens={AUD: pod_token("team-b", "web")}, pod=other)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Entra itself refused it (no cached token answered in its place): team-b/web has no
    # federated credential on app-1.
    assert fake.entra.errors[70021] == 1
    assert "system:serviceaccount:team-b:web" in (info.value.details() or "")
    # ...and a token for the right subject cannot be replayed under another pod's identity.
    with pytest.raises(grpc.RpcError) as replay:
        srv.mount("azure", params, tokens={AUD: pod_token()}, pod=other)
    assert replay.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_mount_keeps_its_key_vault_connections_for_the_next_one(
    srv: Server, fake: FakeAzure
) -> None:
    """24 secrets are read at once (the fake holds each read until 24 wait), over 24
    connections; the next Mount reuses them all. azure-core's default pool kept 10 and
    closed the rest, so every Mount wider than 10 opened connections (and TLS) anew."""
    names = [f"held-{i}" for i in range(24)]
    for name in names:
        fake.vault.add_secret("kv1", name, f"value of {name}")
    params = {
        "keyvaultName": "kv1",
        "tenantID": TENANT,
        "clientID": "app-1",
        "objects": objects(*(f"objectName: {n}\nobjectType: secret" for n in names)),
    }
    fake.vault.hold(len(names), prefix="held-")
    assert len(mount(srv, params).files) == 24
    opened = fake.vault.connections
    assert opened >= 24
    assert len(mount(srv, params).files) == 24  # the value cache is off: 24 reads again
    assert fake.vault.connections == opened
