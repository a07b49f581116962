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
from tests.clouds.lastgood import (
    audit_stale,
    cache_clock,
    contents,
    only_within_the_rule,
    served_through_outage,
    stale_metrics,
)

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


def refused(srv: Server, item: dict[str, Any], sa: str = DEFAULT_POD[3]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, item, sa)
    code: grpc.StatusCode = info.value.code()
    return code


def answer(proxy: AwsFaults, operation: str, code: str, status: int) -> Callable[[], None]:
    """A change of the fake: from now on ``operation`` answers ``code``."""

    def change() -> None:
        proxy.clear()
        proxy.fail(operation, code, status)

    return change


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
    # ListSecrets is down, the values are readable: the listing is last-known-good
    down = answer(proxy, "ListSecrets", "InternalServiceError", 500)
    served_through_outage(lambda: mount(srv, item), expected, down, clock, 100)
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

    only_within_the_rule(
        refused=lambda: refused(srv, item),
        refused_to_other=lambda: refused(srv, item, sa="other"),
        answer=answer(proxy, "ListSecrets", "AccessDeniedException", 400),
        answered=grpc.StatusCode.PERMISSION_DENIED,
        outage=answer(proxy, "ListSecrets", "InternalServiceError", 500),
        clock=clock,
        past_the_window=200.5,
    )
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
    down = answer(proxy, "ListSecretVersionIds", "InternalServiceError", 500)
    served_through_outage(lambda: mount(srv, item), expected, down, clock, 30)
    # the pinned versions were read again (cache_ttl_seconds 0 keeps none fresh): only
    # the listing is stale, and it makes both slots stale
    assert stale_metrics(srv, "aws") == {"history": 1, "values": 2}
    assert [s["age_seconds"] for s in audit_stale(srv)] == [30, 30]

    only_within_the_rule(
        refused=lambda: refused(srv, item),
        refused_to_other=lambda: refused(srv, item, sa="other"),
        answer=answer(proxy, "ListSecretVersionIds", "ResourceNotFoundException", 400),
        answered=grpc.StatusCode.NOT_FOUND,
        outage=answer(proxy, "ListSecretVersionIds", "InternalServiceError", 500),
        clock=clock,
        past_the_window=271,
    )


def test_listings_have_no_last_known_good_by_default(
    start: Callable[..., Server], proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_clock(monkeypatch)
    srv = start()
    item, expected = selection()
    assert contents(mount(srv, item)) == expected
    proxy.fail("ListSecrets", "InternalServiceError", 500)
    assert refused(srv, item) == grpc.StatusCode.UNAVAILABLE
    assert stale_metrics(srv, "aws") == {}
