"""Last-known-good for Key Vault listings (``stale_if_error_seconds``): a selection (the
vault's secret listing) and a version history (the object's version listing) are served
from the last listing of the same identity and query while the vault is unavailable, end
to end over the native socket with the real SDK against the Key Vault fake. The caches'
time moves on an injected clock."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.harness import Server
from keyferry_fakes.kube import FakeKube
from tests.clouds.lastgood import (
    audit_stale,
    cache_clock,
    only_within_the_rule,
    served_through_outage,
    stale_metrics,
)

AUD = "api://AzureADTokenExchange"
CANARY = "CANARY-azure-lkg-listing-61fa"
IDENTITIES = {"web": "app-1", "other": "app-2"}


def selection(client: str) -> str:
    return (
        f"- {{backend: azure, vault: kv1, tenantID: {TENANT}, clientID: {client}, "
        "select: {namePrefix: app-}, path: app}"
    )


def history(client: str) -> str:
    return (
        f"- {{backend: azure, vault: kv1, tenantID: {TENANT}, clientID: {client}, "
        "name: rotating, path: rotating, versionHistory: 2}"
    )


@pytest.fixture
def start(serve: Callable[..., Server], fake: FakeAzure, kube: FakeKube) -> Callable[..., Server]:
    fake.entra.federate("app-2", "team-a", "other")
    fake.vault.grant_reader("kv1", "app-2")
    fake.vault.add_secret("kv1", "app-db", CANARY)
    fake.vault.add_secret("kv1", "app-api", "api-key")
    fake.vault.add_secret("kv1", "rotating", f"{CANARY}-1")
    fake.vault.add_secret("kv1", "rotating", f"{CANARY}-2")

    def run(**config: Any) -> Server:
        return serve(
            providers="keyferry",
            backends={"azure": fake.settings(retry_total=0)},  # one answer per call
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            fail_fast_threshold=0,
            **config,
        )

    return run


def mount(srv: Server, text: Any, sa: str = "web") -> Any:
    objects = text(IDENTITIES[sa])
    pod = ("team-a", f"{sa}-0", "11111111-2222-3333-4444-555555555555", sa)
    return srv.mount(
        "keyferry", {"objects": objects}, tokens={AUD: pod_token("team-a", sa)}, pod=pod
    )


def refused(srv: Server, text: Any, sa: str = "web") -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, text, sa)
    code: grpc.StatusCode = info.value.code()
    return code


def answer(fake: FakeAzure, status: int) -> None:
    """Every request to vault kv1 answers ``status`` from now on."""
    fake.vault.faults.clear()
    fake.vault.inject(status, times=100_000, path="/kv1/")


def test_a_selection_is_served_from_its_last_listing_while_the_vault_is_down(
    start: Callable[..., Server], fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    expected = {"app/app-api": b"api-key", "app/app-db": CANARY.encode()}
    down = functools.partial(answer, fake, 503)  # the listing and the values
    served_through_outage(lambda: mount(srv, selection), expected, down, clock, 45)
    assert stale_metrics(srv, "azure") == {"selection": 1, "values": 1}
    (stale,) = audit_stale(srv)
    assert stale["object"].startswith("objects[0] (azure: select") and stale["age_seconds"] == 45
    assert any("last-known-good listing" in line for line in srv.logs)
    assert not any(CANARY in line for line in srv.logs)

    only_within_the_rule(
        refused=lambda: refused(srv, selection),
        refused_to_other=lambda: refused(srv, selection, sa="other"),
        answer=lambda: answer(fake, 403),
        answered=grpc.StatusCode.PERMISSION_DENIED,
        outage=lambda: answer(fake, 503),
        clock=clock,
        past_the_window=255.5,
    )
    assert stale_metrics(srv, "azure") == {"selection": 1, "values": 1}


def test_a_history_is_served_from_its_last_listing_while_the_vault_is_down(
    start: Callable[..., Server], fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    expected = {"rotating/0": f"{CANARY}-2".encode(), "rotating/1": f"{CANARY}-1".encode()}
    down = functools.partial(answer, fake, 503)
    served_through_outage(lambda: mount(srv, history), expected, down, clock, 20)
    # each slot looks the listing up (one call, shared while it is in flight)
    assert stale_metrics(srv, "azure") == {"history": 2, "values": 2}
    assert [s["age_seconds"] for s in audit_stale(srv)] == [20, 20]

    only_within_the_rule(
        refused=lambda: refused(srv, history),
        refused_to_other=lambda: refused(srv, history, sa="other"),
        answer=lambda: answer(fake, 404),
        answered=grpc.StatusCode.NOT_FOUND,
        outage=lambda: answer(fake, 503),
        clock=clock,
        past_the_window=281,
    )


def test_listings_have_no_last_known_good_by_default(
    start: Callable[..., Server], fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_clock(monkeypatch)
    srv = start()
    assert mount(srv, selection).files and mount(srv, history).files
    answer(fake, 503)
    assert refused(srv, selection) == grpc.StatusCode.UNAVAILABLE
    assert refused(srv, history) == grpc.StatusCode.UNAVAILABLE
    assert stale_metrics(srv, "azure") == {}
