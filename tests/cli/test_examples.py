"""examples/<cloud>/: each workload hangs together, validates, and its cloud-side identity
binding names the workload's ServiceAccount."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider.cli import manifest
from provider.cli.main import main
from provider.clouds.aws.ref import IRSA_AUDIENCE
from provider.clouds.azure.ref import ANNOTATION_CLIENT_ID, WORKLOAD_AUDIENCE
from tests import REPO

EXAMPLES = REPO / "examples"
CLOUDS = ("aws", "gcp", "azure")
IDENTITY_ANNOTATION = {
    "aws": "eks.amazonaws.com/role-arn",
    "gcp": "iam.gke.io/gcp-service-account",
    "azure": ANNOTATION_CLIENT_ID,
}


def docs(cloud: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / cloud / "workload.yaml").read_text()) if d]


def of_kind(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in items if d["kind"] == kind]


def files_of(cloud: str) -> dict[str, set[str]]:
    """SecretProviderClass name -> the file names a Mount of it writes (from the real plan)."""
    out = {}
    for spc in manifest.load(EXAMPLES / cloud / "workload.yaml"):
        assert not isinstance(spc, Exception), spc
        plan = manifest.static_plan(spc)
        out[spc.name] = {o.path for obj in plan.objects for o in obj.outputs}
    return out


def script_vars(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=([^\s$]+)$", path.read_text(), flags=re.M))


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_workload_mounts_its_classes_and_uses_the_synced_secret(cloud: str) -> None:
    items = docs(cloud)
    (sa,) = of_kind(items, "ServiceAccount")
    (deploy,) = of_kind(items, "Deployment")
    classes = {c["metadata"]["name"]: c for c in of_kind(items, "SecretProviderClass")}
    providers = {c["spec"]["provider"] for c in classes.values()}
    assert providers == {cloud, "keyferry"}  # a drop-in class and a native one
    namespace = sa["metadata"]["namespace"]
    assert {d["metadata"]["namespace"] for d in items} == {namespace}
    assert IDENTITY_ANNOTATION[cloud] in sa["metadata"]["annotations"]

    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    mounted = set()
    for volume in pod["volumes"]:
        csi = volume["csi"]
        assert csi["driver"] == "secrets-store.csi.k8s.io" and csi["readOnly"] is True
        mounted.add(csi["volumeAttributes"]["secretProviderClass"])
    assert mounted == set(classes)

    files = files_of(cloud)
    synced: set[tuple[str, str]] = set()
    for name, spc in classes.items():
        for secret in spc["spec"].get("secretObjects", []):
            for entry in secret["data"]:
                # The driver copies a mounted file into the Secret: it must be one.
                assert entry["objectName"] in files[name], (name, entry)
                synced.add((secret["secretName"], entry["key"]))
    assert synced, "the example syncs nothing into a Kubernetes Secret"
    used = {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for container in pod["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert used and used <= synced


def test_validate_checks_the_classes_and_notes_the_other_objects(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    files = [str(EXAMPLES / cloud / "workload.yaml") for cloud in CLOUDS]
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    for f in files:
        assert f"{f}: document 1 (ServiceAccount web): skipped, not a SecretProviderClass" in out
        assert f"{f}: document 4 (Deployment web): skipped, not a SecretProviderClass" in out
        assert re.search(rf"{re.escape(f)}: document 2 \(SecretProviderClass \S+\): ok", out)
    only = tmp_path / "deployment.yaml"
    only.write_text(yaml.safe_dump(docs("aws")[-1]))
    assert main(["validate", str(only)]) == 1
    captured = capsys.readouterr()
    assert "(Deployment web): skipped" in captured.out
    assert "no SecretProviderClass found" in captured.err


def test_every_yaml_in_examples_validates(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.rglob("*.yaml"))
    assert main(["validate", *files]) == 0, capsys.readouterr().err


def sa_of(cloud: str) -> dict[str, Any]:
    (sa,) = of_kind(docs(cloud), "ServiceAccount")
    return sa


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_binding_script_is_bash_and_names_the_service_account(cloud: str) -> None:
    script = EXAMPLES / cloud / "bind-identity.sh"
    bash = shutil.which("bash")
    assert bash
    check = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    values = script_vars(script)
    sa = sa_of(cloud)["metadata"]
    assert values["NAMESPACE"] == sa["namespace"]
    assert values["SERVICE_ACCOUNT"] == sa["name"]


def test_aws_trust_policies_and_permissions_match_the_workload() -> None:
    sa = sa_of("aws")
    subject = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    (statement,) = json.loads((EXAMPLES / "aws" / "irsa-trust-policy.json").read_text())[
        "Statement"
    ]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]["StringEquals"]
    issuer = statement["Principal"]["Federated"].split(":oidc-provider/")[1]
    assert conditions[f"{issuer}:sub"] == subject
    assert conditions[f"{issuer}:aud"] == IRSA_AUDIENCE

    (pod_identity,) = json.loads((EXAMPLES / "aws" / "pod-identity-trust-policy.json").read_text())[
        "Statement"
    ]
    assert pod_identity["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(pod_identity["Action"]) == {"sts:AssumeRole", "sts:TagSession"}

    values = script_vars(EXAMPLES / "aws" / "bind-identity.sh")
    role_arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role_arn == f"arn:aws:iam::{values['ACCOUNT']}:role/{values['ROLE']}"

    # The permissions policy covers every Secrets Manager secret and SSM parameter the
    # workload's classes read.
    policy = json.loads((EXAMPLES / "aws" / "secrets-policy.json").read_text())["Statement"]
    allowed = {
        s["Action"]: s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        for s in policy
    }
    for spc in manifest.load(EXAMPLES / "aws" / "workload.yaml"):
        assert not isinstance(spc, Exception)
        for obj in manifest.static_plan(spc).objects:
            ref: Any = obj.ref
            action, kind = (
                ("secretsmanager:GetSecretValue", "secret:")
                if ref.service == "secretsmanager"
                else ("ssm:GetParameters", "parameter")
            )
            for region in {ref.region, ref.failover_region} - {""}:
                arn = f"arn:aws:{ref.service}:{region}:{values['ACCOUNT']}:{kind}{ref.target.name}"
                patterns = allowed[action]
                assert any(fnmatch.fnmatch(arn + "-AbCdEf", p) or p == arn for p in patterns), arn


def test_gcp_binding_grants_the_annotated_service_account() -> None:
    sa = sa_of("gcp")
    script = (EXAMPLES / "gcp" / "bind-identity.sh").read_text()
    values = script_vars(EXAMPLES / "gcp" / "bind-identity.sh")
    gsa = re.search(r"^GSA=(\S+)$", script, flags=re.M)
    assert gsa
    assert (
        gsa[1].replace("${PROJECT}", values["PROJECT"])
        == (sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"])
    )
    assert "gcloud iam service-accounts add-iam-policy-binding" in script
    assert "--role roles/iam.workloadIdentityUser" in script
    assert 'serviceAccount:${PROJECT}.svc.id.goog[${NAMESPACE}/${SERVICE_ACCOUNT}]"' in script
    # Every secret the workload reads gets secretAccessor.
    for spc in manifest.load(EXAMPLES / "gcp" / "workload.yaml"):
        assert not isinstance(spc, Exception)
        for obj in manifest.static_plan(spc).objects:
            secret: Any = obj.ref
            assert secret.project == values["PROJECT"]
            assert re.search(rf"\b{secret.secret}\b", script), secret.secret


def test_azure_federated_credential_names_the_service_account() -> None:
    script = (EXAMPLES / "azure" / "bind-identity.sh").read_text()
    assert "az identity federated-credential create" in script
    assert '--subject "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}"' in script
    assert f"--audience {WORKLOAD_AUDIENCE}" in script
    assert '--role "Key Vault Secrets User"' in script
    vault = re.search(r"^VAULT=(\S+)$", script, flags=re.M)
    assert vault
    for spc in manifest.load(EXAMPLES / "azure" / "workload.yaml"):
        assert not isinstance(spc, Exception)
        for obj in manifest.static_plan(spc).objects:
            ref: Any = obj.ref
            assert ref.vault == vault[1]
            assert not ref.auth.client_id  # taken from the ServiceAccount annotation


# The SecretSync's sourcePath as the controller's CRD admits it: one name, or name/N.
SOURCE_PATH = re.compile(
    r"^[A-Za-z0-9.]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?(\/([0-9]+))*$"
)


def test_the_sync_controller_example_syncs_files_its_class_writes() -> None:
    folder = EXAMPLES / "sync-controller"
    items = [d for d in yaml.safe_load_all((folder / "secretsync.yaml").read_text()) if d]
    (sa,) = of_kind(items, "ServiceAccount")
    (sync,) = of_kind(items, "SecretSync")
    (spc,) = [c for c in manifest.load(folder / "secretsync.yaml") if not isinstance(c, Exception)]
    assert {d["metadata"]["namespace"] for d in items} == {sa["metadata"]["namespace"]}
    assert sync["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert sync["spec"]["secretProviderClassName"] == spc.name
    assert IDENTITY_ANNOTATION["aws"] in sa["metadata"]["annotations"]
    plan = manifest.static_plan(spc)
    written = {o.path for obj in plan.objects for o in obj.outputs}
    for entry in sync["spec"]["secretObject"]["data"]:
        assert entry["sourcePath"] in written and SOURCE_PATH.match(entry["sourcePath"]), entry
    # A request from the controller names no node: every object names its region.
    assert all(getattr(obj.ref, "region", "") for obj in plan.objects)

    values = yaml.safe_load((folder / "helm-values.yaml").read_text())
    assert IRSA_AUDIENCE in [a["audience"] for a in values["tokenRequestAudience"]]
    (sidecar,) = values["providerContainer"]
    assert "--socket-dir=/provider" in sidecar["args"]
    providers = next(a for a in sidecar["args"] if a.startswith("--providers="))
    assert spc.provider in providers.split("=", 1)[1].split(",")
    assert {"name": "providervol", "mountPath": "/provider"} in sidecar["volumeMounts"]

    rbac = list(yaml.safe_load_all((folder / "keyferry-rbac.yaml").read_text()))
    (role,) = of_kind(rbac, "ClusterRole")
    (binding,) = of_kind(rbac, "ClusterRoleBinding")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "secrets-store-sync-controller-manager"
