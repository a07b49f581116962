"""Last-known-good for AWS listings (``stale_if_error_seconds``): a selection (ListSecrets,
GetParametersByPath) and a version history (ListSecretVersionIds) are served from the last
listing of the same principal and query while AWS is unavailable, end to end over the
native socket with moto behind the fault-injecting proxy. The caches' time moves on an
injected clock (:func:`tests.clouds.lastgood.cache_clock`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import DEFAULT_POD, Server
from keyferry_fakes.kube import FakeKube
from tests.clouds.aws.test_e2e import ROLE
from tests.clouds.aws.test_outage import OTHER_ROLE, irsa
from tests.clouds.lastgood import audit_stale, cache_clock, stale_metrics

CANARY = "CANARY-aws-lkg-listing-3c9e"
LIST_SECRETS = "secretsmanager:ListSecrets"
BY_PATH = "ssm:GetParametersByPath"
VALUE_CALLS = ("BatchGetSecretValue", "GetSecretValue")


@pytest.fixture
def start(serve: Callable[..., Server], proxy: AwsFaults, kube: FakeKube) -> Callable[..., Server]:
    kube.add_service_account("team-a", "other", {"eks.amazonaws.com/role-arn": OTHER_ROLE})
    proxy.trust(OTHER_ROLE, "team-a", "other")
    for role in (ROLE, OTHER_ROLE):
        proxy.grant(role, LIST_SECRETS, BY_PATH)

    def run(**config: Any) -> Server:
        return serve(
            providers="keyferry",
            # one attempt per call; no breaker, so a denial after the outage is AWS's answer
            backends={"aws": {"endpoint_url": proxy.url, "max_attempts": 1}},
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            fail_fast_threshold=0,
            **config,
        )

    return run


def native(item: dict[str, Any]) -> dict[str, str]:
    return {"objects": json.dumps([{"backend": "aws", "region": "us-east-1", **item}])}


def mount(srv: Server, item: dict[str, Any], sa: str = DEFAULT_POD[3]) -> Any:
    pod = (*DEFAULT_POD[:3], sa)
    return srv.mount("keyferry", native(item), tokens=irsa(sa), pod=pod)


def refused(srv: Server, item: dict[str, Any], sa: str = DEFAULT_POD[3]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, item, sa)
    return info.value


def contents(resp: Any) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def selection() -> tuple[dict[str, Any], dict[str, bytes]]:
    prefix = f"lkg-{uuid.uuid4().hex[:8]}/"
    sm, _ = seed_clients("us-east-1")
    for rel in ("db", "api"):
        sm.create_secret(Name=prefix + rel, SecretString=f"{CANARY}-{rel}")
    expected = {f"app/{rel}": f"{CANARY}-{rel}".encode() for rel in ("api", "db")}
    return {"select": {"namePrefix": prefix}, "path": "app"}, expected


def test_a_selection_is_served_from_its_last_listing_while_aws_is_down(
    start: Callable[..., Server], proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    item, expected = selection()
    first = mount(srv, item)
    assert contents(first) == expected

    # ListSecrets is down, the values are readable: the listing is last-known-good
    proxy.fail("ListSecrets", "InternalServiceError", 500)
    clock.now += 100
    resp = mount(srv, item)
    assert contents(resp) == expected
    assert resp.object_version == first.object_version  # a rotation sees no change
    assert stale_metrics(srv, "aws") == {"selection": 1, "values": 1}
    (stale,) = audit_stale(srv)
    assert stale["object"].startswith("objects[0] (aws: select ") and stale["age_seconds"] == 100
    assert any("last-known-good listing" in line for line in srv.logs)
    assert not any(CANARY in line for line in srv.logs) and CANARY not in srv.metrics_text()

    # the values fail too: they come from the value cache's own window
    for operation in VALUE_CALLS:
        proxy.fail(operation, "InternalServiceError", 500)
    assert contents(mount(srv, item)) == expected
    assert stale_metrics(srv, "aws") == {"selection": 2, "values": 2}

    # another principal never gets the listing (nor the values)
    assert refused(srv, item, sa="other").code() == grpc.StatusCode.UNAVAILABLE

    # a denial is AWS's answer, not its absence: never served stale
    proxy.clear()
    proxy.fail("ListSecrets", "AccessDeniedException", 400)
    assert refused(srv, item).code() == grpc.StatusCode.PERMISSION_DENIED

    # past the window: the outage fails the Mount
    proxy.clear()
    proxy.fail("ListSecrets", "InternalServiceError", 500)
    clock.now += 200.5
    assert refused(srv, item).code() == grpc.StatusCode.UNAVAILABLE
    assert stale_metrics(srv, "aws") == {"selection": 2, "values": 2}


def test_an_ssm_path_selection_is_served_from_its_last_listing(
    start: Callable[..., Server], proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    path = f"/lkg/{uuid.uuid4().hex[:8]}"
    _, ssm = seed_clients("us-east-1")
    ssm.put_parameter(Name=f"{path}/db", Value=f"{CANARY}-p", Type="SecureString")
    item = {"service": "ssm", "select": {"path": path}, "path": "params"}
    assert contents(mount(srv, item)) == {"params/db": f"{CANARY}-p".encode()}
    proxy.fail("GetParametersByPath", "InternalServerError", 500)
    proxy.fail("GetParameters", "InternalServerError", 500)
    assert contents(mount(srv, item)) == {"params/db": f"{CANARY}-p".encode()}
    assert stale_metrics(srv, "aws") == {"selection": 1, "values": 1}


def test_a_history_is_served_from_its_last_listing_while_aws_is_down(
    start: Callable[..., Server], proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    sm, _ = seed_clients("us-east-1")
    name = f"lkg-hist/{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString=f"{CANARY}-1")
    sm.put_secret_value(SecretId=name, SecretString=f"{CANARY}-2")
    item = {"service": "secretsmanager", "name": name, "path": "db", "versionHistory": "2"}
    expected = {"db/0": f"{CANARY}-2".encode(), "db/1": f"{CANARY}-1".encode()}
    first = mount(srv, item)
    assert contents(first) == expected

    proxy.fail("ListSecretVersionIds", "InternalServiceError", 500)
    clock.now += 30
    resp = mount(srv, item)
    assert contents(resp) == expected and resp.object_version == first.object_version
    # the pinned versions were read again (cache_ttl_seconds 0 keeps none fresh): only
    # the listing is stale, and it makes both slots stale
    assert stale_metrics(srv, "aws") == {"history": 1, "values": 2}
    assert [s["age_seconds"] for s in audit_stale(srv)] == [30, 30]

    assert refused(srv, item, sa="other").code() == grpc.StatusCode.UNAVAILABLE
    proxy.clear()
    proxy.fail("ListSecretVersionIds", "ResourceNotFoundException", 400)
    assert refused(srv, item).code() == grpc.StatusCode.NOT_FOUND
    proxy.clear()
    proxy.fail("ListSecretVersionIds", "InternalServiceError", 500)
    clock.now += 271
    assert refused(srv, item).code() == grpc.StatusCode.UNAVAILABLE


def test_listings_have_no_last_known_good_by_default(
    start: Callable[..., Server], proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_clock(monkeypatch)
    srv = start()
    item, expected = selection()
    assert contents(mount(srv, item)) == expected
    proxy.fail("ListSecrets", "InternalServiceError", 500)
    assert refused(srv, item).code() == grpc.StatusCode.UNAVAILABLE
    assert stale_metrics(srv, "aws") == {}
