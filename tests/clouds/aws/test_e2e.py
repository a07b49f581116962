"""The ``aws`` socket end to end: the official provider's documented
SecretProviderClasses through a real keyferry server (gRPC over a Unix socket),
the aws backend, moto and a fake Kubernetes API, all on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyferry_fakes.aws_agent import PodIdentityAgent
from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import DEFAULT_POD, running_server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from provider.cli import manifest
from provider.cli.main import main as cli_main
from tests import REPO

EXAMPLES = REPO / "examples" / "aws"
ROLE = "arn:aws:iam::123456789012:role/web"


def irsa(pod: tuple[str, str, str, str] = DEFAULT_POD, **kwargs: Any) -> dict[str, str]:
    """The tokens attribute kubelet passes for ``pod`` (audience sts.amazonaws.com)."""
    ns, name, _, sa = pod
    return {"sts.amazonaws.com": ISSUER.pod_token("sts.amazonaws.com", ns, sa, pod=name, **kwargs)}


def example(name: str) -> dict[str, str]:
    (spc,) = list(manifest.load(EXAMPLES / name))
    assert not isinstance(spc, Exception)
    return dict(spc.parameters)


def server(tmp_path: Path, proxy: AwsFaults, kube: FakeKube, **aws: Any) -> Any:
    settings = {"endpoint_url": proxy.url, **aws}
    return running_server(
        tmp_path,
        providers="keyferry,aws",
        backends={"aws": settings},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )


def files(resp: Any) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def versions(resp: Any) -> dict[str, str]:
    return {v.id: v.version for v in resp.object_version}


def test_irsa_example(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    sm, _ = seed_clients("ca-central-1")
    made = sm.create_secret(Name="MySecret", SecretString="hello from ca-central-1")
    tokens = irsa()
    with server(tmp_path, proxy, kube, region="ca-central-1") as srv:
        resp = srv.mount("aws", example("irsa.yaml"), tokens=tokens)
    assert files(resp) == {"MySecret": b"hello from ca-central-1"}
    assert [f.mode for f in resp.files] == [0o644]
    assert versions(resp) == {"MySecret": made["VersionId"]}
    (sts,) = proxy.sts_calls()
    assert sts["WebIdentityToken"] == tokens["sts.amazonaws.com"] and sts["RoleArn"] == ROLE


def test_pod_identity_example(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    sm, _ = seed_clients("sa-east-1")
    made = sm.create_secret(Name="MySecret", SecretString="hello via pod identity")
    agent = PodIdentityAgent(proxy)
    agent.associate(DEFAULT_POD[0], DEFAULT_POD[3], "arn:aws:iam::123456789012:role/pod-identity")
    token = ISSUER.pod_token("pods.eks.amazonaws.com", DEFAULT_POD[0], DEFAULT_POD[3])
    try:
        with server(
            tmp_path, proxy, kube, region="sa-east-1", pod_identity={"ipv4_url": agent.url}
        ) as srv:
            resp = srv.mount(
                "aws", example("pod-identity.yaml"), tokens={"pods.eks.amazonaws.com": token}
            )
    finally:
        agent.close()
    assert files(resp) == {"MySecret": b"hello via pod identity"}
    assert versions(resp) == {"MySecret": made["VersionId"]}
    assert agent.seen == [token]
    assert len(agent.issued) == 1
    assert proxy.sts_calls() == []


def test_jmespath_example(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    sm, _ = seed_clients("ap-south-1")
    doc = json.dumps({"username": "testuser", "password": "testpassword"})
    made = sm.create_secret(Name="MySecret", SecretString=doc)
    with server(tmp_path, proxy, kube, region="ap-south-1") as srv:
        resp = srv.mount("aws", example("jmespath.yaml"), tokens=irsa())
    assert files(resp) == {
        "MySecret": doc.encode(),
        "MySecretUsername": b"testuser",
        "MySecretPassword": b"testpassword",
    }
    assert set(versions(resp).values()) == {made["VersionId"]}
    assert set(versions(resp)) == {"MySecret", "MySecretUsername", "MySecretPassword"}


def test_failover_example(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    east, _ = seed_clients("us-east-1")
    west, _ = seed_clients("us-east-2")
    primary = east.create_secret(Name="PrimarySecret", SecretString="primary")
    failover = west.create_secret(Name="FailoverSecret", SecretString="failover")
    params = example("failover.yaml")
    params["objects"] = (
        params["objects"]
        .replace(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:PrimarySecret-12345",
            primary["ARN"],
        )
        .replace(
            "arn:aws:secretsmanager:us-east-2:123456789012:secret:FailoverSecret-12345",
            failover["ARN"],
        )
    )
    with server(tmp_path, proxy, kube) as srv:
        resp = srv.mount("aws", params, tokens=irsa())
        assert files(resp) == {"testArn": b"primary"}
        assert versions(resp) == {"testArn": primary["VersionId"]}
        assert proxy.count(region="us-east-2") == 0  # healthy primary: failover not asked

        proxy.fail("GetSecretValue", "InternalServiceError", 500, region="us-east-1")
        resp = srv.mount("aws", params, tokens=irsa())
        assert files(resp) == {"testArn": b"failover"}
        assert versions(resp) == {"testArn": failover["VersionId"]}
        assert 'operation="failover",outcome="ok"' in srv.metrics_text()


def test_official_integration_class(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    """ASCP's tests/BasicTestMountSPC.yaml with REGION=eu-north-1 and
    FAILOVERREGION=eu-south-1 (``${ACCOUNT_NUMBER}`` spelled ``${ACCT}`` below to keep
    lines short): every file and version its bats suite expects."""
    region, failover = "eu-north-1", "eu-south-1"
    sm, ssm = seed_clients(region)
    sm_f, _ = seed_clients(failover)
    for name in (
        "ParameterStoreTest1",
        "ParameterStoreTestWithLongName",
        "ParameterStoreRotationTest",
    ):
        ssm.put_parameter(Name=name, Value=f"{name}Value", Type="SecureString")
    ssm.put_parameter(
        Name="jsonSsm", Value='{"username": "SsmUser", "password": "SsmPass"}', Type="String"
    )
    made = {
        name: sm.create_secret(Name=name, SecretString=f"{name}Value")
        for name in ("SecretsManagerRotationTest", "SecretsManagerTest1", "SecretsManagerSync")
    }
    test2 = sm.create_secret(Name="SecretsManagerTest2", SecretString="SecretsManagerTest2Value")
    sm_f.create_secret(Name="SecretsManagerTest2", SecretString="replica")
    made["secretsManagerJson"] = sm.create_secret(
        Name="secretsManagerJson", SecretString='{"username": "SMUser", "password": "SMPass"}'
    )
    objects = (
        _BASIC_SPC.replace("${REGION}", region)
        .replace("${FAILOVERREGION}", failover)
        .replace("${ACCT}", "123456789012")
    )
    params = {"region": region, "failoverRegion": failover, "objects": objects}
    with server(tmp_path, proxy, kube) as srv:
        resp = srv.mount("aws", params, tokens=irsa())
    got, ver = files(resp), versions(resp)
    assert got == {
        "ParameterStoreTest1": b"ParameterStoreTest1Value",
        "ParameterStoreTest2": b"ParameterStoreTestWithLongNameValue",
        "ParameterStoreRotationTest": b"ParameterStoreRotationTestValue",
        "SecretsManagerRotationTest": b"SecretsManagerRotationTestValue",
        "SecretsManagerTest1": b"SecretsManagerTest1Value",
        "SecretsManagerTest2": b"SecretsManagerTest2Value",
        "SecretsManagerSync": b"SecretsManagerSyncValue",
        "jsonSsm": b'{"username": "SsmUser", "password": "SsmPass"}',
        "ssmUsername": b"SsmUser",
        "ssmPassword": b"SsmPass",
        "secretsManagerJson": b'{"username": "SMUser", "password": "SMPass"}',
        "secretsManagerUsername": b"SMUser",
        "secretsManagerPassword": b"SMPass",
    }
    assert ver["ParameterStoreTest2"] == "1" and ver["ssmPassword"] == "1"
    assert ver["SecretsManagerTest2"] == test2["VersionId"]
    assert ver["secretsManagerPassword"] == made["secretsManagerJson"]["VersionId"]
    assert proxy.count(region=failover) == 0


_BASIC_SPC = """
- objectName: "ParameterStoreTest1"
  objectType: "ssmparameter"
