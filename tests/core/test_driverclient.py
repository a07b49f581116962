"""keyferry as the real Secrets Store CSI Driver sees it.

Every scenario runs the driver's own provider client (v1.6.0, built unchanged: its
dialer, service config, 4 MiB receive limit, ``MountContent``, file validation and
atomic writer; see tests/driver.py) against keyferry served on a real Unix socket,
with the real cloud SDKs talking to the fakes, and asserts what the driver WROTE
into the target directory: bytes, per-file modes, the ``..data`` symlink layout and
nothing else, the object versions the driver records, and on failure the gRPC
status the driver got. A rotation is a remount into the same target with the
recorded versions, as the driver's rotation reconciler does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, overload

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.azure import TENANT, FakeAzure
from keyferry_fakes.azure_certs import chain, jwk, new_key, public_pem
from keyferry_fakes.gcp import GoogleStack
from keyferry_fakes.harness import DEFAULT_POD, running_server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from provider.cli import manifest
from tests import REPO
from tests.clouds.aws.test_e2e import irsa
from tests.clouds.aws.test_roles import OTHER_ACCOUNT, TARGET, assume_calls, cross_account_secret
from tests.clouds.aws.test_templates import server as aws_server
from tests.driver import Mounted, Volume, mount, requires_driverclient, volume

pytestmark = requires_driverclient

EXAMPLES = REPO / "examples"
NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
ROLE = "arn:aws:iam::123456789012:role/web"
GSA = "web@my-project.iam.gserviceaccount.com"
AZURE_AUD = "api://AzureADTokenExchange"
AZURE_CLIENT = "11111111-1111-1111-1111-111111111111"  # examples/azure's clientID
AWS_AUD = "sts.amazonaws.com"


def example(path: str) -> dict[str, str]:
    (spc,) = list(manifest.load(EXAMPLES / path))
    assert not isinstance(spc, Exception)
    return dict(spc.parameters)


def assert_unchanged(target: Path, before: Volume, again: Mounted) -> None:
    """A remount with nothing changed: same bytes, so the driver keeps ``..data``
    (its writer compares contents; keyferry's output must be byte-stable)."""
    assert again.ok, again.error
    assert volume(target) == before


def assert_swapped(target: Path, before: Volume, after: Volume) -> None:
    """The driver wrote a new timestamped directory, pointed ``..data`` at it and
    removed the old one (volume() already checked nothing else is left)."""
    assert after.data_dir != before.data_dir
    assert not (target / before.data_dir).exists()


def remount(
    sock: Path,
    params: dict[str, str],
    target: Path,
    previous: Mounted,
    tokens: dict[str, str] | None = None,
) -> Mounted:
    """The driver's rotation: the same class into the same target, with the versions it
    recorded at the last mount as ``currentObjectVersion``."""
    return mount(
        sock, params, target, pod=DEFAULT_POD, tokens=tokens, old_versions=previous.object_versions
    )


def first_mount(
    sock: Path, params: dict[str, str], target: Path, tokens: dict[str, str] | None = None
) -> tuple[Mounted, Volume]:
    """The pod's first mount, which must succeed, and the volume the driver wrote."""
    first = mount(sock, params, target, pod=DEFAULT_POD, tokens=tokens)
    assert first.ok, first.error
    return first, volume(target)


def rotate(
    sock: Path,
    params: dict[str, str],
    target: Path,
    previous: Mounted,
    before: Volume,
    tokens: dict[str, str] | None = None,
) -> tuple[Mounted, Volume]:
    """A rotation that changed something: it succeeds and the driver swaps ``..data``."""
    again = remount(sock, params, target, previous, tokens)
    assert again.ok, again.error
    after = volume(target)
    assert_swapped(target, before, after)
    return again, after


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account(
        NS,
        KSA,
        {
            "eks.amazonaws.com/role-arn": ROLE,
            "iam.gke.io/gcp-service-account": GSA,
        },
    )
    return kube


@pytest.fixture
def proxy(aws_proxy: AwsFaults) -> AwsFaults:
    aws_proxy.trust(ROLE, NS, KSA)  # the role's trust policy names the pod's ServiceAccount
    return aws_proxy


# -- socket keyferry -----------------------------------------------------------------


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "demo" / "secrets", root)
    return root


DEMO_FILES = {
    "db/credentials.json": (
        b'{"username": "app", "password": "s3cr3t-demo", "host": "db.demo.svc"}\n',
        0o640,
    ),
    "db/password": (b"s3cr3t-demo", 0o600),
    "db/host": (b"db.demo.svc", 0o640),  # an extract's mode defaults to its object's
    "api-key": (b"demo-api-key-1234", 0o600),
    "db/username": (b"demo-user", 0o644),  # the driver's permission "420"
}


def test_keyferry_demo_class_and_rotation(tmp_path: Path, demo_root: Path, kube: FakeKube) -> None:
    params = example("demo/secretproviderclass.yaml")
    target = tmp_path / "target"
    with running_server(
        tmp_path, local_root=demo_root, kubernetes=kube.settings(), cache_ttl_seconds=0
    ) as srv:
        sock = srv.socket("keyferry")
        first, before = first_mount(sock, params, target)
        assert before.files == DEMO_FILES
        assert sorted(p.name for p in target.iterdir() if p.is_symlink()) == [
            "..data",
            "api-key",
            "db",
        ]
        assert first.written == {p: f"0{m:o}" for p, (_, m) in DEMO_FILES.items()}
        versions = first.object_versions
        assert sorted(versions) == ["api-key", "db/credentials.json", "db/username"]
        assert all(v.startswith("hmac-sha256:") for v in versions.values())
        assert "s3cr3t" not in json.dumps(versions)
        again = remount(sock, params, target, first)
        assert_unchanged(target, before, again)
        assert again.object_versions == versions

        (demo_root / "api-key.b64").write_text(base64.b64encode(b"demo-api-key-5678").decode())
        second, after = rotate(sock, params, target, first, before)
        assert after.files == {**DEMO_FILES, "api-key": (b"demo-api-key-5678", 0o600)}
        rotated = {k for k in versions if second.object_versions[k] != versions[k]}
        assert rotated == {"api-key"}
    assert sum(kube.requests.values()) == 0  # the local backend needs no identity


