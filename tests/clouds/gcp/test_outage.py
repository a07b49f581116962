"""Google while an endpoint is down: fail fast, probe to recover, and the opt-in
last-known-good (``stale_if_error_seconds``), end to end over the ``gcp`` socket with
the Secret Manager fakes. Time moves on an injected clock."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.gcp import FakeSecretManager, GoogleStack
from keyferry_fakes.harness import DEFAULT_POD, Clock, Server
from keyferry_fakes.kube import FakeKube

NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
GSA = "web@my-project.iam.gserviceaccount.com"
EAST = "projects/my-project/locations/us-east1/secrets/db/versions/latest"
GLOBAL = "projects/my-project/secrets/db/versions/latest"
OUTAGE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def params(name: str) -> dict[str, str]:
    return {"secrets": f"- resourceName: {name}\n  path: db.txt\n"}


def outage(fake: FakeSecretManager) -> None:
    fake.fail(grpc.StatusCode.UNAVAILABLE, times=100_000)


def recover(fake: FakeSecretManager) -> None:
    fake.faults.clear()


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account(NS, KSA, {"iam.gke.io/gcp-service-account": GSA})
    return kube


@pytest.fixture
def start(
    serve: Callable[..., Server], google: GoogleStack, kube: FakeKube
) -> Callable[..., tuple[Server, Clock]]:
    google.google.bind(GSA, NS, KSA)
    google.google.allow_project(f"serviceAccount:{GSA}")
    google.secret_manager.add_version("my-project", "db", b"global")
    google.regional["us-east1"].add_version("my-project", "db", b"east")

    def run(gcp: dict[str, Any] | None = None, **config: Any) -> tuple[Server, Clock]:
        # No retries: an outage answers UNAVAILABLE at once, while a working endpoint has
        # time to answer on a loaded machine (a short attempt timeout made these flaky).
        timing = {
            "timeout_seconds": 3.0,
            "attempt_timeout_seconds": 2.0,
            "max_attempts": 1,
            **(gcp or {}),
        }
        srv = serve(
            providers="keyferry,gcp",
            backends={"gcp": google.settings(**timing)},
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            **config,
        )
        return srv, srv.breaker_clock()

    return run


def mount(srv: Server, google: GoogleStack, name: str) -> Any:
    return srv.mount("gcp", params(name), tokens=google.token(NS, KSA))


def refused(srv: Server, google: GoogleStack, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, google, name)
    return info.value


def test_a_location_in_outage_fails_fast_the_global_endpoint_works_and_a_probe_closes_it(
    start: Callable[..., tuple[Server, Clock]], google: GoogleStack
) -> None:
    srv, clock = start()
    east = google.regional["us-east1"]
    label = f'backend="gcp",endpoint="{east.endpoint}"'
    outage(east)
    for _ in range(3):  # fail_fast_threshold: three Mounts fail at the transport
        err = refused(srv, google, EAST)
        assert err.code() in OUTAGE  # UNAVAILABLE, or the last attempt's deadline
        assert "Secret Manager" in (err.details() or "")
    sent = len(east.calls)

    err = refused(srv, google, EAST)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    details = err.details() or ""
    assert f"gcp endpoint {east.endpoint} is down: 3 calls in a row failed" in details
    assert re.search(r"\(last: (UNAVAILABLE|DEADLINE_EXCEEDED)\)", details)
    assert len(east.calls) == sent  # nothing went out
    assert srv.metric(f"keyferry_endpoint_fail_fast_total{{{label}}}") == 1
    assert srv.metric(f"keyferry_endpoint_state{{{label}}}") == 2

    assert mount(srv, google, GLOBAL).files[0].contents == b"global"

    recover(east)
    refused(srv, google, EAST)
    assert len(east.calls) == sent
    clock.now += 1.0
    assert mount(srv, google, EAST).files[0].contents == b"east"
    assert srv.metric(f"keyferry_endpoint_state{{{label}}}") == 0


def test_a_failed_probe_keeps_it_open_for_longer(
    start: Callable[..., tuple[Server, Clock]], google: GoogleStack
) -> None:
    srv, clock = start()
    east = google.regional["us-east1"]
    outage(east)
    for _ in range(3):
        refused(srv, google, EAST)
    clock.now += 1.0
    sent = len(east.calls)
    assert "is down" not in (refused(srv, google, EAST).details() or "")  # the probe
    assert len(east.calls) > sent
    sent = len(east.calls)
    clock.now += 1.0  # the interval doubled: 2 s now
    assert "is down" in (refused(srv, google, EAST).details() or "")
    assert len(east.calls) == sent
    clock.now += 1.0
    recover(east)
    assert mount(srv, google, EAST).files[0].contents == b"east"


def test_last_known_good_serves_the_same_principal_while_google_is_down(
    start: Callable[..., tuple[Server, Clock]], google: GoogleStack
) -> None:
    srv, clock = start(stale_if_error_seconds=300)
    assert mount(srv, google, EAST).files[0].contents == b"east"
    outage(google.regional["us-east1"])
    for _ in range(5):  # the first three wait for Google, the rest fail fast
        assert mount(srv, google, EAST).files[0].contents == b"east"
    assert srv.metric('keyferry_stale_values_served_total{backend="gcp"}') == 5
    records = [json.loads(line) for line in srv.logs if '"msg": "mount"' in line]
    assert [r["audit"]["stale"][0]["object"] for r in records[-5:]] == [f"secrets[0] ({EAST})"] * 5

    recover(google.regional["us-east1"])
    google.regional["us-east1"].fail(grpc.StatusCode.PERMISSION_DENIED, times=10)
    clock.now += 1.0  # the probe gets Google's answer: a denial is never served stale
    assert refused(srv, google, EAST).code() == grpc.StatusCode.PERMISSION_DENIED


def test_throttling_that_outlasts_the_retries_does_not_open_the_location(
    start: Callable[..., tuple[Server, Clock]], google: GoogleStack
) -> None:
    """A throttling service is up: RESOURCE_EXHAUSTED until every retry is spent fails
    each Mount (DEADLINE_EXCEEDED: keyferry retried), but never makes the next one fail
    fast. Attempts have time to answer: a timed-out attempt is a sign of an outage."""
    srv, _ = start(gcp={"max_attempts": 5})
    east = google.regional["us-east1"]
    east.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, times=100_000)
    label = f'backend="gcp",endpoint="{east.endpoint}"'
    for _ in range(4):
        err = refused(srv, google, EAST)
        assert err.code() in OUTAGE
        assert "throttling" in (err.details() or "")
        assert "is down" not in (err.details() or "")
    assert not srv.metric(f"keyferry_endpoint_fail_fast_total{{{label}}}")
    assert not srv.metric(f"keyferry_endpoint_state{{{label}}}")
    recover(east)
    assert mount(srv, google, EAST).files[0].contents == b"east"
