"""The ``gcp`` backend driven directly (a Mount and hand-built Services) against
the fakes: the real google clients over gRPC and HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import grpc
import pytest

from keyferry_fakes.gcp import (
    TOKEN_CREATOR,
    GoogleStack,
    pod_token,
    service_account_resource,
)
from provider.backend import Services
from provider.cache import TTLCache
from provider.clouds.gcp import dialect
from provider.clouds.gcp.backend import GcpBackend, create
from provider.clouds.gcp.ref import GcpRef
from provider.clouds.gcp.settings import parse as parse_settings
from provider.config import Config
from provider.errors import Code, ConfigError, KeyferryError
from provider.model import Deadline, Fetched, Mount, Pod, Token
from provider.observe import Metrics

GSA = "app@my-project.iam.gserviceaccount.com"


class StubKube:
    def __init__(self) -> None:
        self.annotations: dict[tuple[str, str], dict[str, str]] = {}
        self.requests = 0

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.requests += 1
        return {"annotations": self.annotations.get((namespace, name), {}), "labels": {}}


@pytest.fixture
def stack(google: GoogleStack) -> GoogleStack:
    # The default pod (team-a/web, no GSA annotation) may read my-project; other-project
    # grants nothing unless a test says so.
    google.google.allow_project(google.google.federated_principal("team-a", "web"))
    return google


@pytest.fixture
def kube() -> StubKube:
    return StubKube()


def backend(
    stack: GoogleStack, kube: StubKube, *, cache_ttl: float = 0.0, **settings: Any
) -> GcpBackend:
    services = Services(
        config=Config(),
        metrics=Metrics(),
        executor=ThreadPoolExecutor(8),
        kube=kube,  # type: ignore[arg-type]
        values=TTLCache(cache_ttl),
    )
    return create(stack.settings(**settings), services)


def make_mount(
    stack: GoogleStack,
    secrets_yaml: str,
    *,
    ns: str = "team-a",
    ksa: str = "web",
    tokens: Mapping[str, str] | None = None,
    node_secrets: Mapping[str, str] | None = None,
    **params: str,
) -> Mount:
    raw = stack.token(ns, ksa) if tokens is None else tokens
    return Mount(
        pod=Pod(ns, "pod-0", "uid", ksa),
        parameters={"secrets": secrets_yaml, **params},
        tokens={a: Token(a, t) for a, t in raw.items()},
        secrets=dict(node_secrets or {}),
        dialect="gcp",
    )


def entries(*names: str) -> str:
    return "".join(f"- resourceName: {n}\n  path: f{i}\n" for i, n in enumerate(names))


def gcp_refs(m: Mount) -> list[GcpRef]:
    """The refs the gcp dialect made for ``m`` (typed as the backend takes them)."""
    return [cast(GcpRef, o.ref) for o in dialect.parse(m).objects]


def run(b: GcpBackend, m: Mount, timeout: float = 30) -> list[Fetched | Exception]:
    refs = gcp_refs(m)

    async def go() -> list[Fetched | Exception]:
        try:
            return await b.fetch(m, refs, Deadline(timeout))
        finally:
            await b.close()

    return asyncio.run(go())


def run_many(b: GcpBackend, mounts: list[Mount]) -> list[list[Fetched | Exception]]:
    async def go() -> list[list[Fetched | Exception]]:
        out = []
        try:
            for m in mounts:
                out.append(await b.fetch(m, gcp_refs(m), Deadline(30)))
        finally:
            await b.close()
        return out

    return asyncio.run(go())


def fail(result: Fetched | Exception) -> KeyferryError:
    assert isinstance(result, KeyferryError), result
    return result


def ok(result: Fetched | Exception) -> Fetched:
    assert isinstance(result, Fetched), result
    return result


def single_error(b: GcpBackend, m: Mount) -> KeyferryError:
    with pytest.raises(KeyferryError) as info:
        run(b, m)
    return info.value


# -- versions ----------------------------------------------------------------------------


def test_latest_numbered_and_alias_versions(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "db", b"one")
    sm.add_version("my-project", "db", b"two", alias="prod")
    sm.add_version("my-project", "db", b"three")
    results = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/my-project/secrets/db/versions/latest",
                "projects/my-project/secrets/db/versions/1",
                "projects/my-project/secrets/db/versions/prod",
            ),
        ),
    )
    got = [(ok(r).content, ok(r).version) for r in results]
    assert got == [
        (b"three", "projects/1449000001/secrets/db/versions/3"),
        (b"one", "projects/1449000001/secrets/db/versions/1"),
        (b"two", "projects/1449000001/secrets/db/versions/2"),
    ]


def test_rotation_of_latest_changes_the_version(stack: GoogleStack, kube: StubKube) -> None:
    stack.secret_manager.add_version("my-project", "db", b"one")
    b = backend(stack, kube)
    m = make_mount(stack, entries("projects/my-project/secrets/db/versions/latest"))

    async def go() -> tuple[Fetched | Exception, Fetched | Exception]:
        (ref,) = gcp_refs(m)
        first = (await b.fetch(m, [ref], Deadline(30)))[0]
        stack.secret_manager.add_version("my-project", "db", b"two")
        second = (await b.fetch(m, [ref], Deadline(30)))[0]
        await b.close()
        return first, second

    first, second = asyncio.run(go())
    assert ok(first).version != ok(second).version
    assert ok(second).content == b"two"


def test_disabled_and_destroyed_versions(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "db", b"one", state="DISABLED")
    sm.add_version("my-project", "db", b"two", state="DESTROYED")
    results = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/my-project/secrets/db/versions/1",
                "projects/my-project/secrets/db/versions/2",
                "projects/my-project/secrets/db/versions/latest",
            ),
        ),
    )
    for r, state in zip(results, ("DISABLED", "DESTROYED", "no enabled"), strict=True):
        err = fail(r)
        assert err.code is Code.FAILED_PRECONDITION
        assert state in err.message and "enable it" in err.message


def test_not_found_and_permission_denied_surface_at_once(
    stack: GoogleStack, kube: StubKube
) -> None:
    sm = stack.secret_manager
    sm.add_version("other-project", "locked", b"x")  # the pod holds no role there
    results = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/my-project/secrets/missing/versions/1",
                "projects/other-project/secrets/locked/versions/1",
            ),
        ),
    )
    nf, pd = fail(results[0]), fail(results[1])
    assert nf.code is Code.NOT_FOUND and "projects/my-project/secrets/missing" in nf.message
    assert pd.code is Code.PERMISSION_DENIED
    assert "projects/other-project/secrets/locked/versions/1" in pd.message
    assert "secretAccessor" in pd.message
    assert sm.calls.count("projects/my-project/secrets/missing/versions/1") == 1
    assert sm.calls.count("projects/other-project/secrets/locked/versions/1") == 1


# -- regional routing ------------------------------------------------------------------


def test_regional_names_go_to_their_region(stack: GoogleStack, kube: StubKube) -> None:
    stack.secret_manager.add_version("my-project", "db", b"global")
    stack.regional["us-east1"].add_version("my-project", "db", b"east")
    stack.regional["europe-west4"].add_version("my-project", "db", b"europe")
    results = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/my-project/secrets/db/versions/latest",
                "projects/my-project/locations/us-east1/secrets/db/versions/latest",
                "projects/my-project/locations/europe-west4/secrets/db/versions/1",
                "projects/my-project/locations/global/secrets/db/versions/latest",
            ),
        ),
    )
    assert [ok(r).content for r in results] == [b"global", b"east", b"europe", b"global"]
    assert ok(results[1]).version == "projects/1449000001/locations/us-east1/secrets/db/versions/1"
    assert ok(results[1]).served_by == stack.regional["us-east1"].endpoint
    assert stack.regional["us-east1"].calls == [
        "projects/my-project/locations/us-east1/secrets/db/versions/latest"
    ]
    # locations/global reached the global service under its global name, and the two
    # identical concurrent reads were coalesced into one call
    assert stack.secret_manager.calls == ["projects/my-project/secrets/db/versions/latest"]


def test_unknown_region_uses_the_regional_template() -> None:
    s = parse_settings({"secret_manager_regional_endpoint": "sm-{location}.example.test:8443"})
    from provider.clouds.gcp.clients import Clients
    from provider.clouds.gcp.ref import SecretVersionRef

    clients = Clients(s)
    assert clients.endpoint(SecretVersionRef("p", "s", "1", "asia-south1")) == (
        "sm-asia-south1.example.test:8443"
    )
    assert clients.endpoint(SecretVersionRef("p", "s", "1")) == "secretmanager.googleapis.com:443"


# -- retries, deadlines, checksum --------------------------------------------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_transient_errors_are_retried(
    stack: GoogleStack, kube: StubKube, code: grpc.StatusCode
) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "db", b"ok")
    sm.fail(code, times=2)
    b = backend(stack, kube)
    results = run(b, make_mount(stack, entries("projects/my-project/secrets/db/versions/1")))
    assert ok(results[0]).content == b"ok"
    assert len(sm.calls) == 3
    assert b.retries == 2


def test_retries_stop_within_the_budget(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "db", b"ok")
    sm.fail(grpc.StatusCode.UNAVAILABLE, times=10_000)
    b = backend(stack, kube, timeout_seconds=0.6, attempt_timeout_seconds=0.2)
    results = run(b, make_mount(stack, entries("projects/my-project/secrets/db/versions/1")))
    err = fail(results[0])
    assert err.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED), err.message
    assert "attempts" in err.message
    assert 1 < len(sm.calls) <= 5  # max_attempts


def test_slow_service_hits_the_mount_deadline(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "db", b"ok")
    b = backend(stack, kube)
    m = make_mount(stack, entries("projects/my-project/secrets/db/versions/1"))
    # warm up the token so only the API call meets the deadline
    run_many(b, [m])
    sm.delay = 3.0
    b = backend(stack, kube)
    err = fail(run(b, m, timeout=1.5)[0])
    assert err.code in (Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE)


def test_checksum_is_verified(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "db", b"payload")
    sm.corrupt_checksum = True
    err = fail(
        run(
            backend(stack, kube),
            make_mount(stack, entries("projects/my-project/secrets/db/versions/1")),
        )[0]
    )
    assert err.code is Code.INTERNAL and "CRC32C" in err.message
    sm.corrupt_checksum = False
    sm.send_checksum = False
    got = run(
        backend(stack, kube),
        make_mount(stack, entries("projects/my-project/secrets/db/versions/1")),
    )
    assert ok(got[0]).content == b"payload"


# -- Parameter Manager -------------------------------------------------------------------


def test_parameters_with_equal_bytes_do_not_share_a_version_suffix(
    stack: GoogleStack, kube: StubKube
) -> None:
    # The suffix is keyed by the parameter version too: equal suffixes would tell that
    # two parameters (say, one readable and one not) hold the same bytes.
    stack.parameter_manager.add_version("my-project", "a", "v1", b"same\n")
    stack.parameter_manager.add_version("my-project", "b", "v1", b"same\n")
    got = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/my-project/locations/global/parameters/a/versions/v1",
                "projects/my-project/locations/global/parameters/b/versions/v1",
            ),
        ),
    )
    a, b = ok(got[0]), ok(got[1])
    assert a.content == b.content == b"same\n"
    assert a.version and b.version
    assert a.version.rpartition("@")[2] != b.version.rpartition("@")[2]


def test_parameter_versions_render_and_version_follows_references(
    stack: GoogleStack, kube: StubKube
) -> None:
    stack.secret_manager.add_version("my-project", "db", b"s3cret")
    stack.parameter_manager.add_version(
        "my-project",
        "app",
        "v1",
        b'{"password": "__REF__(//secretmanager.googleapis.com/projects/my-project/'
        b'secrets/db/versions/latest)"}',
    )
    stack.regional_parameters["us-east1"].add_version("my-project", "app", "v1", b"east: 1\n")
    b = backend(stack, kube)
    m = make_mount(
        stack,
        entries(
            "projects/my-project/locations/global/parameters/app/versions/v1",
            "projects/my-project/locations/us-east1/parameters/app/versions/v1",
        ),
    )

    async def go() -> tuple[list[Fetched | Exception], list[Fetched | Exception]]:
        refs = gcp_refs(m)
        first = await b.fetch(m, refs, Deadline(30))
        stack.secret_manager.add_version("my-project", "db", b"rotated")
        second = await b.fetch(m, refs, Deadline(30))
        await b.close()
        return first, second

    first, second = asyncio.run(go())
    g1, e1 = ok(first[0]), ok(first[1])
    assert b"s3cret" in g1.content and b"__REF__" not in g1.content
    assert g1.version is not None
    assert g1.version.startswith("projects/1449000001/locations/global/parameters/app/versions/v1@")
    assert (
        e1.content == b"east: 1\n"
        and e1.served_by == stack.regional_parameters["us-east1"].endpoint
    )
    g2, e2 = ok(second[0]), ok(second[1])
    assert b"rotated" in g2.content and g2.version != g1.version
    assert e2.version == e1.version
    assert b"s3cret" not in (g1.version or "").encode()


def test_parameter_errors(stack: GoogleStack, kube: StubKube) -> None:
    stack.parameter_manager.add_version("my-project", "off", "v1", b"x", disabled=True)
    results = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/my-project/locations/global/parameters/none/versions/v1",
                "projects/my-project/locations/global/parameters/off/versions/v1",
            ),
        ),
    )
    assert fail(results[0]).code is Code.NOT_FOUND
    assert "Parameter Manager" in fail(results[0]).message
    assert fail(results[1]).code is Code.FAILED_PRECONDITION


# -- workload identity -------------------------------------------------------------------


def test_one_exchange_for_many_mounts_of_one_service_account(
    stack: GoogleStack, kube: StubKube
) -> None:
    stack.secret_manager.add_version("my-project", "db", b"x")
    b = backend(stack, kube)
    mounts = [
        make_mount(stack, entries("projects/my-project/secrets/db/versions/latest"))
        for _ in range(100)
    ]
    results = run_many(b, mounts)
    assert all(isinstance(r[0], Fetched) for r in results)
    assert stack.google.counts["sts"] == 1
    assert b.exchanges == 1
    assert len(stack.secret_manager.calls) == 100  # value cache off: every mount reads
    assert b.clients.channels_created == 1


def test_exchanges_are_per_service_account(stack: GoogleStack, kube: StubKube) -> None:
    stack.secret_manager.add_version("my-project", "db", b"x")
    for ksa in ("a", "b", "c"):
        stack.google.allow_project(stack.google.federated_principal("team-a", ksa))
    b = backend(stack, kube)
    mounts = [
        make_mount(stack, entries("projects/my-project/secrets/db/versions/1"), ksa=ksa)
        for ksa in ("a", "b", "a", "b", "c")
    ]
    assert all(isinstance(r[0], Fetched) for r in run_many(b, mounts))
    assert stack.google.counts["sts"] == 3
    assert [r["audience"] for r in stack.identity.sts_requests] == [stack.google.audience] * 3
    assert {r["scope"] for r in stack.identity.sts_requests} == {
        "https://www.googleapis.com/auth/cloud-platform"
    }


def test_impersonation_through_the_gsa_annotation(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("other-project", "db", b"x")
    sm.allow("other-project", "db", f"serviceAccount:{GSA}")  # only the GSA may read it
    delegate = "d1@my-project.iam.gserviceaccount.com"
    kube.annotations[("team-a", "web")] = {
        "iam.gke.io/gcp-service-account": GSA,
        "iam.gke.io/gcp-service-account-delegates": json.dumps([delegate]),
    }
    # the pod may act as the delegate, the delegate may mint tokens for the GSA
    stack.google.bind(delegate, "team-a", "web")
    stack.google.grant(service_account_resource(GSA), TOKEN_CREATOR, f"serviceAccount:{delegate}")
    b = backend(stack, kube)
    m = make_mount(stack, entries("projects/other-project/secrets/db/versions/1"))
    results = run_many(b, [m, m, m])
    assert all(isinstance(r[0], Fetched) for r in results)
    assert stack.google.counts["sts"] == 1 and stack.google.counts["iam"] == 1
    request = stack.identity.iam_requests[0]
    assert request["gsa"] == GSA
    assert request["delegates"] == [
        "projects/-/serviceAccounts/d1@my-project.iam.gserviceaccount.com"
    ]
    assert request["scope"] == ["https://www.googleapis.com/auth/cloud-platform"]


def test_federated_principal_without_annotation(stack: GoogleStack, kube: StubKube) -> None:
    sm = stack.secret_manager
    sm.add_version("other-project", "db", b"x")
    sm.allow("other-project", "db", stack.google.federated_principal("team-a", "web"))
    ok(
        run(
            backend(stack, kube),
            make_mount(stack, entries("projects/other-project/secrets/db/versions/1")),
        )[0]
    )
    other = run(
        backend(stack, kube),
        make_mount(stack, entries("projects/other-project/secrets/db/versions/1"), ksa="other"),
    )
    assert fail(other[0]).code is Code.PERMISSION_DENIED
    assert stack.google.counts["iam"] == 0


def test_missing_iam_binding_is_explained(stack: GoogleStack, kube: StubKube) -> None:
    stack.secret_manager.add_version("my-project", "db", b"x")
    kube.annotations[("team-a", "web")] = {"iam.gke.io/gcp-service-account": GSA}
    err = single_error(
        backend(stack, kube),
        make_mount(stack, entries("projects/my-project/secrets/db/versions/1")),
    )
    assert err.code is Code.PERMISSION_DENIED
    assert "roles/iam.workloadIdentityUser" in err.message
    assert f"serviceAccount:{stack.google.pool}[team-a/web]" in err.message
    assert stack.secret_manager.calls == []


def test_missing_token_audience_is_explained(stack: GoogleStack, kube: StubKube) -> None:
    err = single_error(
        backend(stack, kube),
        make_mount(
            stack,
            entries("projects/my-project/secrets/db/versions/1"),
            tokens={"sts.amazonaws.com": pod_token("team-a", "web", "sts.amazonaws.com")},
        ),
    )
    assert err.code is Code.FAILED_PRECONDITION
    assert "tokenRequests" in err.message and stack.google.pool in err.message
    assert stack.google.counts["sts"] == 0


def test_token_of_another_service_account_is_refused(stack: GoogleStack, kube: StubKube) -> None:
    pool = stack.google.pool
    err = single_error(
        backend(stack, kube),
        make_mount(
            stack,
            entries("projects/my-project/secrets/db/versions/1"),
            tokens={pool: pod_token("kube-system", "admin", pool)},
        ),
    )
    assert err.code is Code.PERMISSION_DENIED and "does not belong" in err.message
    assert stack.google.counts["sts"] == 0


def test_sts_refuses_a_token_for_an_audience_the_pool_does_not_accept(
    stack: GoogleStack, kube: StubKube
) -> None:
    # keyferry is told to exchange the sts.amazonaws.com token; the pool provider accepts
    # only tokens for the pool, and STS says so (verified with the cluster's key).
    b = backend(stack, kube, token_audience="sts.amazonaws.com")
    m = make_mount(
        stack,
        entries("projects/my-project/secrets/db/versions/1"),
        tokens={"sts.amazonaws.com": pod_token("team-a", "web", "sts.amazonaws.com")},
    )
    err = single_error(b, m)
    assert err.code is Code.PERMISSION_DENIED
    assert "STS rejected" in err.message and "invalid_grant" in err.message
    assert f"does not match the expected audience {stack.google.pool}" in err.message
    assert stack.google.counts["sts"] == 1 and stack.secret_manager.calls == []


def test_expired_pod_token_is_refused_before_sts(stack: GoogleStack, kube: StubKube) -> None:
    err = single_error(
        backend(stack, kube),
        make_mount(
            stack,
            entries("projects/my-project/secrets/db/versions/1"),
            tokens=stack.token("team-a", "web", lifetime=-5),
        ),
    )
    assert err.code is Code.PERMISSION_DENIED and "expired" in err.message
    assert stack.google.counts["sts"] == 0


def test_denied_secret_names_the_member_to_grant(stack: GoogleStack, kube: StubKube) -> None:
    stack.secret_manager.add_version("other-project", "db", b"x")
    stack.parameter_manager.add_version("other-project", "app", "v1", b"x")
    kube.annotations[("team-a", "web")] = {"iam.gke.io/gcp-service-account": GSA}
    stack.google.bind(GSA, "team-a", "web")
    results = run(
        backend(stack, kube),
        make_mount(
            stack,
            entries(
                "projects/other-project/secrets/db/versions/1",
                "projects/other-project/locations/global/parameters/app/versions/v1",
            ),
        ),
    )
    sm, pm = fail(results[0]), fail(results[1])
    assert sm.code is Code.PERMISSION_DENIED and pm.code is Code.PERMISSION_DENIED
    assert "roles/secretmanager.secretAccessor" in sm.message
    assert "roles/parametermanager.parameterViewer" in pm.message
    for err in (sm, pm):
        assert f"member 'serviceAccount:{GSA}'" in err.message, err.message


def test_sts_rejection_is_explained(stack: GoogleStack, kube: StubKube) -> None:
    b = backend(stack, kube, audience="identitynamespace:my-project.svc.id.goog:https://wrong")
    err = single_error(b, make_mount(stack, entries("projects/my-project/secrets/db/versions/1")))
    assert err.code is Code.PERMISSION_DENIED
    assert "STS rejected" in err.message and "invalid_target" in err.message
    assert "pool or provider is disabled or deleted" in err.message
    assert "eyJ" not in err.message  # no token in messages


def test_unreachable_sts_is_retried_then_deadline_exceeded(
    stack: GoogleStack, kube: StubKube
) -> None:
    b = backend(stack, kube, sts_url="http://127.0.0.1:9/v1/token")
    err = single_error(b, make_mount(stack, entries("projects/my-project/secrets/db/versions/1")))
    assert err.code is Code.DEADLINE_EXCEEDED and "STS" in err.message
    assert "5 attempts, the most allowed" in err.message


_BAD_GATEWAY = "<html><body><h1>502 Server Error</h1></body></html>"


@pytest.mark.parametrize(
    "fault",
    [
        (
            503,
            {"error": {"code": 503, "message": "Unavailable.", "status": "UNAVAILABLE"}},
        ),
        (500, {"error": "server_error", "error_description": "Internal error."}),
        (502, _BAD_GATEWAY),
        (429, {"error": {"code": 429, "message": "Quota.", "status": "RESOURCE_EXHAUSTED"}}),
    ],
    ids=["503-json", "500-oauth", "502-html", "429"],
)
def test_sts_outage_is_retried_not_permission_denied(
    stack: GoogleStack, kube: StubKube, fault: tuple[int, Any]
) -> None:
    # A 5xx from STS is not a verdict on the pod's identity: keyferry retries it, then
    # kubelet (DEADLINE_EXCEEDED: the driver does not retry on top of keyferry's retries).
    stack.identity.fail_sts_with = fault
    err = single_error(
        backend(stack, kube),
        make_mount(stack, entries("projects/my-project/secrets/db/versions/1")),
    )
    assert err.code is Code.DEADLINE_EXCEEDED, err.message
    assert "STS" in err.message and f"HTTP {fault[0]}" in err.message
    assert "5 attempts" in err.message and stack.identity.requests["sts"] == 5
    assert "eyJ" not in err.message


def test_sts_4xx_rejection_stays_permission_denied(stack: GoogleStack, kube: StubKube) -> None:
    stack.identity.fail_sts_with = (
        400,
        {"error": "invalid_grant", "error_description": "The subject token is not valid."},
    )
    err = single_error(
        backend(stack, kube),
        make_mount(stack, entries("projects/my-project/secrets/db/versions/1")),
    )
    assert err.code is Code.PERMISSION_DENIED, err.message


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        # an outage: retried, then DEADLINE_EXCEEDED (not left to the driver to retry again)
        ((503, {"error": {"code": 503, "status": "UNAVAILABLE"}}), Code.DEADLINE_EXCEEDED),
        ((500, {"error": {"code": 500, "status": "INTERNAL"}}), Code.DEADLINE_EXCEEDED),
        ((502, _BAD_GATEWAY), Code.DEADLINE_EXCEEDED),
        ((403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}}), Code.PERMISSION_DENIED),
    ],
    ids=["503", "500", "502-html", "403"],
)
def test_iam_credentials_outage_is_retried_and_rejection_permission_denied(
    stack: GoogleStack, kube: StubKube, fault: tuple[int, Any], code: Code
) -> None:
    kube.annotations[("team-a", "web")] = {"iam.gke.io/gcp-service-account": GSA}
    stack.google.bind(GSA, "team-a", "web")
    stack.identity.fail_iam_with = fault
    err = single_error(
        backend(stack, kube),
        make_mount(stack, entries("projects/my-project/secrets/db/versions/1")),
    )
    assert err.code is code, err.message
    assert stack.google.counts["iam"] >= 1
    assert "eyJ" not in err.message


def test_pool_not_configured(stack: GoogleStack, kube: StubKube) -> None:
    b = backend(stack, kube, audience="", workload_identity_pool="")
    err = single_error(b, make_mount(stack, entries("projects/my-project/secrets/db/versions/1")))
    assert err.code is Code.FAILED_PRECONDITION
    assert "backends.gcp.project" in err.message


def test_pool_discovered_from_the_metadata_server(stack: GoogleStack, kube: StubKube) -> None:
    stack.identity.metadata = {
        "/computeMetadata/v1/project/project-id": "my-project",
        "/computeMetadata/v1/instance/attributes/cluster-location": "us-central1",
        "/computeMetadata/v1/instance/attributes/cluster-name": "test",
    }
    stack.secret_manager.add_version("my-project", "db", b"x")
    b = backend(
        stack,
        kube,
        audience="",
        workload_identity_pool="",
        discover_from_metadata=True,
        metadata_url=stack.identity.url,
    )
    ok(run(b, make_mount(stack, entries("projects/my-project/secrets/db/versions/1")))[0])
    assert stack.identity.sts_requests[0]["audience"] == stack.google.audience


# -- provider-adc and key.json --------------------------------------------------------


def test_provider_adc_needs_server_permission(stack: GoogleStack, kube: StubKube) -> None:
    name = "projects/other-project/secrets/db/versions/1"
    m = make_mount(stack, entries(name), auth="provider-adc")
    err = single_error(backend(stack, kube), m)
    assert err.code is Code.PERMISSION_DENIED and "allow_provider_adc" in err.message
    stack.secret_manager.add_version("other-project", "db", b"x")
    stack.secret_manager.allow(
        "other-project", "db", f"serviceAccount:{stack.identity.node_account}"
    )
    b = backend(stack, kube, allow_provider_adc=True, metadata_url=stack.identity.url)
    assert ok(run(b, m)[0]).content == b"x"
    assert stack.google.counts["sts"] == 0


def test_provider_adc_from_a_credentials_file(
    stack: GoogleStack, kube: StubKube, tmp_path: Any
) -> None:
    # keyferry's own key file (operator configuration, so its token_uri is used): the
    # OAuth2 endpoint verifies the assertion with the key Google registered for it.
    email = "keyferry@my-project.iam.gserviceaccount.com"
    info = json.loads(stack.identity.service_account_key(email))
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({**info, "token_uri": f"{stack.identity.url}/token"}))
    stack.secret_manager.add_version("other-project", "db", b"x")
    stack.secret_manager.allow("other-project", "db", f"serviceAccount:{email}")
    m = make_mount(
        stack, entries("projects/other-project/secrets/db/versions/1"), auth="provider-adc"
    )
    b = backend(stack, kube, allow_provider_adc=True, provider_credentials_file=str(path))
    assert ok(run(b, m)[0]).content == b"x"
    assert stack.google.counts["oauth2"] == 1 and stack.google.counts["metadata"] == 0
    # a key Google no longer knows (deleted) is a rejection, not an outage to retry
    stack.identity.keys.clear()
    b = backend(stack, kube, allow_provider_adc=True, provider_credentials_file=str(path))
    err = single_error(b, m)
    assert err.code is Code.PERMISSION_DENIED, err.message
    assert "provider_credentials_file" in err.message and "account not found" in err.message
    assert "PRIVATE KEY" not in err.message
    path.write_text("{}")
    b = backend(stack, kube, allow_provider_adc=True, provider_credentials_file=str(path))
    err = single_error(b, m)
    assert err.code is Code.FAILED_PRECONDITION and "provider_credentials_file" in err.message


def test_key_json_only_when_allowed(stack: GoogleStack, kube: StubKube) -> None:
    email = "keyed@my-project.iam.gserviceaccount.com"
    name = "projects/other-project/secrets/db/versions/1"
    stack.secret_manager.add_version("other-project", "db", b"x")
    stack.secret_manager.allow("other-project", "db", f"serviceAccount:{email}")
    key = {"key.json": stack.identity.service_account_key(email)}
    m = make_mount(stack, entries(name), node_secrets=key)
    # not allowed: ignored (upstream behaviour), the pod's identity is used -> denied here
    denied = run(backend(stack, kube), m)
    assert fail(denied[0]).code is Code.PERMISSION_DENIED
    assert stack.google.counts["oauth2"] == 0
    # allowed: the key's service account, token endpoint from server config
    got = run(backend(stack, kube, allow_node_publish_secret=True), m)
    assert ok(got[0]).content == b"x"
    assert stack.google.counts["oauth2"] == 1
    # allowed plus explicit auth: the upstream conflict error
    both = make_mount(
        stack,
        entries(name),
        node_secrets=key,
        auth="pod-adc",
    )
    err = single_error(backend(stack, kube, allow_node_publish_secret=True), both)
    assert err.code is Code.INVALID_ARGUMENT and "both" in err.message


def test_key_json_rejection_does_not_name_the_key(stack: GoogleStack, kube: StubKube) -> None:
    # client_email is nodePublishSecretRef data: it stays out of messages.
    email = "canary-keyed@my-project.iam.gserviceaccount.com"
    stack.identity.disabled_keys.add(email)
    key = {"key.json": stack.identity.service_account_key(email)}
    m = make_mount(stack, entries("projects/my-project/secrets/db/versions/1"), node_secrets=key)
    err = single_error(backend(stack, kube, allow_node_publish_secret=True), m)
    assert err.code is Code.PERMISSION_DENIED, err.message
    assert "key.json" in err.message and "Invalid JWT Signature" in err.message
    assert "canary" not in err.message and "PRIVATE KEY" not in err.message


def test_key_json_token_endpoint_outage_is_unavailable(stack: GoogleStack, kube: StubKube) -> None:
    email = "canary-keyed@my-project.iam.gserviceaccount.com"
    stack.identity.fail_oauth2_with = (502, _BAD_GATEWAY)
    key = {"key.json": stack.identity.service_account_key(email)}
    m = make_mount(stack, entries("projects/my-project/secrets/db/versions/1"), node_secrets=key)
    err = single_error(backend(stack, kube, allow_node_publish_secret=True), m)
    assert err.code is Code.UNAVAILABLE, err.message
    assert "canary" not in err.message


def test_key_json_must_be_a_service_account_key(stack: GoogleStack, kube: StubKube) -> None:
    bad = {"key.json": json.dumps({"type": "external_account", "credential_source": {}})}
    m = make_mount(stack, entries("projects/my-project/secrets/db/versions/1"), node_secrets=bad)
    err = single_error(backend(stack, kube, allow_node_publish_secret=True), m)
    assert err.code is Code.INVALID_ARGUMENT and "service account key" in err.message


# -- value cache is per identity ---------------------------------------------------------


def test_cached_values_are_not_shared_across_identities(stack: GoogleStack, kube: StubKube) -> None:
    stack.secret_manager.add_version("my-project", "db", b"x")
    stack.google.allow_project(stack.google.federated_principal("team-a", "a"))
    stack.google.allow_project(stack.google.federated_principal("team-a", "b"))
    b = backend(stack, kube, cache_ttl=60)
    name = "projects/my-project/secrets/db/versions/1"
    run_many(
        b,
        [
            make_mount(stack, entries(name), ksa="a"),
            make_mount(stack, entries(name), ksa="a"),
            make_mount(stack, entries(name), ksa="b"),
        ],
    )
    assert len(stack.secret_manager.calls) == 2


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"sts_url": "http://127.0.0.1/v1/token"}, "https://"),
        ({"secret_manager_endpoint": "https://x"}, "host:port"),
        ({"secret_manager_regional_endpoint": "x:443"}, "{location}"),
        ({"timeout_seconds": 0}, "greater than 0"),
        ({"allow_provider_adc": "maybe"}, "not a boolean"),
        ({"endpoint": "x"}, "unknown setting"),
    ],
)
def test_bad_settings(raw: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw)
    assert why in str(info.value)


def test_federated_member_names_the_pool_principal() -> None:
    from provider.clouds.gcp.workload import WorkloadIdentityPool
    from provider.clouds.gcp.workload import federated_member as _federated_member

    gke = WorkloadIdentityPool(
        "identitynamespace:p.svc.id.goog:https://x", ("p.svc.id.goog",), "p.svc.id.goog"
    )
    assert _federated_member(gke, "ns1", "sa1") == (
        "principal://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/"
        "workloadIdentityPools/p.svc.id.goog/subject/ns/ns1/sa/sa1"
    )
    full = (
        "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool1/"
        "providers/k8s"
    )
    other = WorkloadIdentityPool(full, (full,), full)
    assert _federated_member(other, "ns1", "sa1") == (
        "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/"
        "pool1/subject/system:serviceaccount:ns1:sa1"
    )
