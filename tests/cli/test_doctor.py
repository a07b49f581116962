"""``keyferry doctor`` through the real CLI and lightkube, against the strict fake API
server loaded with the rendered deploy/ overlays and the shipped examples."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyferry_fakes.kube_extra import OPERATOR, FakeKubeExtra
from provider.cli.main import main
from tests import REPO
from tests.cli.test_deploy import rendered

EXAMPLES = REPO / "examples"
ALL_AUDIENCES = [
    "sts.amazonaws.com",
    "pods.eks.amazonaws.com",
    "my-project.svc.id.goog",
    "api://AzureADTokenExchange",
]


def example(cloud: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / cloud / "workload.yaml").read_text()) if d]


def ds_status(ready: int) -> dict[str, int]:
    """A DaemonSet's status on 3 nodes, as the API server returns it."""
    return {
        "currentNumberScheduled": 3,
        "desiredNumberScheduled": 3,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberAvailable": ready,
        "updatedNumberScheduled": 3,
        "observedGeneration": 1,
    }


def install(fake: FakeKubeExtra, overlay: str, config_extra: str = "") -> None:
    """keyferry as `kubectl apply -k deploy/overlays/<overlay>` leaves it, 3 nodes ready."""
    for doc in rendered(overlay):
        if doc["kind"] == "DaemonSet":
            doc = copy.deepcopy(doc)
            doc["status"] = ds_status(ready=3)
            fake.add_object(doc)
        elif doc["kind"] == "ConfigMap":
            doc = copy.deepcopy(doc)
            doc["data"]["config.yaml"] += config_extra
            fake.add_object(doc)


def deploy_workload(fake: FakeKubeExtra, cloud: str, *, drop: str = "") -> None:
    """The example's ServiceAccount and classes, and one pod of its Deployment."""
    for doc in example(cloud):
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            fake.add_workload_pod("team-a", "web-0", pod["serviceAccountName"], pod["volumes"])
        else:
            doc = copy.deepcopy(doc)
            if drop and doc["kind"] == "ServiceAccount":
                doc["metadata"]["annotations"].pop(drop)
            fake.add_object(doc)


@pytest.fixture(scope="module")
def _api() -> Iterator[FakeKubeExtra]:
    kube = FakeKubeExtra()
    yield kube
    kube.close()


@pytest.fixture
def fake(_api: FakeKubeExtra) -> FakeKubeExtra:
    _api.reset()
    return _api


