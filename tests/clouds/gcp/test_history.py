"""Version history on Secret Manager (``versionHistory: N``, ``previous: true``):
examples/gcp/history.yaml through a real server on the ``keyferry`` socket, and the fake's
ListSecretVersions as strict as Google's (IAM, filter, pages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from keyferry_fakes.gcp import SECRET_ACCESSOR, SECRET_VIEWER, GoogleStack
from keyferry_fakes.harness import DEFAULT_POD, Server
from keyferry_fakes.kube import FakeKube
from provider.cli import manifest
from tests import REPO

NS, KSA = DEFAULT_POD[0], DEFAULT_POD[3]
GSA = "web@my-project.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{GSA}"


def example() -> dict[str, str]:
    (spc,) = list(manifest.load(REPO / "examples" / "gcp" / "history.yaml"))
    assert not isinstance(spc, Exception)
    return dict(spc.parameters)


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account(NS, KSA, {"iam.gke.io/gcp-service-account": GSA})
    return kube


@pytest.fixture
def srv(serve: Callable[..., Server], google: GoogleStack, kube: FakeKube) -> Server:
    google.google.bind(GSA, NS, KSA)
    google.google.grant("projects/my-project", SECRET_ACCESSOR, MEMBER)
    return serve(
        providers="keyferry",
        backends={"gcp": google.settings()},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )


def files(resp: Any) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def versions(resp: Any) -> dict[str, str]:
    return {v.id: v.version.rsplit("/", 1)[-1] for v in resp.object_version}


def test_history_example_newest_enabled_first_and_rotation(
    srv: Server, google: GoogleStack
) -> None:
    sm = google.secret_manager
    google.google.grant("projects/my-project", SECRET_VIEWER, MEMBER)
    for value in (b"canary-pw-1", b"canary-pw-2", b"canary-pw-3", b"canary-pw-4"):
        sm.add_version("my-project", "db-password", value)
    sm.set_state("my-project", "db-password", 3, "DISABLED")  # not part of the history
    sm.add_version("my-project", "api-key", b"key-1")
    resp = srv.mount("keyferry", example(), tokens=google.token(NS, KSA))
    assert files(resp) == {
        "db-password/0": b"canary-pw-4",
        "db-password/1": b"canary-pw-2",
        "db-password/2": b"canary-pw-1",
    }  # api-key has no previous version yet: optional, skipped
    assert versions(resp) == {"db-password/0": "4", "db-password/1": "2", "db-password/2": "1"}
    assert sm.calls.count("projects/my-project/secrets/db-password") == 1  # one listing
    sm.add_version("my-project", "db-password", b"canary-pw-5")
    sm.add_version("my-project", "api-key", b"key-2")
    rotated = srv.mount("keyferry", example(), tokens=google.token(NS, KSA))
    assert files(rotated)["db-password/0"] == b"canary-pw-5"
    assert files(rotated)["api-key.previous"] == b"key-1"
    assert versions(rotated)["db-password/0"] == "5"  # the driver's rotation rewrites
    assert not any("canary-pw" in line for line in srv.logs)


def refused(srv: Server, google: GoogleStack, secret: str, extra: str) -> tuple[Any, str]:
    """The status code and details of a Mount of ``secret`` with ``extra`` that fails."""
    objects = (
        f"- {{backend: gcp, name: projects/my-project/secrets/{secret}/versions/latest, "
        f"path: p, {extra}}}"
    )
    with pytest.raises(grpc.RpcError) as exc:
        srv.mount("keyferry", {"objects": objects}, tokens=google.token(NS, KSA))
    return exc.value.code(), str(exc.value.details())


def test_previous_without_one_is_not_found_naming_the_object(
    srv: Server, google: GoogleStack
) -> None:
    google.google.grant("projects/my-project", SECRET_VIEWER, MEMBER)
    google.secret_manager.add_version("my-project", "single", b"only")
    code, details = refused(srv, google, "single", "previous: true")
    assert code is grpc.StatusCode.NOT_FOUND
    assert "objects[0]" in details and "no version before the current one" in details


def test_listing_denied_names_the_role_to_grant(srv: Server, google: GoogleStack) -> None:
    google.secret_manager.add_version("my-project", "nolist", b"canary-nolist")
    code, details = refused(srv, google, "nolist", "versionHistory: 2")
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "secretmanager.versions.list" in details and "roles/secretmanager.viewer" in details
    assert "canary-nolist" not in details


def client(google: GoogleStack) -> Any:
    channel = grpc.insecure_channel(google.secret_manager.endpoint)
    return secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=channel)
    )


def listing(google: GoogleStack, token: str | None, **request: Any) -> list[str]:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    request.setdefault("parent", "projects/my-project/secrets/fake-list")
    pager = client(google).list_secret_versions(request=request, metadata=metadata, retry=None)
    return [v.name.rsplit("/", 1)[-1] for v in pager]


def test_fake_list_secret_versions_is_as_strict_as_google(google: GoogleStack) -> None:
    sm = google.secret_manager
    for value in (b"a", b"b", b"c"):
        sm.add_version("my-project", "fake-list", value)
    sm.set_state("my-project", "fake-list", 2, "DISABLED")
    viewer = google.google.service_account_token("viewer@my-project.iam.gserviceaccount.com")
    accessor = google.google.service_account_token("reader@my-project.iam.gserviceaccount.com")
    google.google.grant(
        "projects/my-project",
        SECRET_VIEWER,
        "serviceAccount:viewer@my-project.iam.gserviceaccount.com",
    )
    google.google.grant(
        "projects/my-project",
        SECRET_ACCESSOR,
        "serviceAccount:reader@my-project.iam.gserviceaccount.com",
    )
    with pytest.raises(core_exceptions.Unauthenticated):
        listing(google, None)
    with pytest.raises(core_exceptions.Unauthenticated):
        listing(google, "ya29.forged")
    with pytest.raises(core_exceptions.PermissionDenied) as denied:
        listing(google, accessor)  # secretAccessor may read versions, not list them
    assert "secretmanager.versions.list" in denied.value.message
    with pytest.raises(core_exceptions.InvalidArgument):
        listing(google, viewer, filter="name:foo OR 1=1")
    with pytest.raises(core_exceptions.NotFound):
        listing(google, viewer, parent="projects/my-project/secrets/missing")
    assert listing(google, viewer) == ["3", "2", "1"]
    assert listing(google, viewer, filter="state:ENABLED") == ["3", "1"]
    assert listing(google, viewer, filter="state:ENABLED", page_size=1) == ["3", "1"]  # pages