def test_keyferry_native_class_mixing_local_and_aws(
    tmp_path: Path, demo_root: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients("eu-west-1")
    name = f"prod/db-{uuid.uuid4().hex[:8]}"
    made = sm.create_secret(Name=name, SecretString='{"user": "app", "password": "pw-1"}')
    params = {
        "objects": f"""
- backend: local
  name: db/username
  path: local/username
- backend: aws
  service: secretsmanager
  name: {name}
  region: eu-west-1
  path: db/credentials.json
  extract:
    - path: db/password
      jmesPath: password
      mode: "0400"
"""
    }
    token = ISSUER.pod_token(AWS_AUD, NS, KSA)
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,aws",
        backends={"aws": {"endpoint_url": proxy.url}},
        local_root=demo_root,
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        sock = srv.socket("keyferry")
        first, before = first_mount(sock, params, target, {AWS_AUD: token})
        assert before.files == {
            "local/username": (b"demo-user", 0o644),
            "db/credentials.json": (b'{"user": "app", "password": "pw-1"}', 0o644),
            "db/password": (b"pw-1", 0o400),
        }
        assert first.object_versions["db/credentials.json"] == made["VersionId"]
        assert sorted(first.object_versions) == ["db/credentials.json", "local/username"]
        (sts,) = proxy.sts_calls()
        assert sts["WebIdentityToken"] == token and sts["RoleArn"] == ROLE
        again = remount(sock, params, target, first, {AWS_AUD: token})
        assert_unchanged(target, before, again)
        assert again.object_versions == first.object_versions

        put = sm.put_secret_value(SecretId=name, SecretString='{"user": "app", "password": "pw-2"}')
        second, after = rotate(sock, params, target, first, before, {AWS_AUD: token})
        assert after.files["db/password"] == (b"pw-2", 0o400)
        assert after.files["local/username"] == before.files["local/username"]
        assert second.object_versions == {
            "db/credentials.json": put["VersionId"],
            "local/username": first.object_versions["local/username"],
        }


def test_keyferry_invalid_class_fails_the_mount_and_writes_nothing(
    tmp_path: Path, demo_root: Path, kube: FakeKube
) -> None:
    good = example("demo/secretproviderclass.yaml")
    target = tmp_path / "target"
    with running_server(tmp_path, local_root=demo_root, kubernetes=kube.settings()) as srv:
        sock = srv.socket("keyferry")
        bad = mount(
            sock,
            {"objects": "- backend: local\n  name: db/username\n  pth: x\n"},
            target,
            pod=DEFAULT_POD,
        )
        assert not bad.ok and bad.error_code == "GRPCProviderError"
        assert bad.code == "InvalidArgument"
        assert "unknown key 'pth' (did you mean 'path'?)" in bad.message
        assert bad.object_versions == {} and list(target.iterdir()) == []

        # a failing remount (the object is gone) leaves the mounted volume as it was
        assert mount(sock, good, target, pod=DEFAULT_POD).ok
        before = volume(target)
        (demo_root / "api-key.b64").unlink()
        gone = mount(sock, good, target, pod=DEFAULT_POD)
        assert not gone.ok and gone.code == "NotFound"
        assert "api-key.b64" in gone.message
        assert volume(target) == before


DRIVER_RECV_LIMIT = 4 * 1024 * 1024  # the driver's default --max-call-recv-msg-size


def test_keyferry_response_budget_is_the_drivers_receive_limit(
    tmp_path: Path, kube: FakeKube
) -> None:
    """keyferry's size budget counts the encoded MountResponse exactly: the largest
    response it allows is accepted by the driver, and one byte more, which the
    driver would refuse with an opaque gRPC error, is refused by keyferry naming
    the file and the fix."""
    root = tmp_path / "root"
    root.mkdir()
    params = {"objects": "- backend: local\n  name: big\n"}
    with running_server(tmp_path, local_root=root, kubernetes=kube.settings()) as srv:
        sock = srv.socket("keyferry")
        (root / "big").write_bytes(b"x" * DRIVER_RECV_LIMIT)
        over = mount(sock, params, tmp_path / "probe", pod=DEFAULT_POD)
        assert over.code == "ResourceExhausted", over.grpc_error
        m = re.search(
            r"the mount would return (\d+) bytes, over the 4194304-byte budget", over.message
        )
        assert m is not None, over.message
        assert "big (4194304 bytes, objects[0] (local: big))" in over.message
        largest = DRIVER_RECV_LIMIT - (int(m.group(1)) - DRIVER_RECV_LIMIT)

        (root / "big").write_bytes(b"y" * largest)
        fits = mount(sock, params, tmp_path / "fits", pod=DEFAULT_POD)
        assert fits.ok, fits.error
        assert volume(tmp_path / "fits").files == {"big": (b"y" * largest, 0o644)}

        (root / "big").write_bytes(b"y" * (largest + 1))
        refused = mount(sock, params, tmp_path / "refused", pod=DEFAULT_POD)
        assert refused.code == "ResourceExhausted"
        assert "would return 4194305 bytes" in refused.message
        assert list((tmp_path / "refused").iterdir()) == []
    # and the driver does enforce that limit: with keyferry's budget raised, the
    # same response reaches it and the mount fails there
    with running_server(
        tmp_path / "raised",
        local_root=root,
        kubernetes=kube.settings(),
        max_response_bytes=2 * DRIVER_RECV_LIMIT,
    ) as srv:
        driver_side = mount(srv.socket("keyferry"), params, tmp_path / "raised-t", pod=DEFAULT_POD)
    assert not driver_side.ok and driver_side.code == "ResourceExhausted"
    assert "received message larger than max (4194305 vs. 4194304)" in driver_side.message


# -- socket aws ----------------------------------------------------------------------


def aws_class(secret: str, parameter: str) -> dict[str, str]:
    """examples/aws/jmespath.yaml's object, plus an SSM parameter, with a region."""
    (obj,) = yaml.safe_load(example("aws/jmespath.yaml")["objects"])
    obj["objectName"] = secret
    return {
        "region": "eu-west-3",
        "objects": json.dumps(
            [obj, {"objectName": parameter, "objectType": "ssmparameter", "objectAlias": "flags"}]
        ),
    }


def test_aws_official_class_with_irsa_and_rotation(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    sm, ssm = seed_clients("eu-west-3")
    secret = f"MySecret-{uuid.uuid4().hex[:8]}"
    parameter = f"/app/flags-{uuid.uuid4().hex[:8]}"
    made = sm.create_secret(
        Name=secret, SecretString='{"username": "testuser", "password": "testpassword"}'
    )
    ssm.put_parameter(Name=parameter, Value="blue=on", Type="SecureString")
    params = aws_class(secret, parameter)
    token = ISSUER.pod_token(AWS_AUD, NS, KSA)
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,aws",
        backends={"aws": {"endpoint_url": proxy.url}},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        sock = srv.socket("aws")
        first, before = first_mount(sock, params, target, {AWS_AUD: token})
        assert before.files == {
            secret: (b'{"username": "testuser", "password": "testpassword"}', 0o644),
            "MySecretUsername": (b"testuser", 0o644),
            "MySecretPassword": (b"testpassword", 0o644),
            "flags": (b"blue=on", 0o644),
        }
        assert first.object_versions == {
            secret: made["VersionId"],
            "MySecretUsername": made["VersionId"],
            "MySecretPassword": made["VersionId"],
            "flags": "1",
        }
        (sts,) = proxy.sts_calls()
        assert sts["WebIdentityToken"] == token and sts["RoleArn"] == ROLE
        again = remount(sock, params, target, first, {AWS_AUD: token})
        assert_unchanged(target, before, again)
        assert again.object_versions == first.object_versions

        put = sm.put_secret_value(
            SecretId=secret, SecretString='{"username": "testuser", "password": "rotated"}'
        )
        ssm.put_parameter(Name=parameter, Value="blue=off", Type="SecureString", Overwrite=True)
        second, after = rotate(sock, params, target, first, before, {AWS_AUD: token})
        assert after.files["MySecretPassword"] == (b"rotated", 0o644)
        assert after.files["flags"] == (b"blue=off", 0o644)
        assert second.object_versions == {
            secret: put["VersionId"],
            "MySecretUsername": put["VersionId"],
            "MySecretPassword": put["VersionId"],
            "flags": "2",
        }


def test_aws_missing_secret_fails_the_mount(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients("eu-west-3")
    secret = f"MySecret-{uuid.uuid4().hex[:8]}"
    parameter = f"/app/flags-{uuid.uuid4().hex[:8]}"  # never created
    sm.create_secret(Name=secret, SecretString='{"username": "u", "password": "p"}')
    tokens = {AWS_AUD: ISSUER.pod_token(AWS_AUD, NS, KSA)}
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,aws",
        backends={"aws": {"endpoint_url": proxy.url}},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        got = mount(
            srv.socket("aws"),
            aws_class(secret, parameter),
            target,
            pod=DEFAULT_POD,
            tokens=tokens,
        )
    assert not got.ok and got.error_code == "GRPCProviderError"
    assert got.code == "NotFound", got.grpc_error
    assert parameter in got.message
    assert got.object_versions == {} and list(target.iterdir()) == []


# -- socket gcp ----------------------------------------------------------------------


@pytest.fixture
def stack(google: GoogleStack) -> GoogleStack:
    s = google
    s.google.bind(GSA, NS, KSA)
    s.google.allow_project(f"serviceAccount:{GSA}")  # read access for the impersonated GSA
    s.secret_manager.add_version("my-project", "db-password", b"pg-pass-1")
    for i in (1, 2, 3):
        s.regional["us-east1"].add_version("my-project", "api-key", f"key-{i}".encode())
    s.secret_manager.add_version("my-project", "db-creds", b'{"username": "app", "x": 1}')
    s.parameter_manager.add_version("my-project", "app-config", "v1", b'{"mode": "prod"}')
    return s


def gcp_tokens(stack: GoogleStack) -> dict[str, str]:
    """The pod's projected token for the workload identity pool's audience."""
    pool = stack.google.pool
    return {pool: ISSUER.pod_token(pool, NS, KSA)}


GCP_GLOBAL = "projects/my-project/secrets"
GCP_VERSIONS = "projects/1449000001"


def test_gcp_official_class_with_workload_identity_and_rotation(
    tmp_path: Path, kube: FakeKube, stack: GoogleStack
) -> None:
    params = example("gcp/secretproviderclass.yaml")
    tokens = gcp_tokens(stack)
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,gcp",
        backends={"gcp": stack.settings()},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        sock = srv.socket("gcp")
        first, before = first_mount(sock, params, target, tokens)
        assert before.files == {
            "db/password": (b"pg-pass-1", 0o400),
            "api-key": (b"key-3", 0o644),
            "db/user": (b"app", 0o644),
            "config.json": (b'{"mode": "prod"}', 0o644),
        }
        param_id = "projects/my-project/locations/global/parameters/app-config/versions/v1"
        assert first.object_versions[param_id].startswith(
            f"{GCP_VERSIONS}/locations/global/parameters/app-config/versions/v1@"
        )
        assert {k: v for k, v in first.object_versions.items() if k != param_id} == {
            f"{GCP_GLOBAL}/db-password/versions/latest": (
                f"{GCP_VERSIONS}/secrets/db-password/versions/1"
            ),
            "projects/my-project/locations/us-east1/secrets/api-key/versions/3": (
                f"{GCP_VERSIONS}/locations/us-east1/secrets/api-key/versions/3"
            ),
            f"{GCP_GLOBAL}/db-creds/versions/latest": f"{GCP_VERSIONS}/secrets/db-creds/versions/1",
        }
        # the pod's own identity: one token exchange, one impersonation of its GSA
        assert stack.google.counts["sts"] == 1 and stack.google.counts["iam"] == 1
        again = remount(sock, params, target, first, tokens)
        assert_unchanged(target, before, again)
        assert again.object_versions == first.object_versions

        stack.secret_manager.add_version("my-project", "db-password", b"pg-pass-2")
        second, after = rotate(sock, params, target, first, before, tokens)
        assert after.files == {**before.files, "db/password": (b"pg-pass-2", 0o400)}
        assert second.object_versions == {
            **first.object_versions,
            f"{GCP_GLOBAL}/db-password/versions/latest": (
                f"{GCP_VERSIONS}/secrets/db-password/versions/2"
            ),
        }


def test_gcp_missing_secret_fails_the_mount(
    tmp_path: Path, kube: FakeKube, stack: GoogleStack
) -> None:
    params = {
        "secrets": f"""
- resourceName: "{GCP_GLOBAL}/db-password/versions/latest"
  path: "good.txt"
- resourceName: "{GCP_GLOBAL}/no-such-secret/versions/latest"
  path: "missing.txt"
"""
    }
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,gcp",
        backends={"gcp": stack.settings()},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        got = mount(srv.socket("gcp"), params, target, pod=DEFAULT_POD, tokens=gcp_tokens(stack))
    assert not got.ok and got.error_code == "GRPCProviderError"
    assert got.code == "NotFound", got.grpc_error
    assert f"{GCP_GLOBAL}/no-such-secret/versions/latest" in got.message
    assert "pg-pass" not in got.grpc_error
    assert got.object_versions == {} and list(target.iterdir()) == []


# -- socket azure --------------------------------------------------------------------


@pytest.fixture
def azure(azure: FakeAzure) -> FakeAzure:
    # Entra ID trusts the cluster's issuer for the app's federated credential
    azure.entra.federate(AZURE_CLIENT, NS, KSA)
    azure.vault.grant_reader("my-kv", AZURE_CLIENT)  # Key Vault denies by default
    return azure


def azure_class() -> dict[str, str]:
    """examples/azure/secretproviderclass.yaml (secret, key, certificate as its
    backing secret and as the leaf, a version history), in the fake's tenant."""
    params = example("azure/secretproviderclass.yaml")
    assert params["clientID"] == AZURE_CLIENT and params["keyvaultName"] == "my-kv"
    return {**params, "tenantID": TENANT}


def azure_tokens() -> dict[str, str]:
    return {AZURE_AUD: ISSUER.pod_token(AZURE_AUD, NS, KSA)}


def test_azure_official_class_with_workload_identity_and_rotation(
    tmp_path: Path, kube: FakeKube, azure: FakeAzure
) -> None:
    vault = azure.vault
    v_db = vault.add_secret("my-kv", "db-password", "hunter2")
    key = new_key("p256")
    v_key = vault.add_key("my-kv", "signing-key", jwk(key))
    ch = chain("rsa")
    v_cert = vault.add_certificate(
        "my-kv",
        "web-tls",
        ch.leaf.public_bytes(Encoding.DER),
        secret_value=ch.pfx_value([ch.root, ch.inter]),
    )
    tok = [vault.add_secret("my-kv", "api-token", f"token-{i}") for i in range(3)]
    params = azure_class()
    tokens = azure_tokens()
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,azure",
        backends={"azure": azure.settings(retry_backoff_factor=0.01)},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        sock = srv.socket("azure")
        first, before = first_mount(sock, params, target, tokens)
        assert before.files == {
            "db-password": (b"hunter2", 0o644),
            "keys/signing.pem": (public_pem(key), 0o644),
            "tls/web.pem": (ch.key_pem() + ch.ordered_pem(), 0o600),
            "tls/web.crt": (ch.pem(ch.leaf), 0o644),
            "api-token/0": (b"token-2", 0o644),
            "api-token/1": (b"token-1", 0o644),
        }
        assert sorted(p.name for p in target.iterdir()) == sorted(
            ["..data", before.data_dir, "db-password", "keys", "tls", "api-token"]
        )
        assert first.object_versions == {
            "secret/db-password": v_db,
            "key/signing-key": v_key,
            "secret/web-tls": v_cert,
            "cert/web-tls": v_cert,
            "secret/api-token/0": tok[2],
            "secret/api-token/1": tok[1],
        }
        assert azure.entra.token_requests >= 1
        # the PKCS#12 -> PEM conversion is byte-stable, so a poll does not swap ..data
        again = remount(sock, params, target, first, tokens)
        assert_unchanged(target, before, again)
        assert again.object_versions == first.object_versions

        v_db2 = vault.add_secret("my-kv", "db-password", "hunter3")
        tok3 = vault.add_secret("my-kv", "api-token", "token-3")
        second, after = rotate(sock, params, target, first, before, tokens)
        assert after.files == {
            **before.files,
            "db-password": (b"hunter3", 0o644),
            "api-token/0": (b"token-3", 0o644),
            "api-token/1": (b"token-2", 0o644),
        }
        assert second.object_versions == {
            **first.object_versions,
            "secret/db-password": v_db2,
            "secret/api-token/0": tok3,
            "secret/api-token/1": tok[2],
        }


def test_azure_missing_object_fails_the_mount(
    tmp_path: Path, kube: FakeKube, azure: FakeAzure
) -> None:
    azure.vault.add_secret("my-kv", "db-password", "hunter2")
    target = tmp_path / "target"
    with running_server(
        tmp_path,
        providers="keyferry,azure",
        backends={"azure": azure.settings(retry_backoff_factor=0.01)},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        got = mount(
            srv.socket("azure"), azure_class(), target, pod=DEFAULT_POD, tokens=azure_tokens()
        )
    assert not got.ok and got.error_code == "GRPCProviderError"
    assert got.code == "NotFound", got.grpc_error
    assert "key 'signing-key' in vault 'my-kv'" in got.message
    assert "hunter2" not in got.grpc_error
    assert got.object_versions == {} and list(target.iterdir()) == []


# -- issue 13's features through the driver -------------------------------------------


def test_keyferry_local_recursive_selection_and_its_rotation(
    tmp_path: Path, kube: FakeKube
) -> None:
    """Nested member names (``tls/ca.crt``) become nested files in the driver's volume,
    and per-member ObjectVersion ids contain ``/``; adding and removing a file is a
    rotation the driver applies (new ``..data``), an unchanged one keeps ``..data``."""
    root = tmp_path / "root"
    certs = root / "bundle"
    (certs / "tls" / "old").mkdir(parents=True)
    (certs / "tls" / "ca.crt").write_bytes(b"-----CA-----\n")
    (certs / "tls" / "old" / "server.key").write_bytes(b"key-v1")
    (certs / "app.conf").write_bytes(b"mode=prod\n")
    (root / "plain").write_bytes(b"plain")
    params = {
        "objects": """
- backend: local
  select: {directory: bundle, recursive: true}
  path: certs
  id: bundle
  mode: "0440"
- backend: local
  name: plain
"""
    }
    target = tmp_path / "target"
    with running_server(tmp_path, local_root=root, kubernetes=kube.settings()) as srv:
        sock = srv.socket("keyferry")
        first, before = first_mount(sock, params, target)
        assert before.files == {
            "certs/tls/ca.crt": (b"-----CA-----\n", 0o440),
            "certs/tls/old/server.key": (b"key-v1", 0o440),
            "certs/app.conf": (b"mode=prod\n", 0o440),
            "plain": (b"plain", 0o644),
        }
        assert sorted(p.name for p in target.iterdir() if p.is_symlink()) == [
            "..data",
            "certs",
            "plain",
        ]
        assert first.written == {p: f"0{m:o}" for p, (_, m) in before.files.items()}
        versions = first.object_versions
        assert sorted(versions) == [
            "bundle",
            "bundle/app.conf",
            "bundle/tls/ca.crt",
            "bundle/tls/old/server.key",
            "plain",
        ]
        assert all(v.startswith("hmac-sha256:") for v in versions.values())
        assert_unchanged(target, before, remount(sock, params, target, first))

        (certs / "tls" / "old" / "server.key").unlink()
        (certs / "tls" / "old").rmdir()
        (certs / "tls" / "new.pem").write_bytes(b"new")
        second, after = rotate(sock, params, target, first, before)
        assert after.files == {
            "certs/tls/ca.crt": (b"-----CA-----\n", 0o440),
            "certs/tls/new.pem": (b"new", 0o440),
            "certs/app.conf": (b"mode=prod\n", 0o440),
            "plain": (b"plain", 0o644),
        }
        assert not (target / "certs" / "tls" / "old").exists()
        assert sorted(second.object_versions) == [
            "bundle",
            "bundle/app.conf",
            "bundle/tls/ca.crt",
            "bundle/tls/new.pem",
            "plain",
        ]
        assert second.object_versions["bundle"] != versions["bundle"]
        for same in ("bundle/app.conf", "bundle/tls/ca.crt", "plain"):
            assert second.object_versions[same] == versions[same]
        assert_unchanged(target, after, remount(sock, params, target, second))
        # the v1.6 driver republishes without currentObjectVersion: the same answer
        v16 = mount(sock, params, target, pod=DEFAULT_POD)
        assert_unchanged(target, after, v16)
        assert v16.object_versions == second.object_versions

        capped = {"objects": params["objects"].replace('mode: "0440"', 'maxMatches: "2"')}
        over = remount(sock, capped, target, second)
        assert not over.ok and over.code == "ResourceExhausted", over.grpc_error
        assert "maxMatches" in over.message and "3" in over.message
        assert volume(target) == after
    assert sum(kube.requests.values()) == 0


def test_keyferry_aws_prefix_selection_with_irsa_and_an_added_member(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients("eu-west-1")
    prefix = f"sel-{uuid.uuid4().hex[:8]}/"
    made = {
        rel: sm.create_secret(Name=prefix + rel, SecretString=f"value-{rel}")["VersionId"]
        for rel in ("db-password", "nested/api-key")
    }
    sm.create_secret(Name=prefix.rstrip("/") + "-sibling", SecretString="not below the prefix")
    proxy.grant(ROLE, "secretsmanager:ListSecrets")
    params = {
        "objects": json.dumps(
            [
                {
                    "backend": "aws",
                    "region": "eu-west-1",
                    "select": {"namePrefix": prefix},
                    "path": "app",
                    "mode": "0400",
                }
            ]
        )
    }
    tokens = irsa()
    target = tmp_path / "target"
    with aws_server(tmp_path, proxy, kube) as srv:
        sock = srv.socket("keyferry")
        first, before = first_mount(sock, params, target, tokens)
        assert before.files == {f"app/{rel}": (f"value-{rel}".encode(), 0o400) for rel in made}
        assert {k: v for k, v in first.object_versions.items() if k != "app"} == {
            f"app/{rel}": v for rel, v in made.items()
        }
        assert first.object_versions["app"].startswith("hmac-sha256:")
        (sts,) = proxy.sts_calls()
        assert sts["RoleArn"] == ROLE
        # per Mount: one ListSecrets page, one BatchGetSecretValue for the matches
        assert proxy.count("ListSecrets") == 1 and proxy.count("BatchGetSecretValue") == 1
        assert_unchanged(target, before, remount(sock, params, target, first, tokens))

        made["added"] = sm.create_secret(Name=prefix + "added", SecretString="value-added")[
            "VersionId"
        ]
        second, after = rotate(sock, params, target, first, before, tokens)
        assert after.files == {**before.files, "app/added": (b"value-added", 0o400)}
        assert second.object_versions["app/added"] == made["added"]
        assert second.object_versions["app"] != first.object_versions["app"]
        assert proxy.count("ListSecrets") == 3 and proxy.count("BatchGetSecretValue") == 3

        # a member whose name would leave the directory fails the mount, naming it; the
        # driver keeps the volume as it was
        sm.create_secret(Name=prefix + "../escape", SecretString="value-escape")
        hostile = remount(sock, params, target, second, tokens)
        assert not hostile.ok and hostile.code == "InvalidArgument", hostile.grpc_error
        assert "objects[0] (aws: select " in hostile.message  # which selection, then which name
        assert "selected object '../escape' cannot be written" in hostile.message
        assert "value-" not in hostile.grpc_error
        assert volume(target) == after


def template_class(secret: str, template: str) -> dict[str, str]:
    """A .env rendered from a local JSON file's keys and a Secrets Manager secret, both
    fetched for the template only (``write: false``)."""
    db = {"backend": "local", "name": "db.json", "write": False}
    db["extract"] = [{"path": f"db/{k}", "jsonKey": k} for k in ("user", "password")]
    api = {"backend": "aws", "service": "secretsmanager", "name": secret, "region": "eu-west-1"}
    env = {"template": template, "path": "app.env", "mode": "0600"}
    return {"objects": json.dumps([db, {**api, "path": "api-token", "write": False}, env])}


ENV_TEMPLATE = (
    "DB_USER={{ values['db/user'] | shellquote }}\n"
    "DB_PASSWORD={{ values['db/password'] | shellquote }}\n"
    "API_TOKEN={{ values['api-token'] | shellquote }}\n"
)


def test_keyferry_template_env_file_its_rotation_and_a_bound(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients("eu-west-1")
    name = f"api-{uuid.uuid4().hex[:8]}"
    made = sm.create_secret(Name=name, SecretString="tok-1")
    (root := tmp_path / "root").mkdir()
    (root / "db.json").write_text('{"user": "app", "password": "pw 1"}')
    params = template_class(name, ENV_TEMPLATE)
    tokens = irsa()
    target = tmp_path / "target"
    with aws_server(tmp_path, proxy, kube, root) as srv:
        sock = srv.socket("keyferry")
        first, before = first_mount(sock, params, target, tokens)
        assert before.files == {
            "app.env": (b"DB_USER=app\nDB_PASSWORD='pw 1'\nAPI_TOKEN=tok-1\n", 0o600)
        }
        assert sorted(p.name for p in target.iterdir()) == sorted(
            ["..data", before.data_dir, "app.env"]
        )
        assert first.written == {"app.env": "0600"}
        # the unwritten inputs still report their versions, so their rotation is seen
        assert sorted(first.object_versions) == ["api-token", "app.env", "db/user"]
        assert first.object_versions["api-token"] == made["VersionId"]
        assert_unchanged(target, before, remount(sock, params, target, first, tokens))

        sm.put_secret_value(SecretId=name, SecretString="tok-2")
        second, after = rotate(sock, params, target, first, before, tokens)
        assert after.files == {
            "app.env": (b"DB_USER=app\nDB_PASSWORD='pw 1'\nAPI_TOKEN=tok-2\n", 0o600)
        }
        changed = {
            k
            for k in first.object_versions
            if second.object_versions[k] != first.object_versions[k]
        }
        assert changed == {"api-token", "app.env"}

        loop = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"
        bad = template_class(name, loop + ENV_TEMPLATE)
        failed = remount(sock, bad, target, second, tokens)
        assert not failed.ok and failed.error_code == "GRPCProviderError"
        assert failed.code == "ResourceExhausted", failed.grpc_error
        assert "objects[2] (template: app.env): line 1:" in failed.message
        assert "loop" in failed.message
        for value in ("pw 1", "tok-2", "tok-1"):
            assert value not in failed.grpc_error
        assert volume(target) == after


@overload
def history_files(current: bytes, before: bytes) -> dict[str, tuple[bytes, int]]: ...
@overload
def history_files(current: str, before: str) -> dict[str, str]: ...
def history_files(current: bytes | str, before: bytes | str) -> dict[str, Any]:
    """What ``versionHistory: 2`` on db/password and ``previous: true`` on db/previous
    give: the files (bytes, mode) from values, the ObjectVersions from version ids."""
    if isinstance(current, str):
        return {"db/password/0": current, "db/password/1": before, "db/previous": before}
    return {
        "db/password/0": (current, 0o400),
        "db/password/1": (before, 0o400),
        "db/previous": (before, 0o644),
    }


def test_keyferry_aws_version_history_and_its_rotation(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients("eu-west-1")
    name = f"hist-{uuid.uuid4().hex[:8]}"
    v1 = sm.create_secret(Name=name, SecretString="pw-1")["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="pw-2")["VersionId"]
    params = {
        "objects": f"""
- backend: aws
  service: secretsmanager
  name: {name}
  region: eu-west-1
  path: db/password
  mode: "0400"
  versionHistory: 2
- backend: aws
  service: secretsmanager
  name: {name}
  region: eu-west-1
  path: db/previous
  previous: true
"""
    }
    tokens = irsa()
    target = tmp_path / "target"
    with aws_server(tmp_path, proxy, kube) as srv:
        sock = srv.socket("keyferry")
        first, before = first_mount(sock, params, target, tokens)
        assert before.files == history_files(b"pw-2", b"pw-1")
        assert first.object_versions == history_files(v2, v1)
        # first Mount: one listing, a read per slot by VersionId, one of AWSPREVIOUS
        assert proxy.count("ListSecretVersionIds") == 1 and proxy.count("GetSecretValue") == 3
        assert_unchanged(target, before, remount(sock, params, target, first, tokens))

        v3 = sm.put_secret_value(SecretId=name, SecretString="pw-3")["VersionId"]
        second, after = rotate(sock, params, target, first, before, tokens)
        assert after.files == history_files(b"pw-3", b"pw-2")
        assert second.object_versions == history_files(v3, v2)
        # the unchanged remount and the rotation: a listing each, the slots' old versions
        # pinned in the cache, so only AWSPREVIOUS (twice) and the new version are read
        assert proxy.count("ListSecretVersionIds") == 3 and proxy.count("GetSecretValue") == 6


@contextlib.contextmanager
def native_server(tmp_path: Path, kube: FakeKube, **backends: Any) -> Iterator[Path]:
    """keyferry with only its native socket and these backend settings, no value cache
    (each mount reads the store, as a rotation past cache_ttl_seconds does)."""
    with running_server(
        tmp_path,
        providers="keyferry",
        backends=backends,
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    ) as srv:
        yield srv.socket("keyferry")


def test_gcp_label_selection_denied_then_granted_and_an_added_secret(
    tmp_path: Path, kube: FakeKube, stack: GoogleStack
) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "web-db", b"db-1", labels={"app": "web"})
    sm.add_version("my-project", "web-api", b"api-1", labels={"app": "web", "tier": "x"})
    sm.add_version("my-project", "batch", b"batch", labels={"app": "batch"})
    params = {
        "objects": "- {backend: gcp, select: {project: my-project, labels: {app: web}}, "
        "path: web, mode: '0440'}"
    }
    tokens = gcp_tokens(stack)
    target = tmp_path / "target"
    with native_server(tmp_path, kube, gcp=stack.settings()) as sock:
        # secretAccessor reads values but cannot list: the driver's mount fails clearly
        denied = mount(sock, params, target, pod=DEFAULT_POD, tokens=tokens)
        assert not denied.ok and denied.code == "PermissionDenied", denied.grpc_error
        assert "roles/secretmanager.viewer" in denied.message
        assert list(target.iterdir()) == []

        stack.google.grant(
            "projects/my-project", "roles/secretmanager.viewer", f"serviceAccount:{GSA}"
        )
        first, before = first_mount(sock, params, target, tokens)
        assert before.files == {"web/web-db": (b"db-1", 0o440), "web/web-api": (b"api-1", 0o440)}
        assert {k: v for k, v in first.object_versions.items() if k != "web"} == {
            f"web/{s}": f"{GCP_VERSIONS}/secrets/{s}/versions/1" for s in ("web-db", "web-api")
        }
        assert_unchanged(target, before, remount(sock, params, target, first, tokens))

        sm.add_version("my-project", "web-new", b"new-1", labels={"app": "web"})
        sm.add_version("my-project", "web-db", b"db-2")
        second, after = rotate(sock, params, target, first, before, tokens)
        assert after.files == {
            "web/web-db": (b"db-2", 0o440),
            "web/web-api": (b"api-1", 0o440),
            "web/web-new": (b"new-1", 0o440),
        }
        assert second.object_versions["web/web-db"] == f"{GCP_VERSIONS}/secrets/web-db/versions/2"


def test_azure_prefix_selection_denied_then_granted_and_a_removed_secret(
    tmp_path: Path, kube: FakeKube, azure: FakeAzure
) -> None:
    vault = azure.vault
    made = {n: vault.add_secret("my-kv", n, f"{n}-value") for n in ("app-db", "app-api", "other")}
    vault.revoke("my-kv", AZURE_CLIENT)
    vault.grant("my-kv", "secrets", AZURE_CLIENT, operations=("get",))
    params = {
        "objects": json.dumps(
            [
                {
                    "backend": "azure",
                    "vault": "my-kv",
                    "tenantID": TENANT,
                    "clientID": AZURE_CLIENT,
                    "select": {"namePrefix": "app-"},
                    "path": "app",
                }
            ]
        )
    }
    target = tmp_path / "target"
    with native_server(tmp_path, kube, azure=azure.settings(retry_backoff_factor=0.01)) as sock:
        denied = mount(sock, params, target, pod=DEFAULT_POD, tokens=azure_tokens())
        assert not denied.ok and denied.code == "PermissionDenied", denied.grpc_error
        assert "my-kv" in denied.message and "list" in denied.message
        assert list(target.iterdir()) == []

        vault.grant("my-kv", "secrets", AZURE_CLIENT, operations=("list",))
        first, before = first_mount(sock, params, target, azure_tokens())
        assert before.files == {
            "app/app-db": (b"app-db-value", 0o644),
            "app/app-api": (b"app-api-value", 0o644),
        }
        assert {k: v for k, v in first.object_versions.items() if k != "app"} == {
            f"app/{n}": made[n] for n in ("app-db", "app-api")
        }
        vault.set_enabled("my-kv", "secrets", "app-api", made["app-api"], False)
        second, after = rotate(sock, params, target, first, before, azure_tokens())
        assert after.files == {"app/app-db": (b"app-db-value", 0o644)}
        assert not (target / "app" / "app-api").exists()
        assert sorted(second.object_versions) == ["app", "app/app-db"]


def test_keyferry_aws_cross_account_role_only_where_the_server_allows_chaining(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "cross-1", external_id="ext-1234")
    item = {"backend": "aws", "service": "secretsmanager", "name": name, "region": "us-east-1"}
    item |= {"path": "shared", "assumeRoleArn": TARGET, "externalId": "ext-1234"}
    params = {"objects": json.dumps([item])}
    target = tmp_path / "target"
    with native_server(tmp_path / "no-chaining", kube, aws={"endpoint_url": proxy.url}) as sock:
        refused = mount(sock, params, target, pod=DEFAULT_POD, tokens=irsa())
    assert not refused.ok and refused.code == "FailedPrecondition", refused.grpc_error
    assert "allow_role_chaining" in refused.message
    assert list(target.iterdir()) == [] and assume_calls(proxy) == []

    chaining = {"endpoint_url": proxy.url, "allow_role_chaining": True}
    with native_server(tmp_path, kube, aws=chaining) as sock:
        first, before = first_mount(sock, params, target, irsa())
        assert before.files == {"shared": (b"cross-1", 0o644)}
        (call,) = assume_calls(proxy)
        assert call["RoleArn"] == TARGET and call["RoleSessionName"] == "team-a.web-0"
        assert_unchanged(target, before, remount(sock, params, target, first, irsa()))

        sm, _ = seed_clients(account=OTHER_ACCOUNT)
        sm.put_secret_value(SecretId=name, SecretString="cross-2")
        _, after = rotate(sock, params, target, first, before, irsa())
        assert after.files == {"shared": (b"cross-2", 0o644)}
        assert len(assume_calls(proxy)) == 1  # the chained credentials are cached per pod


def test_keyferry_the_largest_selection_reaches_the_driver_whole(
    tmp_path: Path, kube: FakeKube
) -> None:
    """max_selected_objects' ceiling (1000 matches, 1001 ObjectVersions): the driver
    takes the response and writes every file; it has no count limit of its own."""
    (many := tmp_path / "root" / "many").mkdir(parents=True)
    for i in range(1000):
        (many / f"s{i:04d}").write_bytes(f"v{i}".encode())
    params = {"objects": "- {backend: local, select: {directory: many}, maxMatches: '1000'}"}
    with running_server(
        tmp_path, local_root=many.parent, kubernetes=kube.settings(), max_selected_objects=1000
    ) as srv:
        first, before = first_mount(srv.socket("keyferry"), params, tmp_path / "target")
    assert before.files == {f"many/s{i:04d}": (f"v{i}".encode(), 0o644) for i in range(1000)}
    assert len(first.object_versions) == 1001 and "many" in first.object_versions


def test_keyferry_ssm_recursive_path_selection_and_a_deleted_parameter(
    tmp_path: Path, kube: FakeKube, proxy: AwsFaults
) -> None:
    _, ssm = seed_clients("eu-west-1")
    base = f"/param-{uuid.uuid4().hex[:8]}/app"
    for rel, value in (("url", "https://db"), ("tls/key", "k-1"), ("tls/ca", "ca-1")):
        ssm.put_parameter(Name=f"{base}/{rel}", Value=value, Type="SecureString")
    proxy.grant(ROLE, "ssm:GetParametersByPath")
    select = {"path": base, "recursive": "true"}
    item = {"backend": "aws", "region": "eu-west-1", "select": select, "mode": "0400"}
    params = {"objects": json.dumps([{**item, "path": "cfg"}])}
    target = tmp_path / "target"
    with native_server(tmp_path, kube, aws={"endpoint_url": proxy.url}) as sock:
        first, before = first_mount(sock, params, target, irsa())
        assert before.files == {
            "cfg/url": (b"https://db", 0o400),
            "cfg/tls/key": (b"k-1", 0o400),
            "cfg/tls/ca": (b"ca-1", 0o400),
        }
        assert {k: v for k, v in first.object_versions.items() if k != "cfg"} == {
            "cfg/url": "1",
            "cfg/tls/key": "1",
            "cfg/tls/ca": "1",
        }
        # per Mount: one GetParametersByPath page (10 a page); with cache_ttl_seconds 0 the
        # values are read again in one GetParameters (none while the listing is cached)
        assert proxy.count("GetParametersByPath") == 1 and proxy.count("GetParameters") == 1

        ssm.delete_parameter(Name=f"{base}/tls/ca")
        ssm.put_parameter(Name=f"{base}/tls/key", Value="k-2", Type="SecureString", Overwrite=True)
        second, after = rotate(sock, params, target, first, before, irsa())
        assert after.files == {"cfg/url": (b"https://db", 0o400), "cfg/tls/key": (b"k-2", 0o400)}
        assert not (target / "cfg" / "tls" / "ca").exists()
        assert second.object_versions["cfg/tls/key"] == "2"
        assert "cfg/tls/ca" not in second.object_versions
