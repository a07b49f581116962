"""``select: {namePrefix, tags, includeCertificates}`` on ``backend: azure``
(provider/selection.py): Key Vault's secret listing (no server-side filter, so keyferry
filters), as the pod's identity, end to end over the native socket against the fake
Key Vault and Entra ID with the real Azure SDKs."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.azure_certs import chain
from keyferry_fakes.harness import SYNC_CONTROLLER_TOKEN_SECONDS, Server, wait_until
from keyferry_fakes.kube import FakeKube
from provider.errors import KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan

AUD = "api://AzureADTokenExchange"
POD = ("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")
CANARY = "CANARY-azure-selected-0b7e44"
WHO = f"vault: kv1\n  tenantID: {TENANT}\n  clientID: app-1"
SELECT_APP = f"- backend: azure\n  {WHO}\n  select: {{namePrefix: app-}}\n  path: app\n"


@pytest.fixture
def fake(fake: FakeAzure) -> FakeAzure:
    vault = fake.vault
    vault.add_secret("kv1", "app-db", CANARY, tags={"team": "a", "tier": "db"})
    vault.add_secret("kv1", "app-api", "api-key", tags={"team": "a"})
    off = vault.add_secret("kv1", "app-off", "disabled", tags={"team": "a"})
    vault.set_enabled("kv1", "secrets", "app-off", off, False)
    vault.add_secret("kv1", "batch", "batch", tags={"team": "b"})
    return fake


@pytest.fixture
def start(serve: Callable[..., Server], fake: FakeAzure, kube: FakeKube) -> Callable[..., Server]:
    def started(**config: Any) -> Server:
        config.setdefault("cache_ttl_seconds", 0)
        return serve(
            providers="keyferry",
            backends={"azure": fake.settings(retry_backoff_factor=0.01)},
            kubernetes=kube.settings(),
            **config,
        )

    return started


@pytest.fixture
def srv(start: Callable[..., Server]) -> Server:
    return start()


def mount(srv: Server, text: str) -> Any:
    return srv.mount("keyferry", {"objects": text}, tokens={AUD: pod_token()}, pod=POD)


def refused(srv: Server, text: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, text)
    return info.value


def files_of(resp: Any) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in resp.files}


def versions_of(resp: Any) -> dict[str, str]:
    return {v.id: v.version for v in resp.object_version}


def reads(fake: FakeAzure) -> list[str]:
    """The secret reads Key Vault answered (not the listing)."""
    return sorted(p.split("/")[3] for p in fake.vault.with_token if p.startswith("/kv1/secrets/"))


def test_a_prefix_selection_writes_each_enabled_secret_under_the_directory(
    srv: Server, fake: FakeAzure
) -> None:
    resp = mount(srv, SELECT_APP + "  mode: '0600'\n")
    assert files_of(resp) == {
        "app/app-api": (0o600, b"api-key"),
        "app/app-db": (0o600, CANARY.encode()),
    }
    versions = versions_of(resp)
    assert set(versions) == {"app", "app/app-api", "app/app-db"}
    assert versions["app/app-db"] == fake.vault.objects[("kv1", "secrets", "app-db")][-1].version
    assert reads(fake) == ["app-api", "app-db"]  # the disabled one is not even read
    listed = (
        'keyferry_backend_requests_total{backend="azure",operation="list_secrets",outcome="ok"}'
    )
    assert srv.metric(listed) == 1.0
    text = "\n".join(srv.logs) + srv.metrics_text() + "".join(versions.values())
    assert CANARY not in text


def test_the_prefix_matches_case_insensitively_as_key_vault_names_do(
    srv: Server, fake: FakeAzure
) -> None:
    text = f"- backend: azure\n  {WHO}\n  select: {{namePrefix: APP-}}\n  path: app\n"
    assert sorted(files_of(mount(srv, text))) == ["app/app-api", "app/app-db"]


def test_tags_select_with_every_tag_and_star_for_any_value(srv: Server, fake: FakeAzure) -> None:
    text = (
        f"- backend: azure\n  {WHO}\n  select: {{tags: {{team: a, tier: db}}}}\n  path: db\n"
        f"- backend: azure\n  {WHO}\n  select: {{tags: {{team: '*'}}}}\n  path: all\n"
        f"- backend: azure\n  {WHO}\n  select: {{namePrefix: b, tags: {{team: b}}}}\n  path: b\n"
    )
    assert sorted(files_of(mount(srv, text))) == [
        "all/app-api",
        "all/app-db",
        "all/batch",
        "b/batch",
        "db/app-db",
    ]


def test_certificates_backing_secrets_only_when_asked(srv: Server, fake: FakeAzure) -> None:
    ch = chain("p256")
    pfx = ch.pfx_value([ch.inter, ch.root])
    fake.vault.add_certificate(
        "kv1", "app-tls", ch.leaf.public_bytes(Encoding.DER), secret_value=pfx
    )
    assert sorted(files_of(mount(srv, SELECT_APP))) == ["app/app-api", "app/app-db"]
    with_certs = SELECT_APP.replace(
        "{namePrefix: app-}", "{namePrefix: app-, includeCertificates: true}"
    )
    got = files_of(mount(srv, with_certs))
    assert got["app/app-tls"] == (0o644, ch.key_pem() + ch.ordered_pem())  # upstream's PEM


def test_the_selection_version_follows_added_and_removed_secrets(
    srv: Server, fake: FakeAzure
) -> None:
    first = versions_of(mount(srv, SELECT_APP))
    assert versions_of(mount(srv, SELECT_APP)) == first
    fake.vault.add_secret("kv1", "app-new", "new")
    added = versions_of(mount(srv, SELECT_APP))
    assert set(added) == {"app", "app/app-api", "app/app-db", "app/app-new"}
    assert added["app"] != first["app"]
    del fake.vault.objects[("kv1", "secrets", "app-api")]
    removed = versions_of(mount(srv, SELECT_APP))
    assert set(removed) == {"app", "app/app-db", "app/app-new"}
    assert removed["app"] not in (first["app"], added["app"])
    rotated = fake.vault.add_secret("kv1", "app-db", "rotated")
    again = versions_of(mount(srv, SELECT_APP))
    assert again["app/app-db"] == rotated and again["app"] != removed["app"]


def test_the_listing_is_cached_per_identity(start: Callable[..., Server], fake: FakeAzure) -> None:
    srv = start(cache_ttl_seconds=300)
    first = mount(srv, SELECT_APP)
    fake.vault.add_secret("kv1", "app-new", "new")
    assert files_of(mount(srv, SELECT_APP)) == files_of(first)
    assert fake.vault.with_token["/kv1/secrets"] == 2  # one listing: two pages of two
    hits = 'keyferry_cache_events_total{cache="azure-listings",result="hit"}'
    assert srv.metric(hits) == 1.0
    # another application id is another identity: it lists for itself
    fake.entra.federate("app-2", "team-a", "web")
    fake.vault.grant_reader("kv1", "app-2")
    other = mount(srv, SELECT_APP.replace("clientID: app-1", "clientID: app-2"))
    assert "app/app-new" in files_of(other)


@pytest.mark.parametrize("rbac", [True, False], ids=["rbac", "access-policy"])
def test_a_listing_the_identity_may_not_make_names_what_to_grant(
    srv: Server, fake: FakeAzure, rbac: bool
) -> None:
    fake.vault.rbac = rbac
    fake.vault.revoke("kv1", "app-1")
    fake.vault.grant("kv1", "secrets", "app-1", operations=("get",))
    err = refused(srv, SELECT_APP)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    details = err.details() or ""
    assert "may not list the vault's secrets" in details
    assert "Key Vault Secrets User" in details and "list permission" in details
    assert "vault 'kv1'" in details
    assert reads(fake) == []


def test_more_matches_than_the_cap_fail_the_mount_without_reading_any(
    start: Callable[..., Server], fake: FakeAzure
) -> None:
    srv = start(max_selected_objects=1)
    err = refused(srv, SELECT_APP)
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_selected_objects" in (err.details() or "")
    assert reads(fake) == []


def test_names_that_cannot_be_safe_paths_fail_naming_them_never_skipped(
    srv: Server, fake: FakeAzure
) -> None:
    # Key Vault names are [0-9A-Za-z-]; a vault (or a fake) that hands out more still meets
    # the one path validator.
    fake.vault.add_secret("kv1", "..", "x", tags={"team": "a"})
    text = f"- backend: azure\n  {WHO}\n  select: {{tags: {{team: a}}}}\n  path: a\n"
    err = refused(srv, text)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'..'" in (err.details() or "")
    assert reads(fake) == []


def plan_error(text: str) -> str:
    with pytest.raises(KeyferryError) as info:
        make_plan(Mount(pod=Pod("ns", "p"), parameters={"objects": text}))
    assert info.value.code.name == "INVALID_ARGUMENT"
    return info.value.message


@pytest.mark.parametrize(
    ("select", "extra", "expected"),
    [
        ("{}", "", "'select' must be a mapping"),
        ("{includeCertificates: true}", "", "give 'namePrefix', 'tags' or both"),
        ("{namePrefix: 'a/b'}", "", "cannot start a Key Vault secret name"),
        ("{namePrefix: '..'}", "", "cannot start a Key Vault secret name"),
        ("{tags: [a]}", "", "'tags' must be a mapping"),
        ("{tags: {a: [b]}}", "", "must be text of at most 256"),
        ("{namePrefix: a, includeCertificates: maybe}", "", "includeCertificates"),
        ("{namePrefix: a}", "\n  version: abc", "'version' does not apply to 'select'"),
        ("{namePrefix: a}", "\n  type: key", "lists secrets only"),
        ("{namePrefix: a, tag: {a: b}}", "", "unknown key 'tag'"),
    ],
)
def test_bad_selections_are_invalid_argument_before_any_call(
    select: str, extra: str, expected: str
) -> None:
    text = f"- backend: azure\n  {WHO}\n  select: {select}\n  path: app{extra}\n"
    assert expected in plan_error(text)


def test_a_failing_listing_is_retried_within_the_budget_and_counted(
    srv: Server, fake: FakeAzure
) -> None:
    fake.vault.inject(503, 1, path="/kv1/secrets")
    assert sorted(files_of(mount(srv, SELECT_APP))) == ["app/app-api", "app/app-db"]
    attempts = 'keyferry_backend_attempts_total{backend="azure",operation="list_secrets"'
    assert srv.metric(f'{attempts},outcome="server_error"}}') == 1.0


def test_a_listing_outage_opens_the_vaults_breaker_then_fails_fast(
    serve: Callable[..., Server], fake: FakeAzure, kube: FakeKube
) -> None:
    srv = serve(
        providers="keyferry",
        backends={"azure": fake.settings(retry_total=0)},  # one answer per call
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )
    srv.breaker_clock()
    fake.vault.inject(503, times=100_000, path="/kv1/secrets")
    for _ in range(3):  # fail_fast_threshold
        err = refused(srv, SELECT_APP)
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert "listing the secrets of vault 'kv1'" in (err.details() or "")
    sent = fake.vault.requests["GET /kv1/secrets"]
    err = refused(srv, SELECT_APP)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "is down: 3 calls in a row failed" in (err.details() or "")
    assert fake.vault.requests["GET /kv1/secrets"] == sent  # nothing went out


def test_concurrent_identical_mounts_share_one_listing(srv: Server, fake: FakeAzure) -> None:
    pods = 4
    paused = fake.vault.pause_listing()
    coalesced = 'keyferry_cache_events_total{cache="azure-listings",result="coalesced"}'
    with ThreadPoolExecutor(pods) as pool:
        mounts = [pool.submit(mount, srv, SELECT_APP) for _ in range(pods)]
        wait_until(lambda: srv.metric(coalesced) == pods - 1)  # all in flight at once
        paused.set()
        assert [len(m.result().files) for m in mounts] == [2] * pods
    assert fake.vault.with_token["/kv1/secrets"] == 2  # one listing (two pages of two)


def test_the_sync_controller_mounts_a_selection_without_any_pod_or_node_lookup(
    srv: Server, fake: FakeAzure, kube: FakeKube
) -> None:
    token = pod_token(POD[0], POD[3], pod=None, lifetime=SYNC_CONTROLLER_TOKEN_SECONDS)
    resp = srv.sync_mount(
        "keyferry",
        {"objects": SELECT_APP},
        namespace=POD[0],
        service_account=POD[3],
        tokens={AUD: token},
    )
    assert sorted(files_of(resp)) == ["app/app-api", "app/app-db"]
    assert not kube.requests  # clientID and tenantID come from the class
    assert fake.vault.with_token["/kv1/secrets"] == 2