- objectName: "ParameterStoreTestWithLongName"
  objectAlias: "ParameterStoreTest2"
  objectType: "ssmparameter"
- objectName: "ParameterStoreRotationTest"
  objectType: "ssmparameter"
- objectName: "SecretsManagerRotationTest"
  objectType: "secretsmanager"
- objectName: "SecretsManagerTest1"
  objectType: "secretsmanager"
- objectName: arn:aws:secretsmanager:${REGION}:${ACCT}:secret:SecretsManagerTest2
  objectAlias: "SecretsManagerTest2"
  failoverObject:
    objectName: arn:aws:secretsmanager:${FAILOVERREGION}:${ACCT}:secret:SecretsManagerTest2
- objectName: "SecretsManagerSync"
  objectType: "secretsmanager"
- objectName: "jsonSsm"
  objectType: "ssmparameter"
  jmesPath:
      - Path: "username"
        ObjectAlias: "ssmUsername"
      - Path: "password"
        ObjectAlias: "ssmPassword"
- objectName: "secretsManagerJson"
  objectType: "secretsmanager"
  jmesPath:
      - Path: "username"
        ObjectAlias: "secretsManagerUsername"
      - Path: "password"
        ObjectAlias: "secretsManagerPassword"
"""


def test_bad_input_fails_before_any_call(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    with (
        server(tmp_path, proxy, kube, region="us-east-1") as srv,
        pytest.raises(grpc.RpcError) as info,
    ):
        srv.mount(
            "aws",
            {
                "objects": "- {objectName: s, objectType: secretsmanager, objectAlias: ../x}\n"
                "- objectName: t\n  objectType: secretsmanager\n"
                "  jmesPath: [{path: a, objectAlias: ../../y}]\n",
                "pathTranslation": "False",
            },
            tokens=irsa(),
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "objects[0] (s)" in (info.value.details() or "")
    assert "objects[1] (t) jmesPath[0]" in (info.value.details() or "")
    assert proxy.requests == [] and sum(kube.requests.values()) == 0


def test_missing_role_annotation_over_the_socket(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    with (
        server(tmp_path, proxy, kube, region="us-east-1") as srv,
        pytest.raises(grpc.RpcError) as info,
    ):
        srv.mount(
            "aws",
            example("irsa.yaml"),
            tokens=irsa(),
            pod=("team-a", "web-0", "uid", "unannotated"),
        )
    assert info.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
    assert "unannotated" in (info.value.details() or "")


def test_throttling_visible_in_metrics(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    sm, _ = seed_clients("ap-northeast-3")
    sm.create_secret(Name="MySecret", SecretString="x")
    proxy.fail("GetSecretValue", "ThrottlingException", 400, times=1)
    with server(tmp_path, proxy, kube, region="ap-northeast-3") as srv:
        resp = srv.mount("aws", example("irsa.yaml"), tokens=irsa())
        assert files(resp) == {"MySecret": b"x"}
        text = srv.metrics_text()
    attempts = 'keyferry_backend_attempts_total{backend="aws",operation="GetSecretValue"'
    assert f'{attempts},outcome="throttled"}} 1.0' in text
    assert f'{attempts},outcome="ok"}} 1.0' in text


def test_keyferry_mount_cli(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    sm, _ = seed_clients("me-central-1")
    doc = json.dumps({"username": "cli-user", "password": "cli-pass"})
    made = sm.create_secret(Name="MySecret", SecretString=doc)
    config = tmp_path / "keyferry.yaml"
    config.write_text(
        json.dumps(
            {
                "backends": {"aws": {"endpoint_url": proxy.url, "region": "me-central-1"}},
                "kubernetes": kube.settings(),
            }
        )
    )
    token = tmp_path / "token"
    jwt = ISSUER.pod_token("sts.amazonaws.com", "team-a", "web", pod="web-0")
    token.write_text(jwt)
    out = tmp_path / "volume"
    rc = cli_main(
        [
            "mount",
            "-f",
            str(EXAMPLES / "jmespath.yaml"),
            "--config",
            str(config),
            "--pod",
            "team-a/web-0",
            "--service-account",
            "web",
            "--token",
            f"sts.amazonaws.com={token}",
            "--out",
            str(out),
            "--print",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert (out / "MySecretUsername").read_bytes() == b"cli-user"
    assert (out / "MySecretPassword").read_bytes() == b"cli-pass"
    assert f"MySecret = {made['VersionId']}" in printed
    assert proxy.sts_calls()[0]["WebIdentityToken"] == jwt


def test_concurrent_identical_mounts_share_one_batch_call(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    """A rollout: pods of one service account mount one class at once. With the value
    cache off, in-flight coalescing alone must keep them from each calling AWS."""
    sm, _ = seed_clients("us-east-1")
    names = [f"coalesce-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    for n in names:
        sm.create_secret(Name=n, SecretString="v")
    params = {
        "objects": json.dumps([{"objectName": n, "objectType": "secretsmanager"} for n in names]),
        "region": "us-east-1",
    }
    pods = 6
    with server(tmp_path, proxy, kube) as srv:
        srv.mount("aws", params, tokens=irsa())  # credentials and clients warm
        proxy.clear()
        proxy.delay["BatchGetSecretValue"] = 0.5  # keep the first call in flight
        assert rollout(srv, "aws", params, pods) == [3] * pods
    assert 1 <= proxy.count("BatchGetSecretValue") < pods


def rollout(srv: Any, socket: str, params: dict[str, str], pods: int) -> list[int]:
    """``pods`` pods of one service account mounting ``params`` at once: the number of
    files each got."""
    gate = threading.Barrier(pods)

    def one(i: int) -> int:
        gate.wait()
        pod = (DEFAULT_POD[0], f"web-{i}", str(uuid.uuid4()), DEFAULT_POD[3])
        return len(srv.mount(socket, params, tokens=irsa(pod), pod=pod).files)

    with ThreadPoolExecutor(pods) as pool:
        return list(pool.map(one, range(pods)))


def test_aws_secrets_and_tokens_never_reach_logs_errors_or_metrics(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    value = "CANARY-aws-value-7d1c9e"
    tokens = irsa()
    token = tokens["sts.amazonaws.com"]
    sm, _ = seed_clients("us-east-1")
    name = f"canary-{uuid.uuid4().hex[:6]}"
    sm.create_secret(Name=name, SecretString=json.dumps({"password": value, "n": 1}))

    def objects(*items: dict[str, Any]) -> dict[str, str]:
        return {"objects": json.dumps(list(items)), "region": "us-east-1"}

    plain = {"objectName": name, "objectType": "secretsmanager"}
    messages = []
    with server(tmp_path, proxy, kube) as srv:
        ok = srv.mount("aws", objects(plain), tokens=tokens)
        assert value.encode() in ok.files[0].contents
        failing = [
            objects({**plain, "jmesPath": [{"path": "n", "objectAlias": "n"}]}),  # not a string
            objects({**plain, "jmesPath": [{"path": "password.x", "objectAlias": "x"}]}),
            objects(plain, {"objectName": "missing-" + name, "objectType": "secretsmanager"}),
        ]
        for params in failing:
            with pytest.raises(grpc.RpcError) as err:
                srv.mount("aws", params, tokens=tokens)
            messages.append(err.value.details() or "")
        proxy.fail("BatchGetSecretValue", "AccessDeniedException", 400)
        proxy.fail("GetSecretValue", "AccessDeniedException", 400)
        with pytest.raises(grpc.RpcError) as err:
            srv.mount("aws", objects(plain, {**plain, "objectAlias": "b"}), tokens=tokens)
        messages.append(err.value.details() or "")
        haystack = "\n".join(srv.logs + messages) + srv.metrics_text()
    assert srv.logs and len(messages) == 4
    assert value not in haystack and token not in haystack


def test_token_of_a_service_account_the_role_does_not_trust_over_the_socket(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    """Service account api is annotated with role/web, whose trust policy names only
    team-a:web: STS refuses, and the driver is told which role and which subject."""
    kube.add_service_account("team-a", "api", {"eks.amazonaws.com/role-arn": ROLE})
    api = ("team-a", "api-0", str(uuid.uuid4()), "api")
    tokens = irsa(api)
    with (
        server(tmp_path, proxy, kube, region="us-east-1") as srv,
        pytest.raises(grpc.RpcError) as info,
    ):
        srv.mount("aws", example("irsa.yaml"), tokens=tokens, pod=api)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details() or ""
    assert ROLE in details and "trust policy" in details
    assert "system:serviceaccount:team-a:api" in details
    assert tokens["sts.amazonaws.com"] not in details
    assert [r.code for r in proxy.refusals] == ["AccessDenied"]
    assert proxy.count("GetSecretValue") == 0


def test_expired_token_over_the_socket_names_token_requests(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    with (
        server(tmp_path, proxy, kube, region="us-east-1") as srv,
        pytest.raises(grpc.RpcError) as info,
    ):
        srv.mount("aws", example("irsa.yaml"), tokens=irsa(lifetime=-60))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    details = info.value.details() or ""
    assert "ExpiredTokenException" in details and "expired" in details
    assert "tokenRequests" in details and "sts.amazonaws.com" in details
    assert [r.code for r in proxy.refusals] == ["ExpiredTokenException"]
