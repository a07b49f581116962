"""Last-known-good for Secret Manager listings (``stale_if_error_seconds``): a label
selection (ListSecrets) and a version history (ListSecretVersions) are served from the
last listing of the same principal and query while Google is unavailable, end to end over
the native socket against the Google fakes. The caches' time moves on an injected clock."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.gcp import SECRET_VIEWER, GoogleStack
from keyferry_fakes.harness import DEFAULT_POD, Server
from keyferry_fakes.kube import FakeKube
from tests.clouds.lastgood import (
    OUTAGE,
    audit_stale,
    cache_clock,
    only_within_the_rule,
    served_through_outage,
    stale_metrics,
)

NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
PRINCIPALS = {
    KSA: "web@my-project.iam.gserviceaccount.com",
    "other": "other@my-project.iam.gserviceaccount.com",
}
CANARY = b"CANARY-gcp-lkg-listing-8d2f"
SELECTION = "- {backend: gcp, select: {project: my-project, labels: {app: web}}, path: web}"
HISTORY = (
    "- {backend: gcp, name: projects/my-project/secrets/hist/versions/latest, path: hist, "
    "versionHistory: 2}"
)


@pytest.fixture
def start(
    serve: Callable[..., Server], google: GoogleStack, kube: FakeKube
) -> Callable[..., Server]:
    sm = google.secret_manager
    sm.add_version("my-project", "web-db", CANARY, labels={"app": "web"})
    sm.add_version("my-project", "web-api", b"api-key", labels={"app": "web"})
    sm.add_version("my-project", "hist", CANARY + b"-1")
    sm.add_version("my-project", "hist", CANARY + b"-2")
    for ksa, gsa in PRINCIPALS.items():
        kube.add_service_account(NS, ksa, {"iam.gke.io/gcp-service-account": gsa})
        google.google.bind(gsa, NS, ksa)
        google.google.allow_project(f"serviceAccount:{gsa}")
        google.google.grant("projects/my-project", SECRET_VIEWER, f"serviceAccount:{gsa}")

    def run(**config: Any) -> Server:
        # a short retry budget per call, no breaker: an outage answers UNAVAILABLE soon
        timing = {"timeout_seconds": 0.3, "attempt_timeout_seconds": 0.1}
        return serve(
            providers="keyferry",
            backends={"gcp": google.settings(**timing)},
            kubernetes=kube.settings(),
            cache_ttl_seconds=0,
            fail_fast_threshold=0,
            **config,
        )

    return run


def mount(srv: Server, google: GoogleStack, text: str, ksa: str = KSA) -> Any:
    pod = (NS, f"{ksa}-0", "11111111-2222-3333-4444-555555555555", ksa)
    return srv.mount("keyferry", {"objects": text}, tokens=google.token(NS, ksa), pod=pod)


def refused(srv: Server, google: GoogleStack, text: str, ksa: str = KSA) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, google, text, ksa)
    code: grpc.StatusCode = info.value.code()
    return code


def answer(google: GoogleStack, code: grpc.StatusCode) -> None:
    """Every Secret Manager call answers ``code`` from now on."""
    google.secret_manager.faults.clear()
    google.secret_manager.fail(code, times=None)


def outage(google: GoogleStack) -> None:
    answer(google, grpc.StatusCode.UNAVAILABLE)


def test_a_selection_is_served_from_its_last_listing_while_google_is_down(
    start: Callable[..., Server], google: GoogleStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    expected = {"web/web-api": b"api-key", "web/web-db": CANARY}
    # the listing and the values: both from the last-known-good window
    down = functools.partial(outage, google)
    served_through_outage(lambda: mount(srv, google, SELECTION), expected, down, clock, 60)
    assert stale_metrics(srv, "gcp") == {"selection": 1, "values": 1}
    (stale,) = audit_stale(srv)
    assert stale["object"].startswith("objects[0] (gcp: select") and stale["age_seconds"] == 60
    assert any("last-known-good listing" in line for line in srv.logs)
    assert not any(CANARY.decode() in line for line in srv.logs)

    only_within_the_rule(
        refused=lambda: refused(srv, google, SELECTION),
        refused_to_other=lambda: refused(srv, google, SELECTION, ksa="other"),
        answer=lambda: answer(google, grpc.StatusCode.PERMISSION_DENIED),
        answered=grpc.StatusCode.PERMISSION_DENIED,
        outage=lambda: outage(google),
        clock=clock,
        past_the_window=240.5,
    )
    assert stale_metrics(srv, "gcp") == {"selection": 1, "values": 1}


def test_a_history_is_served_from_its_last_listing_while_google_is_down(
    start: Callable[..., Server], google: GoogleStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = cache_clock(monkeypatch)
    srv = start(stale_if_error_seconds=300)
    expected = {"hist/0": CANARY + b"-2", "hist/1": CANARY + b"-1"}
    down = functools.partial(outage, google)
    served_through_outage(lambda: mount(srv, google, HISTORY), expected, down, clock, 10)
    assert stale_metrics(srv, "gcp") == {"history": 2, "values": 2}  # one listing a slot
    assert [s["age_seconds"] for s in audit_stale(srv)] == [10, 10]

    only_within_the_rule(
        refused=lambda: refused(srv, google, HISTORY),
        refused_to_other=lambda: refused(srv, google, HISTORY, ksa="other"),
        answer=lambda: answer(google, grpc.StatusCode.NOT_FOUND),
        answered=grpc.StatusCode.NOT_FOUND,
        outage=lambda: outage(google),
        clock=clock,
        past_the_window=291,
    )


def test_listings_have_no_last_known_good_by_default(
    start: Callable[..., Server], google: GoogleStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_clock(monkeypatch)
    srv = start()
    assert mount(srv, google, SELECTION).files
    assert mount(srv, google, HISTORY).files
    outage(google)
    assert refused(srv, google, SELECTION) in OUTAGE
    assert refused(srv, google, HISTORY) in OUTAGE
    assert stale_metrics(srv, "gcp") == {}
