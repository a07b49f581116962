"""Google for the secrets-store-sync-controller: the pod's workload identity from the token
the controller requested for the SecretSync's ServiceAccount (bound to no pod), exchanged
at the fake STS and used to impersonate the annotated Google service account, through a
real server on the ``gcp`` and ``keyferry`` sockets. Also the impersonation hint: the IAM
member to bind differs between GKE pools and other workload identity pools."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from keyferry_fakes.gcp import GoogleStack
from keyferry_fakes.harness import DEFAULT_POD, SYNC_CONTROLLER_TOKEN_SECONDS, Server
from keyferry_fakes.kube import FakeKube
from provider.clouds.gcp.errors import iam_error
from provider.clouds.gcp.workload import WorkloadIdentityPool, impersonation_member
from provider.errors import Code

NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
GSA = "web@my-project.iam.gserviceaccount.com"
CANARY = b"CANARY-gcp-sync-71d2"
NAME = "projects/my-project/secrets/synced/versions/latest"


@pytest.fixture
def stack(google: GoogleStack) -> GoogleStack:
    google.secret_manager.add_version("my-project", "synced", CANARY)
    google.google.bind(GSA, NS, KSA)
    google.google.allow_project(f"serviceAccount:{GSA}")
    return google


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account(NS, KSA, {"iam.gke.io/gcp-service-account": GSA})
    return kube


@pytest.fixture
def srv(serve: Callable[..., Server], stack: GoogleStack, kube: FakeKube) -> Server:
    return serve(
        providers="keyferry,gcp",
        backends={"gcp": stack.settings()},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )


def controller_token(stack: GoogleStack, ksa: str = KSA) -> dict[str, str]:
    return stack.token(NS, ksa, pod=None, lifetime=SYNC_CONTROLLER_TOKEN_SECONDS)


@pytest.mark.parametrize("socket", ["gcp", "keyferry"])
def test_workload_identity_mounts_for_the_controller(
    srv: Server, stack: GoogleStack, kube: FakeKube, socket: str
) -> None:
    params = (
        {"secrets": f"- resourceName: {NAME}\n  path: synced.txt\n"}
        if socket == "gcp"
        else {"objects": f"- backend: gcp\n  name: {NAME}\n  path: synced.txt\n"}
    )
    tokens = controller_token(stack)
    resp = srv.sync_mount(socket, params, namespace=NS, service_account=KSA, tokens=tokens)
    assert {f.path: f.contents for f in resp.files} == {"synced.txt": CANARY}
    assert [v.version for v in resp.object_version] == [
        "projects/1449000001/secrets/synced/versions/1"
    ]
    assert stack.google.counts["sts"] == 1 and stack.google.counts["iam"] == 1
    assert set(kube.requests) == {f"/api/v1/namespaces/{NS}/serviceaccounts/{KSA}"}
    logs = "\n".join(srv.logs)
    assert CANARY.decode() not in logs and all(t not in logs for t in tokens.values())


def refused(srv: Server, tokens: dict[str, str] | None) -> grpc.RpcError:
    """The status of a drop-in Mount of NAME for the SecretSync's team-a/web."""
    params = {"secrets": f"- resourceName: {NAME}\n  path: s\n"}
    with pytest.raises(grpc.RpcError) as info:
        srv.sync_mount("gcp", params, namespace=NS, service_account=KSA, tokens=tokens)
    return info.value


def test_no_token_names_the_controllers_audience_flag(srv: Server, stack: GoogleStack) -> None:
    error = refused(srv, None)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert "--token-request-audience" in details and stack.google.token_audience in details
    assert "CSIDriver" not in details
    assert stack.google.counts["sts"] == 0


def test_a_secretsync_naming_another_service_account_than_its_token_is_refused(
    srv: Server, stack: GoogleStack
) -> None:
    error = refused(srv, controller_token(stack, "other"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stack.google.counts["sts"] == 0 and stack.google.counts["secretmanager"] == 0


# -- which member the impersonation hint names --------------------------------------------

GKE = WorkloadIdentityPool(
    audience="identitynamespace:my-project.svc.id.goog:https://container.googleapis.com/v1/"
    "projects/my-project/locations/us-central1/clusters/test",
    token_audiences=("my-project.svc.id.goog",),
    pool="my-project.svc.id.goog",
)
PROVIDER = (
    "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/"
    "on-prem/providers/cluster-1"
)
OTHER_POOL = WorkloadIdentityPool(audience=PROVIDER, token_audiences=(PROVIDER,), pool="on-prem")


def test_a_gke_pool_names_the_service_account_member() -> None:
    assert impersonation_member(GKE, "team-a", "web") == (
        "serviceAccount:my-project.svc.id.goog[team-a/web]"
    )


def test_another_pool_names_the_principal_of_the_tokens_subject() -> None:
    assert impersonation_member(OTHER_POOL, "team-a", "web") == (
        "principal://iam.googleapis.com/projects/123456789/locations/global/"
        "workloadIdentityPools/on-prem/subject/system:serviceaccount:team-a:web"
    )


@pytest.mark.parametrize(
    ("pool", "member"),
    [
        (GKE, "serviceAccount:my-project.svc.id.goog[team-a/web]"),
        (
            OTHER_POOL,
            "principal://iam.googleapis.com/projects/123456789/locations/global/"
            "workloadIdentityPools/on-prem/subject/system:serviceaccount:team-a:web",
        ),
    ],
)
def test_the_impersonation_refusal_names_the_pools_member(
    pool: WorkloadIdentityPool, member: str
) -> None:
    err = iam_error(
        Exception("denied"),
        403,
        "https://iamcredentials.googleapis.com",
        GSA,
        "team-a",
        "web",
        impersonation_member(pool, "team-a", "web"),
    )
    assert err.code is Code.PERMISSION_DENIED
    assert f"to member '{member}'" in err.message
    if pool is OTHER_POOL:
        assert "svc.id.goog" not in err.message


def test_outside_gke_the_refusal_names_the_principal_that_the_binding_then_admits(
    serve: Callable[..., Server], google: GoogleStack, kube: FakeKube
) -> None:
    """A workload identity pool outside GKE (the pool provider by its full resource name):
    the fake IAM knows the pod only as principal://.../subject/system:serviceaccount:ns:ksa,
    and granting the member the message names is what lets the impersonation through."""
    google.google.outside_gke()
    google.secret_manager.add_version("my-project", "synced", CANARY)
    google.google.allow_project(f"serviceAccount:{GSA}")
    srv = serve(
        providers="keyferry,gcp",
        backends={"gcp": google.settings()},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )
    error = refused(srv, controller_token(google))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    details = error.details() or ""
    member = google.google.federated_principal(NS, KSA)
    assert member.endswith(
        f"/workloadIdentityPools/on-prem/subject/system:serviceaccount:{NS}:{KSA}"
    )
    assert f"to member '{member}'" in details and "svc.id.goog" not in details
    google.google.grant(
        f"projects/-/serviceAccounts/{GSA}", "roles/iam.workloadIdentityUser", member
    )
    resp = srv.sync_mount(
        "gcp",
        {"secrets": f"- resourceName: {NAME}\n  path: s\n"},
        namespace=NS,
        service_account=KSA,
        tokens=controller_token(google),
    )
    assert [f.contents for f in resp.files] == [CANARY]
