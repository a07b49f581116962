"""The AWS fault matrix: Secrets Manager, SSM, STS (IRSA) and the EKS Pod Identity agent,
each throttling, failing, resetting, slow or down (``tests/clouds/faults.py``), through a
real Mount on the ``aws`` socket. The Mount succeeds when the fault clears inside the
budget; otherwise it fails UNAVAILABLE or DEADLINE_EXCEEDED naming the service and every
object; the attempts on the wire are exactly those the settings allow, in the proxy's
request log and in ``keyferry_backend_attempts_total`` alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keyferry_fakes.aws_agent import PodIdentityAgent
from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.aws_stack import ROLE
from keyferry_fakes.faults import AWS_JSON, AWS_QUERY, HTTP
from keyferry_fakes.harness import Server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from tests.clouds.faults import (
    MAX_ATTEMPTS,
    Endpoint,
    cases,
    check,
    serve,
)

REGION = "eu-west-3"
POD_IDENTITY_ROLE = "arn:aws:iam::123456789012:role/pod-identity"


@dataclass
class Fakes:
    proxy: AwsFaults
    agent: PodIdentityAgent


@pytest.fixture(scope="module")
def agent(_aws_proxy: AwsFaults) -> Iterator[PodIdentityAgent]:
    agent = PodIdentityAgent(_aws_proxy)
    yield agent
    agent.close()


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory,
    _aws_proxy: AwsFaults,
    _kube_api: FakeKube,
    agent: PodIdentityAgent,
) -> Iterator[Server]:
    aws = {
        "endpoint_url": _aws_proxy.url,
        "region": REGION,
        "max_attempts": MAX_ATTEMPTS,
        "max_backoff_seconds": 0.02,
        "pod_identity": {"ipv4_url": agent.url},
    }
    tmp = tmp_path_factory.mktemp("aws-faults")
    with serve(tmp, "aws", {"aws": aws}, _kube_api.settings()) as server:
        yield server


@dataclass
class Pod:
    """A pod of its own ServiceAccount (no credentials cached for it yet) with two
    secrets and two parameters."""

    sa: str
    secrets: list[str]
    parameters: list[str]


@pytest.fixture
def pod(proxy: AwsFaults, kube: FakeKube, agent: PodIdentityAgent) -> Iterator[Pod]:
    sa = f"sa-{uuid.uuid4().hex[:8]}"
    kube.add_service_account("team-a", sa, {"eks.amazonaws.com/role-arn": ROLE})
    proxy.trust(ROLE, "team-a", sa)
    agent.associate("team-a", sa, POD_IDENTITY_ROLE)
    agent.seen.clear()
    sm, ssm = seed_clients(REGION)
    secrets = [f"{sa}-db", f"{sa}-api"]
    for name in secrets:
        sm.create_secret(Name=name, SecretString=f"value of {name}")
    parameters = [f"/{sa}/db", f"/{sa}/api"]
    for name in parameters:
        ssm.put_parameter(Name=name, Value=f"value of {name}", Type="String")
    yield Pod(sa, secrets, parameters)
    agent.faults.clear()


def _proxied(operation: str, service: str, wire: object) -> Endpoint[Fakes]:
    return Endpoint(
        operation,
        service,
        wire,  # type: ignore[arg-type]
        lambda f: f.proxy.faults,
        lambda f: f.proxy.count(operation),
        calls=1,
        where=operation,
    )


ENDPOINTS: dict[str, Endpoint[Fakes]] = {
    # Two secrets: one BatchGetSecretValue; two parameters: one GetParameters.
    "secretsmanager": _proxied("BatchGetSecretValue", "Secrets Manager", AWS_JSON),
    "ssm": _proxied("GetParameters", "SSM", AWS_JSON),
    "sts": _proxied("AssumeRoleWithWebIdentity", "AssumeRoleWithWebIdentity", AWS_QUERY),
    "pod-identity": Endpoint(
        "GetCredentials",
        "EKS Pod Identity",
        HTTP,
        lambda f: f.agent.faults,
        lambda f: len(f.agent.seen),
        calls=1,
    ),
}


@pytest.mark.parametrize(("endpoint", "fault"), cases(ENDPOINTS, "secretsmanager"))
def test_fault(
    srv: Server, proxy: AwsFaults, agent: PodIdentityAgent, pod: Pod, endpoint: str, fault: str
) -> None:
    if endpoint == "ssm":
        names, kind = pod.parameters, "ssmparameter"
    else:
        names, kind = pod.secrets, "secretsmanager"
    params = {"objects": "".join(f"- objectName: {n}\n  objectType: {kind}\n" for n in names)}
    audience = "sts.amazonaws.com"
    if endpoint == "pod-identity":
        params["usePodIdentity"] = "true"
        audience = "pods.eks.amazonaws.com"
    token = ISSUER.pod_token(audience, "team-a", pod.sa, pod="web-0")
    check(
        srv,
        "aws",
        fault,
        ENDPOINTS[endpoint],
        Fakes(proxy, agent),
        params,
        names,
        tokens={audience: token},
        pod=("team-a", "web-0", "uid-0", pod.sa),
    )