def doctor(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    rc = main(["doctor", "--kubeconfig", str(fake.kubeconfig(tmp_path)), *args])
    return rc, capsys.readouterr().out


def test_a_ready_aws_pod_passes_and_no_secret_is_read(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    fake.add_csidriver(ALL_AUDIENCES)
    deploy_workload(fake, "aws")
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 0, out
    assert "PASS  3 of 3 provider pods ready" in out
    assert "PASS  serves sockets aws, azure, gcp, keyferry (ConfigMap keyferry-" in out
    for cls in ("web-aws", "web-native"):
        assert f"SecretProviderClass team-a/{cls} (volume " in out
    assert "PASS  spec.provider 'aws' is served (dialect aws)" in out
    assert "PASS  spec.provider 'keyferry' is served (dialect native)" in out
    assert "PASS  the class validates (2 objects)" in out
    assert "PASS  IRSA role arn:aws:iam::123456789012:role/team-a-web" in out
    assert "PASS  the CSIDriver requests token audience sts.amazonaws.com (AWS IRSA)" in out
    assert "FAIL" not in out and "all checks passed" in out
    # It read what it needed, as the kubeconfig's user, and never a Secret.
    assert set(fake.auth_headers) == {f"Bearer {fake.operator_token}"}
    assert "/api/v1/namespaces/team-a/serviceaccounts/web" in fake.requests
    assert not [p for p in fake.requests if "/secrets/" in p]


def test_missing_irsa_annotation_and_audience_fail_with_the_fix(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    fake.add_csidriver(["api://AzureADTokenExchange"])
    deploy_workload(fake, "aws", drop="eks.amazonaws.com/role-arn")
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 1
    assert (
        "FAIL  ServiceAccount team-a/web has no eks.amazonaws.com/role-arn annotation (IRSA)"
    ) in out
    assert (
        "fix: kubectl -n team-a annotate serviceaccount web "
        "eks.amazonaws.com/role-arn=arn:aws:iam::<account>:role/<role>"
    ) in out
    assert "FAIL  the CSIDriver requests no token for audience sts.amazonaws.com" in out
    # Helm replaces lists on upgrade: the fix repeats the audience already requested.
    assert (
        "--set 'tokenRequests[0].audience=api://AzureADTokenExchange' "
        "--set 'tokenRequests[1].audience=sts.amazonaws.com'"
    ) in out
    assert "check(s) failed" in out


def test_the_native_overlay_does_not_serve_the_aws_socket(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "native")
    fake.add_csidriver(ALL_AUDIENCES)
    deploy_workload(fake, "aws")
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 1
    assert "PASS  serves sockets keyferry (ConfigMap" in out
    assert "FAIL  spec.provider 'aws' is not a socket keyferry serves" in out
    assert "the drop-in overlay serves aws, gcp and azure" in out
    assert "PASS  spec.provider 'keyferry' is served (dialect native)" in out


def test_gcp_class_needs_the_pool_audience_from_the_server_configuration(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in", "backends:\n  gcp:\n    project: my-project\n")
    fake.add_csidriver(["sts.amazonaws.com"])
    deploy_workload(fake, "gcp")
    args = ("--class", "team-a/web-gcp", "--service-account", "web")
    rc, out = doctor(fake, tmp_path, capsys, *args)
    assert rc == 1
    assert "FAIL  the CSIDriver requests no token for audience my-project.svc.id.goog" in out
    assert "PASS  impersonates web-secrets@my-project.iam.gserviceaccount.com" in out

    fake.add_csidriver(ALL_AUDIENCES)
    rc, out = doctor(fake, tmp_path, capsys, *args)
    assert rc == 0, out
    assert "PASS  the CSIDriver requests token audience my-project.svc.id.goog" in out


def test_azure_class_from_a_file_needs_the_client_id_annotation(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    fake.add_csidriver(ALL_AUDIENCES)
    deploy_workload(fake, "azure")
    file = str(EXAMPLES / "azure" / "workload.yaml")
    args = ("-f", file, "--service-account", "web")
    rc, out = doctor(fake, tmp_path, capsys, *args)
    assert rc == 0, out
    assert "PASS  Azure client id 11111111-1111-1111-1111-111111111111" in out

    deploy_workload(fake, "azure", drop="azure.workload.identity/client-id")
    rc, out = doctor(fake, tmp_path, capsys, *args, "--name", "web-azure")
    assert rc == 1
    assert "SecretProviderClass team-a/web-native" not in out  # --name picks one
    assert (
        "FAIL  no clientID in the class and ServiceAccount team-a/web has no "
        "azure.workload.identity/client-id annotation"
    ) in out
    assert (
        "fix: kubectl -n team-a annotate serviceaccount web azure.workload.identity/client-id="
        in out
    )


def test_a_class_that_does_not_validate_fails_with_the_validator_message(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    fake.add_csidriver(ALL_AUDIENCES)
    deploy_workload(fake, "aws")
    spc = next(d for d in example("aws") if d["metadata"]["name"] == "web-aws")
    spc["spec"]["parameters"]["objects"] = spc["spec"]["parameters"]["objects"].replace(
        "objectAlias", "objectAlais"
    )
    fake.add_object(spc)
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 1
    assert "FAIL  the class does not validate:" in out
    assert "did you mean 'objectAlias'?" in out


def test_a_missing_class_and_a_missing_driver_fail(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    deploy_workload(fake, "aws")
    del fake.objects[
        "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/team-a/secretproviderclasses/web-aws"
    ]
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 1
    assert "FAIL  not found: the Secrets Store CSI Driver is not installed" in out
    assert "FAIL  SecretProviderClass team-a/web-aws not found" in out


def test_unready_provider_pods_fail(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    ds_path = "/apis/apps/v1/namespaces/keyferry/daemonsets/keyferry"
    fake.objects[ds_path]["status"] = ds_status(ready=2)
    fake.add_csidriver(ALL_AUDIENCES)
    deploy_workload(fake, "aws")
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 1
    assert "FAIL  2 of 3 provider pods ready" in out


def test_rbac_limits_are_notes_and_a_bad_token_is_a_failure(
    fake: FakeKubeExtra, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake, "drop-in")
    fake.add_csidriver(ALL_AUDIENCES)
    deploy_workload(fake, "aws")
    fake.granted[OPERATOR] -= {"daemonsets"}
    rc, out = doctor(fake, tmp_path, capsys, "--pod", "team-a/web-0")
    assert rc == 0, out
    assert "NOTE  may not read the DaemonSet; socket names checked against keyferry's" in out

    kubeconfig = fake.kubeconfig(tmp_path, token="kube-revoked")
    rc = main(["doctor", "--kubeconfig", str(kubeconfig), "--pod", "team-a/web-0"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAIL  Kubernetes API read not allowed" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--pod", "web-0"]) == 2
    assert "--pod expects NAMESPACE/NAME" in capsys.readouterr().out
