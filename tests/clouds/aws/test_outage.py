"""AWS while an endpoint is down: fail fast, probe to recover, and the opt-in
last-known-good (``stale_if_error_seconds``), end to end over the ``aws`` socket with
moto behind the fault-injecting proxy. Time moves on an injected clock."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import DEFAULT_POD, Clock, Server
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER

OTHER_ROLE = "arn:aws:iam::123456789012:role/other"


def irsa(sa: str = DEFAULT_POD[3]) -> dict[str, str]:
    ns, name = DEFAULT_POD[0], DEFAULT_POD[1]
    return {"sts.amazonaws.com": ISSUER.pod_token("sts.amazonaws.com", ns, sa, pod=name)}


def secret(region: str, value: str = "v1") -> tuple[str, str]:
    """A new secret in ``region``: its name and VersionId."""
    sm, _ = seed_clients(region)
    name = f"outage-{uuid.uuid4().hex[:8]}"
    made = sm.create_secret(Name=name, SecretString=value)
    return name, str(made["VersionId"])


def params(name: str, region: str) -> dict[str, str]:
    return {"region": region, "objects": f"- objectName: {name}\n  objectType: secretsmanager\n"}


def mount(srv: Server, name: str, region: str, sa: str = DEFAULT_POD[3]) -> Any:
    pod = (*DEFAULT_POD[:3], sa)
    return srv.mount("aws", params(name, region), tokens=irsa(sa), pod=pod)


def refused(srv: Server, name: str, region: str, sa: str = DEFAULT_POD[3]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, name, region, sa)
    return info.value


@pytest.fixture
def start(
    serve: Callable[..., Server], proxy: AwsFaults, kube: FakeKube
) -> Callable[..., tuple[Server, Clock]]:
    def run(**config: Any) -> tuple[Server, Clock]:
        srv = serve(
            providers="keyferry,aws",
            # one attempt per call: each Mount's failure is one call, counted exactly
            backends={"aws": {"endpoint_url": proxy.url, "max_attempts": 1}},
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            **config,
        )
        return srv, srv.breaker_clock()

    return run


def test_an_endpoint_in_outage_fails_fast_other_regions_work_and_a_probe_closes_it(
    start: Callable[..., tuple[Server, Clock]], proxy: AwsFaults
) -> None:
    srv, clock = start(http_address="127.0.0.1:0")
    east, _ = secret("us-east-1")
    west, _ = secret("us-east-2", "from the west")
    host = proxy.url.split("://", 1)[1]
    label = f'backend="aws",endpoint="{host}"'
    proxy.fail("GetSecretValue", "InternalServiceError", 500, region="us-east-1")

    for _ in range(3):  # fail_fast_threshold: each Mount waits for AWS's answer
        err = refused(srv, east, "us-east-1")
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "server error" in (err.details() or "")
    sent = proxy.count("GetSecretValue", "us-east-1")
    assert sent == 3

    err = refused(srv, east, "us-east-1")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert f"aws endpoint {host} (secretsmanager in us-east-1) is down" in details
    assert "3 calls in a row failed (last: InternalServiceError)" in details
    assert east in details  # the object, as every failure names it
    assert proxy.count("GetSecretValue", "us-east-1") == sent  # nothing went out
    assert srv.metric(f"keyferry_endpoint_fail_fast_total{{{label}}}") == 1
    assert srv.metric(f"keyferry_endpoint_state{{{label}}}") == 2
    # informational in /readyz?verbose; readiness itself does not fail
    assert srv.http_get("/readyz") == (200, "ok\n")
    status, text = srv.http_get("/readyz?verbose")
    assert status == 200 and text.startswith("ok\n")
    assert f"endpoint aws {host}: 1 open, 0 probing" in text

    # another endpoint (us-east-2) is not affected
    assert mount(srv, west, "us-east-2").files[0].contents == b"from the west"

    proxy.clear()  # AWS is back, but the endpoint stays open until its interval ends
    assert refused(srv, east, "us-east-1").code() == grpc.StatusCode.UNAVAILABLE
    assert proxy.count("GetSecretValue", "us-east-1") == 0
    clock.now += 1.0  # fail_fast_seconds: the next Mount probes, and closes it
    assert mount(srv, east, "us-east-1").files[0].contents == b"v1"
    assert srv.metric(f"keyferry_endpoint_state{{{label}}}") == 0
    assert "every backend endpoint is up" in srv.http_get("/readyz?verbose")[1]
    assert mount(srv, east, "us-east-1").files
    assert any('"endpoint up again"' in line for line in srv.logs)


def test_an_open_primary_region_fails_over_at_once(
    start: Callable[..., tuple[Server, Clock]], proxy: AwsFaults
) -> None:
    srv, _ = start()
    east, _ = secret("us-east-1", "primary")
    west, _ = secret("us-east-2", "failover")
    params = {
        "region": "us-east-1",
        "failoverRegion": "us-east-2",
        "objects": f"- objectName: {east}\n  objectType: secretsmanager\n"
        f"  objectAlias: db\n  failoverObject: {{objectName: {west}}}\n",
    }
    proxy.fail("GetSecretValue", "InternalServiceError", 500, region="us-east-1")
    for _ in range(4):
        resp = srv.mount("aws", params, tokens=irsa())
        assert resp.files[0].contents == b"failover"
    assert proxy.count("GetSecretValue", "us-east-1") == 3  # then open: not asked again
    assert proxy.count("GetSecretValue", "us-east-2") == 4


def test_access_denied_and_throttling_do_not_open_the_endpoint(
    start: Callable[..., tuple[Server, Clock]], proxy: AwsFaults
) -> None:
    srv, _ = start()
    name, _ = secret("us-east-1")
    proxy.fail("GetSecretValue", "AccessDeniedException", 400, times=3)
    proxy.fail("GetSecretValue", "ThrottlingException", 400, times=3)
    for code in [grpc.StatusCode.PERMISSION_DENIED] * 3 + [grpc.StatusCode.UNAVAILABLE] * 3:
        assert refused(srv, name, "us-east-1").code() == code
    assert mount(srv, name, "us-east-1").files
    assert proxy.count("GetSecretValue") == 7


def test_last_known_good_serves_the_same_principal_while_aws_is_down(
    start: Callable[..., tuple[Server, Clock]], proxy: AwsFaults, kube: FakeKube
) -> None:
    kube.add_service_account("team-a", "other", {"eks.amazonaws.com/role-arn": OTHER_ROLE})
    proxy.trust(OTHER_ROLE, "team-a", "other")
    srv, _ = start(stale_if_error_seconds=300, fail_fast_threshold=0)
    name, version = secret("us-east-1", "last known good")
    assert mount(srv, name, "us-east-1").files[0].contents == b"last known good"

    proxy.fail("GetSecretValue", "InternalServiceError", 500)
    resp = mount(srv, name, "us-east-1")
    assert resp.files[0].contents == b"last known good"
    assert [v.version for v in resp.object_version] == [version]
    assert srv.metric('keyferry_stale_values_served_total{backend="aws"}') == 1
    records = [json.loads(line) for line in srv.logs if '"msg": "mount"' in line]
    assert records[-1]["audit"]["outcome"] == "ok"
    (stale,) = records[-1]["audit"]["stale"]
    assert name in stale["object"] and stale["age_seconds"] >= 0
    assert any("last-known-good" in line and name in line for line in srv.logs)

    # another principal never gets it, even for the same object
    err = refused(srv, name, "us-east-1", sa="other")
    assert err.code() == grpc.StatusCode.UNAVAILABLE

    # a denial or a missing object is an answer, not an outage: never served stale
    proxy.clear()
    proxy.fail("GetSecretValue", "AccessDeniedException", 400)
    assert refused(srv, name, "us-east-1").code() == grpc.StatusCode.PERMISSION_DENIED
    proxy.clear()
    proxy.fail("GetSecretValue", "ResourceNotFoundException", 400)
    assert refused(srv, name, "us-east-1").code() == grpc.StatusCode.NOT_FOUND
    assert srv.metric('keyferry_stale_values_served_total{backend="aws"}') == 1


def test_last_known_good_is_off_by_default(
    start: Callable[..., tuple[Server, Clock]], proxy: AwsFaults
) -> None:
    srv, _ = start(fail_fast_threshold=0)
    name, _ = secret("us-east-1")
    assert mount(srv, name, "us-east-1").files
    proxy.fail("GetSecretValue", "InternalServiceError", 500)
    assert refused(srv, name, "us-east-1").code() == grpc.StatusCode.UNAVAILABLE


def test_an_open_endpoint_is_served_from_last_known_good_at_once(
    start: Callable[..., tuple[Server, Clock]], proxy: AwsFaults
) -> None:
    srv, _ = start(stale_if_error_seconds=300)
    name, _ = secret("us-east-1", "kept")
    assert mount(srv, name, "us-east-1").files
    proxy.fail("GetSecretValue", "InternalServiceError", 500)
    for _ in range(5):
        assert mount(srv, name, "us-east-1").files[0].contents == b"kept"
    assert proxy.count("GetSecretValue") == 1 + 3  # then fail fast, served from memory
