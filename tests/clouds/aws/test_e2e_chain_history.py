"""examples/aws/cross-account.yaml and history.yaml through a real keyferry server on the
``keyferry`` socket: role chaining with IRSA and with EKS Pod Identity, version history
and ``previous`` — the driver's requests over gRPC on a Unix socket, moto behind the
strict proxy, the fake Kubernetes API."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyferry_fakes.aws_agent import PodIdentityAgent
from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import DEFAULT_POD
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from tests.clouds.aws.test_e2e import ROLE, example, files, irsa, server, versions

OTHER_ACCOUNT = "210987654321"
TARGET = f"arn:aws:iam::{OTHER_ACCOUNT}:role/secrets-reader"
EXTERNAL_ID = "team-a-payments"


def trust_policy() -> dict[str, Any]:
    from tests import REPO

    path = REPO / "examples" / "aws" / "cross-account-trust-policy.json"
    return dict(json.loads(path.read_text()))


def cross_account(proxy: AwsFaults) -> dict[str, str]:
    """The example's class, its secrets and parameter made unique, seeded in the other
    account where only TARGET may read and list them; TARGET trusts ROLE as the example's
    trust policy says."""
    (statement,) = trust_policy()["Statement"]
    assert statement["Principal"]["AWS"] == ROLE
    external_id = statement["Condition"]["StringEquals"]["sts:ExternalId"]
    assert external_id == EXTERNAL_ID
    p = uuid.uuid4().hex[:8]
    sm, ssm = seed_clients("eu-west-1", account=OTHER_ACCOUNT)
    sm.create_secret(Name=f"shared/{p}/payments-api-key", SecretString="canary-xacct-key")
    sm.create_secret(Name=f"shared/{p}/payments/webhook-key", SecretString="canary-xacct-hook")
    ssm.put_parameter(Name=f"/shared/{p}/payments/endpoint", Value="https://pay", Type="String")
    proxy.iam.trust_role(TARGET, ROLE, external_id)
    proxy.iam.allow(ROLE, "sts:AssumeRole", TARGET)
    proxy.iam.allow(TARGET, "secretsmanager:GetSecretValue", f"shared/{p}/*")
    proxy.iam.allow(TARGET, "ssm:GetParameters", f"/shared/{p}/*")
    proxy.iam.allow(TARGET, "secretsmanager:ListSecrets", "*")  # the example's selection
    proxy.grant(TARGET, "secretsmanager:ListSecrets")
    params = example("cross-account.yaml")
    params["objects"] = params["objects"].replace("shared/", f"shared/{p}/")
    return params


def test_cross_account_example_with_irsa(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    params = cross_account(proxy)
    with server(tmp_path, proxy, kube, allow_role_chaining=True) as srv:
        resp = srv.mount("keyferry", params, tokens=irsa())
        again = srv.mount("keyferry", params, tokens=irsa())
        logs = "\n".join(srv.logs)
    want = {
        "payments/api-key": b"canary-xacct-key",
        "payments/endpoint": b"https://pay",
        "shared-payments/webhook-key": b"canary-xacct-hook",
    }
    assert files(resp) == want and files(again) == want
    assert proxy.count("AssumeRoleWithWebIdentity") == 1 and proxy.count("AssumeRole") == 1
    assert proxy.count("ListSecrets") == 2  # the class's selection, listed as TARGET
    assert logs and "canary-xacct-key" not in logs and "canary-xacct-hook" not in logs


def test_cross_account_example_with_pod_identity(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    params = cross_account(proxy)
    params["objects"] = params["objects"].replace(
        "assumeRoleArn:", "auth: podIdentity\n  assumeRoleArn:"
    )
    agent = PodIdentityAgent(proxy)
    agent.associate(DEFAULT_POD[0], DEFAULT_POD[3], ROLE)
    token = ISSUER.pod_token("pods.eks.amazonaws.com", DEFAULT_POD[0], DEFAULT_POD[3])
    try:
        with server(
            tmp_path,
            proxy,
            kube,
            allow_role_chaining=True,
            pod_identity={"ipv4_url": agent.url},
        ) as srv:
            resp = srv.mount("keyferry", params, tokens={"pods.eks.amazonaws.com": token})
    finally:
        agent.close()
    assert files(resp)["payments/api-key"] == b"canary-xacct-key"
    assert files(resp)["shared-payments/webhook-key"] == b"canary-xacct-hook"
    assert proxy.count("AssumeRoleWithWebIdentity") == 0 and proxy.count("AssumeRole") == 1


def test_cross_account_on_a_server_that_forbids_chaining(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    params = cross_account(proxy)
    with server(tmp_path, proxy, kube) as srv, pytest.raises(grpc.RpcError) as exc:
        srv.mount("keyferry", params, tokens=irsa())
    assert exc.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "backends.aws.allow_role_chaining" in str(exc.value.details())
    assert proxy.operations() == []


def test_history_example(tmp_path: Path, proxy: AwsFaults, kube: FakeKube) -> None:
    p = uuid.uuid4().hex[:8]
    sm, ssm = seed_clients("eu-west-1")
    db = f"prod/{p}/db-password"
    first = sm.create_secret(Name=db, SecretString="canary-db-1")["VersionId"]
    second = sm.put_secret_value(SecretId=db, SecretString="canary-db-2")["VersionId"]
    sm.create_secret(Name=f"prod/{p}/api-token", SecretString="token-1")
    key = f"/prod/{p}/signing-key"
    for value in ("key-1", "key-2"):
        ssm.put_parameter(Name=key, Value=value, Type="SecureString", Overwrite=True)
    params = example("history.yaml")
    params["objects"] = params["objects"].replace("prod/", f"prod/{p}/")
    with server(tmp_path, proxy, kube) as srv:
        resp = srv.mount("keyferry", params, tokens=irsa())
        assert files(resp) == {
            "db/0": b"canary-db-2",
            "db/1": b"canary-db-1",
            "signing-key.previous": b"key-1",
        }  # api-token has no previous version yet: optional, skipped
        assert versions(resp) == {"db/0": second, "db/1": first, "signing-key.previous": "1"}
        third = sm.put_secret_value(SecretId=db, SecretString="canary-db-3")["VersionId"]
        sm.put_secret_value(SecretId=f"prod/{p}/api-token", SecretString="token-2")
        rotated = srv.mount("keyferry", params, tokens=irsa())
    assert files(rotated)["db/2"] == b"canary-db-1"
    assert files(rotated)["api-token.previous"] == b"token-1"
    assert versions(rotated)["db/0"] == third  # the driver's rotation rewrites the files
