"""The Google fault matrix: Secret Manager and Parameter Manager (gRPC), STS and IAM
Credentials (HTTP), each throttling (RESOURCE_EXHAUSTED with and without RetryInfo, 429
with and without Retry-After), failing, resetting mid-response, slow or down
(``tests/clouds/faults.py``), through a real Mount on the ``gcp`` socket. The Mount
succeeds when the fault clears inside the budget; otherwise it fails UNAVAILABLE or
DEADLINE_EXCEEDED naming the service and every object; the attempts on the wire are
exactly those the settings allow, in the fake's log and in
``keyferry_backend_attempts_total`` alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keyferry_fakes.faults import GRPC, HTTP
from keyferry_fakes.gcp import GoogleStack
from keyferry_fakes.harness import Server
from keyferry_fakes.kube import FakeKube
from tests.clouds.faults import MAX_ATTEMPTS, Endpoint, cases, check, serve

NS = "team-a"


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, _google: GoogleStack, _kube_api: FakeKube
) -> Iterator[Server]:
    gcp = _google.settings(max_attempts=MAX_ATTEMPTS)
    tmp = tmp_path_factory.mktemp("gcp-faults")
    with serve(tmp, "gcp", {"gcp": gcp}, _kube_api.settings()) as server:
        yield server


@dataclass
class Pod:
    """A pod of its own ServiceAccount (no token cached for it yet), impersonating its own
    Google service account, with two secrets and two parameters."""

    ksa: str
    secrets: list[str]
    parameters: list[str]


@pytest.fixture
def pod(google: GoogleStack, kube: FakeKube) -> Pod:
    ksa = f"sa-{uuid.uuid4().hex[:8]}"
    gsa = f"{ksa}@my-project.iam.gserviceaccount.com"
    kube.add_service_account(NS, ksa, {"iam.gke.io/gcp-service-account": gsa})
    google.google.bind(gsa, NS, ksa)
    google.google.allow_project(f"serviceAccount:{gsa}")
    pod = Pod(ksa, [], [])
    for part in ("db", "api"):
        name = f"{ksa}-{part}"
        google.secret_manager.add_version("my-project", name, b"value")
        pod.secrets.append(f"projects/my-project/secrets/{name}/versions/latest")
        google.parameter_manager.add_version("my-project", name, "v1", b"{}")
        pod.parameters.append(f"projects/my-project/locations/global/parameters/{name}/versions/v1")
    return pod


ENDPOINTS: dict[str, Endpoint[GoogleStack]] = {
    # One call per object; both on one connection.
    "secret-manager": Endpoint(
        "AccessSecretVersion",
        "Secret Manager",
        GRPC,
        lambda g: g.secret_manager.faults,
        lambda g: len(g.secret_manager.calls),
        calls=2,
        shared=True,
    ),
    "parameter-manager": Endpoint(
        "RenderParameterVersion",
        "Parameter Manager",
        GRPC,
        lambda g: g.parameter_manager.faults,
        lambda g: len(g.parameter_manager.calls),
        calls=2,
        shared=True,
    ),
    # One token exchange (and impersonation) per Mount.
    "sts": Endpoint(
        "sts_exchange",
        "STS",
        HTTP,
        lambda g: g.identity.faults,
        lambda g: g.identity.requests["sts"],
        calls=1,
        where="sts",
    ),
    "iam-credentials": Endpoint(
        "generate_access_token",
        "IAM Credentials",
        HTTP,
        lambda g: g.identity.faults,
        lambda g: g.identity.requests["iam"],
        calls=1,
        where="iam",
    ),
}


@pytest.mark.parametrize(("endpoint", "fault"), cases(ENDPOINTS, "secret-manager"))
def test_fault(srv: Server, google: GoogleStack, pod: Pod, endpoint: str, fault: str) -> None:
    names = pod.parameters if endpoint == "parameter-manager" else pod.secrets
    text = "".join(f"- resourceName: {n}\n  path: f{i}\n" for i, n in enumerate(names))
    check(
        srv,
        "gcp",
        fault,
        ENDPOINTS[endpoint],
        google,
        {"secrets": text},
        names,
        tokens=google.token(NS, pod.ksa),
        pod=(NS, "web-0", "uid-0", pod.ksa),
    )
