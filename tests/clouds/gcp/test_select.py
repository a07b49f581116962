"""``select: {project, labels}`` on ``backend: gcp`` (provider/selection.py): Secret
Manager's ListSecrets with a label filter, as the pod's identity, end to end over the
native socket against the Google fakes; each match read at ``latest``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from keyferry_fakes.gcp import SECRET_VIEWER, GoogleStack
from keyferry_fakes.harness import (
    DEFAULT_POD,
    SYNC_CONTROLLER_TOKEN_SECONDS,
    Server,
    wait_until,
)
from keyferry_fakes.kube import FakeKube
from provider.errors import KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan

NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
GSA = "web@my-project.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{GSA}"
CANARY = b"CANARY-gcp-selected-51d9ae"
SELECT_WEB = """
- backend: gcp
  select: {project: my-project, labels: {app: web}}
  path: web
"""


@pytest.fixture
def stack(google: GoogleStack) -> GoogleStack:
    sm = google.secret_manager
    sm.add_version("my-project", "web-db", CANARY, labels={"app": "web", "tier": "db"})
    sm.add_version("my-project", "web-api", b"api-key", labels={"app": "web"})
    sm.add_version("my-project", "batch", b"batch", labels={"app": "batch"})
    sm.add_version("my-project", "unlabelled", b"plain")
    return google


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account(NS, KSA, {"iam.gke.io/gcp-service-account": GSA})
    return kube


@pytest.fixture
def start(
    serve: Callable[..., Server], stack: GoogleStack, kube: FakeKube
) -> Callable[..., Server]:
    """A server whose pod may read every secret of my-project and list them."""
    stack.google.bind(GSA, NS, KSA)
    stack.google.allow_project(MEMBER)  # secretAccessor (values), not listing
    stack.google.grant("projects/my-project", SECRET_VIEWER, MEMBER)

    def started(**config: Any) -> Server:
        config.setdefault("cache_ttl_seconds", 0)
        return serve(
            providers="keyferry",
            backends={"gcp": stack.settings()},
            kubernetes=kube.settings(),
            **config,
        )

    return started


@pytest.fixture
def srv(start: Callable[..., Server]) -> Server:
    return start()


def mount(srv: Server, stack: GoogleStack, text: str, ksa: str = KSA) -> Any:
    pod = (NS, f"{ksa}-0", "11111111-2222-3333-4444-555555555555", ksa)
    return srv.mount("keyferry", {"objects": text}, tokens=stack.token(NS, ksa), pod=pod)


def refused(srv: Server, stack: GoogleStack, text: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        mount(srv, stack, text)
    return info.value


def files_of(resp: Any) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in resp.files}


def versions_of(resp: Any) -> dict[str, str]:
    return {v.id: v.version for v in resp.object_version}


def test_a_label_selection_writes_each_matching_secret_under_the_directory(
    srv: Server, stack: GoogleStack
) -> None:
    text = SELECT_WEB + "  mode: '0600'\n"
    resp = mount(srv, stack, text)
    assert files_of(resp) == {"web/web-api": (0o600, b"api-key"), "web/web-db": (0o600, CANARY)}
    versions = versions_of(resp)
    assert versions["web/web-db"] == "projects/1449000001/secrets/web-db/versions/1"
    assert versions["web/web-api"] == "projects/1449000001/secrets/web-api/versions/1"
    assert versions["web"].startswith("hmac-sha256:")
    # one ListSecrets (the label filter did the selecting) and one read per match
    assert stack.secret_manager.calls.count("projects/my-project") == 1
    assert sorted(c for c in stack.secret_manager.calls if "/versions/" in c) == [
        "projects/my-project/secrets/web-api/versions/latest",
        "projects/my-project/secrets/web-db/versions/latest",
    ]
    listed = 'keyferry_backend_requests_total{backend="gcp",operation="ListSecrets",outcome="ok"}'
    assert srv.metric(listed) == 1.0
    text = "\n".join(srv.logs) + srv.metrics_text() + "".join(versions)
    assert CANARY.decode() not in text


def test_every_label_must_match_and_star_matches_any_value(srv: Server, stack: GoogleStack) -> None:
    both = "- {backend: gcp, select: {project: my-project, labels: {app: web, tier: db}}, path: a}"
    anything = "- {backend: gcp, select: {project: my-project, labels: {app: '*'}}, path: b}"
    resp = mount(srv, stack, both + "\n" + anything)
    assert sorted(files_of(resp)) == ["a/web-db", "b/batch", "b/web-api", "b/web-db"]


def test_the_selection_version_follows_added_and_removed_secrets(
    srv: Server, stack: GoogleStack
) -> None:
    first = versions_of(mount(srv, stack, SELECT_WEB))
    assert versions_of(mount(srv, stack, SELECT_WEB)) == first  # nothing changed
    stack.secret_manager.add_version("my-project", "web-new", b"new", labels={"app": "web"})
    added = mount(srv, stack, SELECT_WEB)
    assert sorted(files_of(added)) == ["web/web-api", "web/web-db", "web/web-new"]
    assert versions_of(added)["web"] != first["web"]
    stack.secret_manager.delete("my-project", "web-api")
    removed = versions_of(mount(srv, stack, SELECT_WEB))
    assert set(removed) == {"web", "web/web-db", "web/web-new"}
    assert removed["web"] not in (first["web"], versions_of(added)["web"])
    # a new version of a member changes the member's version and the selection's
    stack.secret_manager.add_version("my-project", "web-db", b"rotated")
    rotated = versions_of(mount(srv, stack, SELECT_WEB))
    assert rotated["web/web-db"] == "projects/1449000001/secrets/web-db/versions/2"
    assert rotated["web"] != removed["web"]


def test_the_listing_is_cached_per_identity_and_shared_by_mounts(
    start: Callable[..., Server], stack: GoogleStack, kube: FakeKube
) -> None:
    srv = start(cache_ttl_seconds=300)
    calls = stack.secret_manager.calls
    first = mount(srv, stack, SELECT_WEB)
    stack.secret_manager.add_version("my-project", "web-new", b"new", labels={"app": "web"})
    again = mount(srv, stack, SELECT_WEB)
    assert files_of(again) == files_of(first)  # within the TTL: the cached listing
    assert calls.count("projects/my-project") == 1
    hits = 'keyferry_cache_events_total{cache="gcp-listings",result="hit"}'
    assert srv.metric(hits) == 1.0
    # another pod identity lists for itself (and sees the new secret)
    kube.add_service_account(NS, "other", {"iam.gke.io/gcp-service-account": GSA})
    stack.google.bind(GSA, NS, "other")
    other = mount(srv, stack, SELECT_WEB, ksa="other")
    assert "web/web-new" in files_of(other)
    assert calls.count("projects/my-project") == 2


def test_a_listing_the_identity_may_not_make_names_the_role_to_grant(
    serve: Callable[..., Server], stack: GoogleStack, kube: FakeKube
) -> None:
    stack.google.bind(GSA, NS, KSA)
    stack.google.allow_project(MEMBER)  # secretAccessor on the project: values, no listing
    srv = serve(
        providers="keyferry", backends={"gcp": stack.settings()}, kubernetes=kube.settings()
    )
    err = refused(srv, stack, SELECT_WEB)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    details = err.details() or ""
    assert "roles/secretmanager.viewer" in details and "secretmanager.secrets.list" in details
    assert f"member '{MEMBER}'" in details and "projects/my-project" in details
    assert not [c for c in stack.secret_manager.calls if "/versions/" in c]


def test_more_matches_than_the_cap_fail_the_mount_without_reading_any(
    start: Callable[..., Server], stack: GoogleStack
) -> None:
    srv = start(max_selected_objects=1)
    err = refused(srv, stack, SELECT_WEB)
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_selected_objects" in (err.details() or "")
    assert not [c for c in stack.secret_manager.calls if "/versions/" in c]


def test_max_matches_lowers_the_cap_for_one_object(srv: Server, stack: GoogleStack) -> None:
    err = refused(srv, stack, SELECT_WEB + "  maxMatches: '1'\n")
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maxMatches 1" in (err.details() or "")
    assert len(files_of(mount(srv, stack, SELECT_WEB + "  maxMatches: '2'\n"))) == 2


def test_a_regional_selection_lists_that_locations_secrets(srv: Server, stack: GoogleStack) -> None:
    east = stack.regional["us-east1"]
    east.add_version("my-project", "east-db", b"east", labels={"app": "web"})
    text = "- backend: gcp\n  select: {project: my-project, location: us-east1, labels: {app: web}}"
    resp = mount(srv, stack, text + "\n  path: east")
    assert files_of(resp) == {"east/east-db": (0o644, b"east")}
    assert versions_of(resp)["east/east-db"] == (
        "projects/1449000001/locations/us-east1/secrets/east-db/versions/1"
    )
    assert east.calls[0] == "projects/my-project/locations/us-east1"
    assert stack.secret_manager.calls == []


def test_a_selected_secret_without_an_enabled_version_fails_naming_it(
    srv: Server, stack: GoogleStack
) -> None:
    sm = stack.secret_manager
    number = sm.add_version("my-project", "web-off", b"off", labels={"app": "web"})
    sm.set_state("my-project", "web-off", number, "DISABLED")
    err = refused(srv, stack, SELECT_WEB)
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "web-off" in (err.details() or "") and CANARY.decode() not in (err.details() or "")


def test_names_that_cannot_be_safe_paths_fail_naming_them_never_skipped(
    srv: Server, stack: GoogleStack
) -> None:
    # Google's ids are [A-Za-z0-9_-]; a store (or a fake) that hands out more still meets
    # the one path validator.
    stack.secret_manager.add_version("my-project", "..", b"x", labels={"app": "web"})
    err = refused(srv, stack, SELECT_WEB)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'..'" in (err.details() or "")
    assert not [c for c in stack.secret_manager.calls if "/versions/" in c]


def test_a_member_colliding_with_another_objects_file_fails(
    srv: Server, stack: GoogleStack
) -> None:
    plain = "- {backend: gcp, name: projects/my-project/secrets/batch/versions/1, path: web/web-db}"
    err = refused(srv, stack, SELECT_WEB + plain)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "output path 'web/web-db' needs a directory 'web'" in (err.details() or "")
    assert stack.secret_manager.calls == []  # refused before listing anything


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("{labels: {app: web}}", "'project' is required"),
        ("{project: my-project}", "'labels' is required"),
        ("{project: my-project, labels: {App: web}}", "is not a Secret Manager label key"),
        ("{project: my-project, labels: {app: Web}}", "is not a Secret Manager label value"),
        ("{project: my-project, labels: {app: 'a OR labels.x=y'}}", "label value"),
        ("{project: my-project, labels: {app: [web]}}", "label value"),
        ("{project: my-project, labels: {}}", "'labels' is required"),
        ("{project: my-project, location: 'us east', labels: {a: b}}", "not a Google Cloud"),
        ("{project: my-project, labels: {a: b}, filter: 'x'}", "unknown key 'filter'"),
    ],
)
def test_bad_selections_are_invalid_argument_before_any_call(select: str, expected: str) -> None:
    text = f"- {{backend: gcp, select: {select}, path: web}}"
    with pytest.raises(KeyferryError) as info:
        make_plan(Mount(pod=Pod("ns", "p"), parameters={"objects": text}))
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert expected in info.value.message


def test_a_version_pin_or_name_does_not_mix_with_a_selection() -> None:
    text = (
        "- {backend: gcp, name: projects/p/secrets/s/versions/1, "
        "select: {project: my-project, labels: {a: b}}, path: web}"
    )
    with pytest.raises(KeyferryError) as info:
        make_plan(Mount(pod=Pod("ns", "p"), parameters={"objects": text}))
    assert "not both" in info.value.message


def test_a_throttled_listing_is_retried_within_the_budget_and_counted(
    srv: Server, stack: GoogleStack
) -> None:
    stack.secret_manager.fail(
        grpc.StatusCode.RESOURCE_EXHAUSTED, 1, retry_delay=0.01, where="projects/my-project"
    )
    resp = mount(srv, stack, SELECT_WEB)
    assert sorted(files_of(resp)) == ["web/web-api", "web/web-db"]
    assert stack.secret_manager.calls.count("projects/my-project") == 2
    attempts = 'keyferry_backend_attempts_total{backend="gcp",operation="ListSecrets"'
    assert srv.metric(f'{attempts},outcome="throttled"}}') == 1.0
    assert srv.metric(f'{attempts},outcome="ok"}}') == 1.0


def test_a_listing_outage_opens_the_locations_breaker_then_fails_fast(
    serve: Callable[..., Server], stack: GoogleStack, kube: FakeKube
) -> None:
    stack.google.bind(GSA, NS, KSA)
    stack.google.grant("projects/my-project", SECRET_VIEWER, MEMBER)
    srv = serve(
        providers="keyferry",
        # a short retry budget per call: an outage answers soon
        backends={"gcp": stack.settings(timeout_seconds=0.3, attempt_timeout_seconds=0.1)},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )
    srv.breaker_clock()
    sm = stack.secret_manager
    sm.fail(grpc.StatusCode.UNAVAILABLE, times=100_000)
    for _ in range(3):  # fail_fast_threshold
        err = refused(srv, stack, SELECT_WEB)
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert "projects/my-project" in (err.details() or "")
    sent = len(sm.calls)
    err = refused(srv, stack, SELECT_WEB)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert f"gcp endpoint {sm.endpoint} is down" in (err.details() or "")
    assert len(sm.calls) == sent  # nothing went out


def test_concurrent_identical_mounts_share_one_listing(
    start: Callable[..., Server], stack: GoogleStack
) -> None:
    srv = start(cache_ttl_seconds=0)  # coalescing only: nothing is kept after the answer
    pods = 4
    paused = stack.secret_manager.pause_listing()
    coalesced = 'keyferry_cache_events_total{cache="gcp-listings",result="coalesced"}'
    with ThreadPoolExecutor(pods) as pool:
        mounts = [pool.submit(mount, srv, stack, SELECT_WEB) for _ in range(pods)]
        wait_until(lambda: srv.metric(coalesced) == pods - 1)  # all in flight at once
        paused.set()
        assert [len(m.result().files) for m in mounts] == [2] * pods
    assert stack.secret_manager.calls.count("projects/my-project") == 1


def test_the_sync_controller_mounts_a_selection_without_any_pod_or_node_lookup(
    srv: Server, stack: GoogleStack, kube: FakeKube
) -> None:
    tokens = stack.token(NS, KSA, pod=None, lifetime=SYNC_CONTROLLER_TOKEN_SECONDS)
    resp = srv.sync_mount(
        "keyferry", {"objects": SELECT_WEB}, namespace=NS, service_account=KSA, tokens=tokens
    )
    assert files_of(resp) == {"web/web-api": (0o644, b"api-key"), "web/web-db": (0o644, CANARY)}
    assert set(kube.requests) == {f"/api/v1/namespaces/{NS}/serviceaccounts/{KSA}"}
    assert stack.secret_manager.calls.count("projects/my-project") == 1
