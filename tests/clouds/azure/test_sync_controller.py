"""Azure for the secrets-store-sync-controller: workload identity from the token the
controller requested for the SecretSync's ServiceAccount (bound to no pod), exchanged at
the fake Entra ID for Key Vault, through a real server on the ``azure`` and ``keyferry``
sockets. With ``clientID`` and ``tenantID`` in the class keyferry needs no Kubernetes API
at all; without them it reads the ServiceAccount's annotations, and says what to set when
it cannot."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.harness import DEFAULT_POD, SYNC_CONTROLLER_TOKEN_SECONDS, Server
from keyferry_fakes.kube import FakeKube
from provider.clouds.azure.ref import ANNOTATION_CLIENT_ID, ANNOTATION_TENANT_ID

NS, SA = DEFAULT_POD[0], DEFAULT_POD[3]
AUD = "api://AzureADTokenExchange"
CANARY = "CANARY-azure-sync-0b7e"


def controller_token(service_account: str = SA) -> dict[str, str]:
    return {AUD: pod_token(NS, service_account, pod=None, lifetime=SYNC_CONTROLLER_TOKEN_SECONDS)}


def drop_in(*, identity: bool = True) -> dict[str, str]:
    params = {
        "keyvaultName": "kv1",
        "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n",
    }
    if identity:
        params.update(tenantID=TENANT, clientID="app-1")
    return params


def native(*, identity: bool = True) -> dict[str, str]:
    lines = ["- backend: azure", "  vault: kv1", "  name: db-password"]
    if identity:
        lines += [f"  tenantID: {TENANT}", "  clientID: app-1"]
    return {"objects": "\n".join(lines)}


@pytest.mark.parametrize("socket", ["azure", "keyferry"])
def test_workload_identity_from_the_class_needs_no_kubernetes_api(
    serve: Callable[..., Server], fake: FakeAzure, socket: str
) -> None:
    version = fake.vault.add_secret("kv1", "db-password", CANARY)
    srv = serve(
        providers="keyferry,azure",
        backends={"azure": fake.settings(retry_backoff_factor=0.01)},
        cache_ttl_seconds=0,
    )  # no `kubernetes` section: keyferry has no API access in this pod
    params = drop_in() if socket == "azure" else native()
    tokens = controller_token()
    resp = srv.sync_mount(socket, params, namespace=NS, service_account=SA, tokens=tokens)
    assert {f.path: f.contents for f in resp.files} == {"db-password": CANARY.encode()}
    assert [v.version for v in resp.object_version] == [version]
    logs = "\n".join(srv.logs)
    assert CANARY not in logs and tokens[AUD] not in logs


def test_identity_from_the_service_accounts_annotations(
    serve: Callable[..., Server], fake: FakeAzure, kube: FakeKube
) -> None:
    fake.vault.add_secret("kv1", "db-password", CANARY)
    kube.add_service_account(NS, SA, {ANNOTATION_CLIENT_ID: "app-1", ANNOTATION_TENANT_ID: TENANT})
    srv = serve(
        providers="keyferry,azure",
        backends={"azure": fake.settings(retry_backoff_factor=0.01)},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )
    resp = srv.sync_mount(
        "azure",
        drop_in(identity=False),
        namespace=NS,
        service_account=SA,
        tokens=controller_token(),
    )
    assert [f.contents for f in resp.files] == [CANARY.encode()]
    assert set(kube.requests) == {f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}"}


def refused(
    serve: Callable[..., Server],
    fake: FakeAzure,
    socket: str,
    params: dict[str, str],
    tokens: dict[str, str] | None,
) -> grpc.RpcError:
    """The status of a Mount for the SecretSync's team-a/web by a keyferry that has no
    Kubernetes API; nothing may have reached Entra ID."""
    srv = serve(providers="keyferry,azure", backends={"azure": fake.settings()})
    with pytest.raises(grpc.RpcError) as info:
        srv.sync_mount(socket, params, namespace=NS, service_account=SA, tokens=tokens)
    assert fake.entra.token_requests == 0
    return info.value


def test_without_kubernetes_api_a_class_without_client_id_is_told_to_set_it(
    serve: Callable[..., Server], fake: FakeAzure
) -> None:
    error = refused(serve, fake, "keyferry", native(identity=False), controller_token())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "set 'clientID' in the SecretProviderClass" in (error.details() or "")


def test_no_token_names_the_controllers_audience_flag(
    serve: Callable[..., Server], fake: FakeAzure
) -> None:
    error = refused(serve, fake, "azure", drop_in(), None)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert "--token-request-audience" in details and AUD in details
    assert "CSIDriver" not in details


def test_a_token_of_another_service_account_is_refused(
    serve: Callable[..., Server], fake: FakeAzure
) -> None:
    # The SecretSync names team-a/web; a token of team-a/other is not its identity.
    error = refused(serve, fake, "azure", drop_in(), controller_token("other"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
