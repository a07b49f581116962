"""The Azure fault matrix: Key Vault and Entra ID, each throttling (429 with and without
Retry-After), failing, resetting mid-response, slow or down (``tests/clouds/faults.py``),
through a real Mount on the ``azure`` socket. The Mount succeeds when the fault clears
inside the budget; otherwise it fails UNAVAILABLE or DEADLINE_EXCEEDED naming the service
and every object; the attempts on the wire are exactly those the settings allow (one
layer retries: a token request that failed is not tried again by Key Vault's policy), in
the fake's log and in ``keyferry_backend_attempts_total`` alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.faults import HTTP
from keyferry_fakes.harness import Server
from keyferry_fakes.kube import FakeKube
from tests.clouds.faults import MAX_ATTEMPTS, Endpoint, cases, check, serve

NS = "team-a"
APP = "app-faults"
VAULT = "kv-faults"


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, _azure: FakeAzure, _kube_api: FakeKube
) -> Iterator[Server]:
    azure = _azure.settings(
        retry_total=MAX_ATTEMPTS - 1, retry_backoff_factor=0.01, retry_backoff_max=0.05
    )
    tmp = tmp_path_factory.mktemp("azure-faults")
    with serve(tmp, "azure", {"azure": azure}, _kube_api.settings()) as server:
        yield server


@dataclass
class Pod:
    """A pod of its own ServiceAccount (a workload identity with no token yet) with two
    secrets."""

    sa: str
    secrets: list[str]


@pytest.fixture
def pod(azure: FakeAzure) -> Pod:
    sa = f"sa-{uuid.uuid4().hex[:8]}"
    azure.entra.federate(APP, NS, sa)
    azure.vault.grant_reader(VAULT, APP)
    secrets = [f"{sa}-db", f"{sa}-api"]
    for name in secrets:
        azure.vault.add_secret(VAULT, name, f"value of {name}")
    return Pod(sa, secrets)


ENDPOINTS: dict[str, Endpoint[FakeAzure]] = {
    # One GET per secret (after the challenge, which faults leave alone).
    "key-vault": Endpoint(
        "get_secret",
        "Key Vault",
        HTTP,
        lambda a: a.vault.faults,
        lambda a: sum(a.vault.with_token.values()),
        calls=2,
        where="/secrets/",
    ),
    # One token request per identity: the second secret waits for the first's token.
    "entra-id": Endpoint(
        "token", "Entra ID", HTTP, lambda a: a.entra.faults, lambda a: a.entra.token_requests, 1
    ),
}


@pytest.mark.parametrize(("endpoint", "fault"), cases(ENDPOINTS, "key-vault"))
def test_fault(srv: Server, azure: FakeAzure, pod: Pod, endpoint: str, fault: str) -> None:
    objects = "array:\n" + "".join(
        f"  - |\n    objectName: {n}\n    objectType: secret\n" for n in pod.secrets
    )
    check(
        srv,
        "azure",
        fault,
        ENDPOINTS[endpoint],
        azure,
        {"keyvaultName": VAULT, "tenantID": TENANT, "clientID": APP, "objects": objects},
        pod.secrets,
        tokens={"api://AzureADTokenExchange": pod_token(NS, pod.sa)},
        pod=(NS, "web-0", "uid-0", pod.sa),
    )
