"""Key Vault while a vault is down: fail fast, probe to recover, and the opt-in
last-known-good (``stale_if_error_seconds``), end to end over the ``azure`` socket with
the real SDK against the Key Vault fake. Time moves on an injected clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.harness import Clock, Server
from keyferry_fakes.kube import FakeKube

AUD = "api://AzureADTokenExchange"
POD = ("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")


def params(vault: str, name: str = "db") -> dict[str, str]:
    return {
        "keyvaultName": vault,
        "tenantID": TENANT,
        "clientID": "app-1",
        "objects": f"array:\n  - |\n    objectName: {name}\n    objectType: secret\n",
    }


def mount(srv: Server, vault: str, name: str = "db") -> Any:
    return srv.mount("azure", params(vault, name), tokens={AUD: pod_token()}, pod=POD)


def refused(srv: Server, vault: str, name: str = "db") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, vault, name)
    return info.value


def calls(fake: FakeAzure, vault: str) -> int:
    return sum(n for key, n in fake.vault.requests.items() if f" /{vault}/" in key)


@pytest.fixture
def start(
    serve: Callable[..., Server], fake: FakeAzure, kube: FakeKube
) -> Callable[..., tuple[Server, Clock]]:
    fake.vault.grant_reader("kv2", "app-1")
    fake.vault.add_secret("kv1", "db", "one")
    fake.vault.add_secret("kv2", "db", "two")

    def run(**config: Any) -> tuple[Server, Clock]:
        srv = serve(
            providers="keyferry,azure",
            backends={"azure": fake.settings(retry_total=0)},  # one answer per call
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            **config,
        )
        return srv, srv.breaker_clock()

    return run


def test_a_vault_in_outage_fails_fast_other_vaults_work_and_a_probe_closes_it(
    start: Callable[..., tuple[Server, Clock]], fake: FakeAzure
) -> None:
    srv, clock = start()
    host = fake.vault.url.split("://", 1)[1]
    label = f'backend="azure",endpoint="{host}/{{vault}}"'
    fake.vault.inject(503, times=100_000, path="/kv1/")
    for _ in range(3):  # fail_fast_threshold
        err = refused(srv, "kv1")
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "HTTP 503" in (err.details() or "")
    sent = calls(fake, "kv1")

    err = refused(srv, "kv1")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert f"azure endpoint {host}/kv1 is down: 3 calls in a row failed" in details
    assert "(last: HttpResponseError HTTP 503)" in details
    assert calls(fake, "kv1") == sent  # nothing went out
    assert srv.metric(f"keyferry_endpoint_fail_fast_total{{{label}}}") == 1
    assert srv.metric(f"keyferry_endpoint_state{{{label}}}") == 2
    assert "kv1" not in srv.metrics_text()  # the vault is tenant input: never a label

    assert mount(srv, "kv2").files[0].contents == b"two"

    fake.vault.faults.clear()
    refused(srv, "kv1")
    assert calls(fake, "kv1") == sent
    clock.now += 1.0
    assert mount(srv, "kv1").files[0].contents == b"one"
    assert srv.metric(f"keyferry_endpoint_state{{{label}}}") == 0


def test_throttling_does_not_open_the_vault(
    start: Callable[..., tuple[Server, Clock]], fake: FakeAzure
) -> None:
    srv, _ = start()
    fake.vault.inject(429, times=4, retry_after="0", path="/kv1/")
    for _ in range(4):
        assert refused(srv, "kv1").code() == grpc.StatusCode.UNAVAILABLE
    assert mount(srv, "kv1").files[0].contents == b"one"


def test_last_known_good_serves_the_same_identity_while_the_vault_is_down(
    start: Callable[..., tuple[Server, Clock]], fake: FakeAzure
) -> None:
    srv, _ = start(stale_if_error_seconds=300)
    assert mount(srv, "kv1").files[0].contents == b"one"
    fake.vault.inject(503, times=100_000, path="/kv1/")
    resp = mount(srv, "kv1")
    assert resp.files[0].contents == b"one"
    assert srv.metric('keyferry_stale_values_served_total{backend="azure"}') == 1
    (record,) = [json.loads(line) for line in srv.logs if '"stale"' in line]
    assert "db" in record["audit"]["stale"][0]["object"]
    # another object of the same vault was never fetched: nothing to serve
    fake.vault.add_secret("kv1", "other", "x")
    assert refused(srv, "kv1", "other").code() == grpc.StatusCode.UNAVAILABLE
