"""AWS for the secrets-store-sync-controller: IRSA from the token the controller requested
for the SecretSync's ServiceAccount, with the region in the class, through a real server
on the ``aws`` and ``keyferry`` sockets against moto behind the strict SigV4 proxy. The
controller's pod does not live in the SecretSync's namespace: no pod or node is looked up,
and a class that would need the node's region is told to set ``region``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import (
    DEFAULT_POD,
    SYNC_CONTROLLER_POD,
    SYNC_CONTROLLER_TOKEN_SECONDS,
    running_server,
)
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from provider.cli import manifest
from tests import REPO

NS, SA = DEFAULT_POD[0], DEFAULT_POD[3]
ROLE = "arn:aws:iam::123456789012:role/web"
AUD = "sts.amazonaws.com"
REGION = "eu-west-3"


def controller_token(namespace: str = NS, service_account: str = SA) -> dict[str, str]:
    """The token the controller requests with TokenRequest: 10 minutes, bound to no pod."""
    return {
        AUD: ISSUER.pod_token(
            AUD, namespace, service_account, pod=None, lifetime=SYNC_CONTROLLER_TOKEN_SECONDS
        )
    }


def server(tmp_path: Path, proxy: AwsFaults, kube: FakeKube, **aws: Any) -> Any:
    return running_server(
        tmp_path,
        providers="keyferry,aws",
        backends={"aws": {"endpoint_url": proxy.url, **aws}},
        kubernetes=kube.settings(),
        cache_ttl_seconds=0,
    )


def drop_in(name: str, *, region: str | None = REGION) -> dict[str, str]:
    params = {"objects": f'- objectName: "{name}"\n  objectType: "secretsmanager"\n'}
    if region:
        params["region"] = region
    return params


def native(name: str, *, region: str | None = REGION) -> dict[str, str]:
    lines = ["- backend: aws", f"  name: {name}", "  service: secretsmanager", "  path: password"]
    if region:
        lines.append(f"  region: {region}")
    return {"objects": "\n".join(lines)}


def secret(value: str) -> tuple[str, str]:
    sm, _ = seed_clients(REGION)
    name = f"sync-{uuid.uuid4().hex[:8]}"
    made = sm.create_secret(Name=name, SecretString=value)
    return name, str(made["VersionId"])


@pytest.mark.parametrize("socket", ["aws", "keyferry"])
def test_irsa_with_the_region_in_the_class_mounts_for_the_controller(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, socket: str
) -> None:
    name, version = secret("CANARY-aws-sync-5e1b")
    tokens = controller_token()
    params = drop_in(name) if socket == "aws" else native(name)
    with server(tmp_path, proxy, kube) as srv:
        resp = srv.sync_mount(socket, params, namespace=NS, service_account=SA, tokens=tokens)
        logs = "\n".join(srv.logs)
    path = name if socket == "aws" else "password"
    assert {f.path: f.contents for f in resp.files} == {path: b"CANARY-aws-sync-5e1b"}
    assert [v.version for v in resp.object_version] == [version]
    (sts,) = proxy.sts_calls()
    assert sts["RoleArn"] == ROLE and sts["WebIdentityToken"] == tokens[AUD]
    # The session names the SecretSync's namespace and ServiceAccount, not the controller.
    assert sts["RoleSessionName"] == f"{NS}.{SA}"
    assert SYNC_CONTROLLER_POD[0] not in sts["RoleSessionName"]
    # Only the ServiceAccount (its role annotation) was read: no pod, no node.
    assert set(kube.requests) == {f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}"}
    assert tokens[AUD] not in logs and "CANARY-aws-sync-5e1b" not in logs


@pytest.mark.parametrize("socket", ["aws", "keyferry"])
def test_a_class_without_region_is_told_to_set_it_without_looking_up_any_pod(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube, socket: str
) -> None:
    name, _ = secret("unused")
    params = drop_in(name, region=None) if socket == "aws" else native(name, region=None)
    with server(tmp_path, proxy, kube) as srv, pytest.raises(grpc.RpcError) as info:
        srv.sync_mount(socket, params, namespace=NS, service_account=SA, tokens=controller_token())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert "set 'region' in the SecretProviderClass" in details
    assert "secrets-store-sync-controller" in details and "no pod or node" in details
    assert "label the node" not in details  # there is no node to label
    assert not any("/pods/" in p or "/nodes/" in p for p in kube.requests)
    assert kube.rejected == {}
    assert proxy.sts_calls() == [] and proxy.count("GetSecretValue") == 0


def test_the_servers_region_is_enough_without_one_in_the_class(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    name, version = secret("from the server's region")
    with server(tmp_path, proxy, kube, region=REGION) as srv:
        resp = srv.sync_mount(
            "aws",
            drop_in(name, region=None),
            namespace=NS,
            service_account=SA,
            tokens=controller_token(),
        )
    assert [v.version for v in resp.object_version] == [version]


def test_a_driver_request_naming_a_pod_that_does_not_exist_is_told_to_set_region(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    # A caller that is not recognised as the controller but names a pod the namespace does
    # not hold: the lookup answers 404 once, and the fix is the region, not a retry.
    name, _ = secret("unused")
    ghost = (NS, "no-such-pod", "", SA)
    with server(tmp_path, proxy, kube) as srv, pytest.raises(grpc.RpcError) as info:
        srv.mount("aws", drop_in(name, region=None), pod=ghost, tokens=controller_token())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert f"pod {NS}/no-such-pod" in details and "set 'region'" in details
    assert kube.rejected == {404: 1}


def test_no_token_names_the_controllers_audience_flag_not_the_csidriver(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    # The controller sends no tokens attribute when --token-request-audience is empty.
    name, _ = secret("unused")
    with server(tmp_path, proxy, kube) as srv, pytest.raises(grpc.RpcError) as info:
        srv.sync_mount("aws", drop_in(name), namespace=NS, service_account=SA)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert "--token-request-audience" in details and AUD in details
    assert "CSIDriver" not in details
    # No driver and no pod take part: the message must not send the reader looking for them.
    assert "driver" not in details and "pod's" not in details
    assert proxy.sts_calls() == []


def test_a_token_for_another_service_account_is_refused_by_sts(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    # The SecretSync names team-a/web, but the token is team-a/other's: the role trusts
    # only team-a/web, so STS refuses it, as it would any pod's.
    name, _ = secret("unused")
    with server(tmp_path, proxy, kube) as srv, pytest.raises(grpc.RpcError) as info:
        srv.sync_mount(
            "aws",
            drop_in(name),
            namespace=NS,
            service_account=SA,
            tokens=controller_token(NS, "other"),
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert proxy.count("GetSecretValue") == 0


def test_the_example_secretsync_gets_its_secret_data(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    """examples/sync-controller end to end: its class, Mounted as the controller does for
    its SecretSync, gives every sourcePath the SecretSync copies into the Secret."""
    example = REPO / "examples" / "sync-controller" / "secretsync.yaml"
    items = [d for d in yaml.safe_load_all(example.read_text()) if d]
    (sa,) = [d for d in items if d["kind"] == "ServiceAccount"]
    (sync,) = [d for d in items if d["kind"] == "SecretSync"]
    (spc,) = [c for c in manifest.load(example) if not isinstance(c, Exception)]
    ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
    role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    kube.add_service_account(ns, name, {"eks.amazonaws.com/role-arn": role})
    proxy.trust(role, ns, name)
    sm, ssm = seed_clients("eu-west-1")
    doc = json.dumps({"username": "app", "password": "CANARY-aws-example-sync"})
    try:
        sm.create_secret(Name="prod/web/db", SecretString=doc)
    except sm.exceptions.ResourceExistsException:  # moto keeps data between tests
        sm.put_secret_value(SecretId="prod/web/db", SecretString=doc)
    ssm.put_parameter(
        Name="/prod/web/feature-flags", Value="beta=on", Type="String", Overwrite=True
    )
    tokens = {
        AUD: ISSUER.pod_token(AUD, ns, name, pod=None, lifetime=SYNC_CONTROLLER_TOKEN_SECONDS)
    }
    with server(tmp_path, proxy, kube) as srv:
        resp = srv.sync_mount(
            spc.provider, spc.parameters, namespace=ns, service_account=name, tokens=tokens
        )
    files = {f.path: f.contents for f in resp.files}
    data = {e["targetKey"]: files[e["sourcePath"]] for e in sync["spec"]["secretObject"]["data"]}
    assert data == {
        "username": b"app",
        "password": b"CANARY-aws-example-sync",
        "feature-flags": b"beta=on",
    }
    assert set(kube.requests) == {f"/api/v1/namespaces/{ns}/serviceaccounts/{name}"}


def test_an_expired_controller_token_names_the_controller_not_the_csidriver(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    name, _ = secret("unused")
    expired = {AUD: ISSUER.pod_token(AUD, NS, SA, pod=None, lifetime=-60)}
    with server(tmp_path, proxy, kube) as srv, pytest.raises(grpc.RpcError) as info:
        srv.sync_mount("aws", drop_in(name), namespace=NS, service_account=SA, tokens=expired)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    details = info.value.details() or ""
    assert "ExpiredTokenException" in details and "secrets-store-sync-controller" in details
    assert "tokenRequests" not in details and expired[AUD] not in details
    assert [r.code for r in proxy.refusals] == ["ExpiredTokenException"]


def test_each_poll_with_a_fresh_controller_token_reuses_the_role_credentials(
    tmp_path: Path, proxy: AwsFaults, kube: FakeKube
) -> None:
    # The controller mints a new 10-minute token per poll; the role's credentials are kept
    # per principal (namespace, ServiceAccount, role) until they near expiry, so a poll
    # costs no STS call, only the reads (the value cache is off here).
    name, _ = secret("polled")
    with server(tmp_path, proxy, kube) as srv:
        for _ in range(3):
            srv.sync_mount(
                "aws", drop_in(name), namespace=NS, service_account=SA, tokens=controller_token()
            )
    assert len(proxy.sts_calls()) == 1
    assert proxy.count("GetSecretValue") + proxy.count("BatchGetSecretValue") == 3
