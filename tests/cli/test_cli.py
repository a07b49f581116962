"""The CLI: mount as the driver would, validate manifests offline, run the demo."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from keyferry_fakes.harness import running_server
from provider.cli.main import main
from tests import REPO

SPC = textwrap.dedent(
    """\
    apiVersion: secrets-store.csi.x-k8s.io/v1
    kind: SecretProviderClass
    metadata:
      name: app
      namespace: team-a
    spec:
      provider: keyferry
      parameters:
        objects: |
          - backend: local
            name: conf/app.json
            path: app.json
            mode: "0600"
            extract:
              - path: nested/token
                jsonKey: token
    """
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "root" / "conf"
    root.mkdir(parents=True)
    (root / "app.json").write_text('{"token": "t-123"}')
    (tmp_path / "spc.yaml").write_text(SPC)
    return tmp_path


def test_mount_writes_the_driver_layout(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = workspace / "vol"
    rc = main(
        [
            "mount",
            "-f",
            str(workspace / "spc.yaml"),
            "--local-root",
            str(workspace / "root"),
            "--out",
            str(out),
            "--print",
        ]
    )
    assert rc == 0
    data = out / "..data"
    assert data.is_symlink() and os.readlink(data).startswith("..20")
    assert (out / "app.json").is_symlink() and os.readlink(out / "app.json") == "..data/app.json"
    assert (out / "nested").is_symlink()
    assert (out / "nested" / "token").read_text() == "t-123"
    assert stat.S_IMODE((out / "app.json").stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert "app.json  mode 0600  18 bytes" in printed
    assert "object versions:" in printed and "app.json = hmac-sha256:" in printed
    # a second mount swaps the payload atomically and drops the old one
    (workspace / "spc.yaml").write_text(SPC.replace("path: nested/token", "path: token"))
    assert (
        main(
            [
                "mount",
                "-f",
                str(workspace / "spc.yaml"),
                "--local-root",
                str(workspace / "root"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert not (out / "nested").exists() and (out / "token").read_text() == "t-123"
    assert len([p for p in out.iterdir() if p.name.startswith("..20")]) == 1


def test_mount_against_a_running_socket(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(workspace, local_root=workspace / "root") as srv:
        rc = main(
            [
                "mount",
                "-f",
                str(workspace / "spc.yaml"),
                "--socket",
                str(srv.socket("keyferry")),
                "--print",
                "--pod",
                "team-a/web-1",
            ]
        )
    assert rc == 0
    assert "nested/token  mode 0600  5 bytes" in capsys.readouterr().out


def test_mount_failure_prints_the_status_and_exits_1(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["mount", "-f", str(workspace / "spc.yaml"), "--local-root", str(workspace)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "code = NOT_FOUND" in err and "conf/app.json" in err


def test_validate_accepts_good_and_reports_bad_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(SPC + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["validate", str(good)]) == 0
    assert "document 1 (SecretProviderClass app): ok (1 objects" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        SPC
        + "---\n"
        + SPC.replace("name: app", "name: typo").replace("jsonKey", "jsonkey")
        + "---\n"
        + SPC.replace("name: app", "name: other").replace("provider: keyferry", "provider: vault")
    )
    assert main(["validate", str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert "bad.yaml: document 1 (SecretProviderClass app): ok" in captured.out
    assert "bad.yaml: document 2 (SecretProviderClass typo):" in captured.err
    assert "unknown key 'jsonkey' (did you mean 'jsonKey'?)" in captured.err
    assert "document 3 (SecretProviderClass other): spec.provider 'vault'" in captured.err


def test_validate_flags_non_string_parameters_and_files_without_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(SPC.replace("  parameters:\n", "  parameters:\n    region: 5\n"))
    assert main(["validate", str(f)]) == 1
    assert "spec.parameters.region must be a string" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: ConfigMap\n")
    assert main(["validate", str(empty)]) == 1


EVERY_MISTAKE = textwrap.dedent(
    """\
    apiVersion: secrets-store.csi.x-k8s.io/v1
    kind: SecretProviderClass
    metadata: {name: native, namespace: team-a}
    spec:
      provider: keyferry
      parameters:
        objects: |
          - {backend: local, name: a, pth: x}
          - {backend: local, name: b, path: ../up}
          - {backend: local, name: c, path: same}
          - {backend: local, name: d, path: same}
    ---
    apiVersion: secrets-store.csi.x-k8s.io/v1
    kind: SecretProviderClass
    metadata: {name: aws, namespace: team-a}
    spec:
      provider: aws
      parameters:
        pathTranslation: "False"
        objects: |
          - {objectName: a, objectType: secretsmanager, objectAlais: x}
          - {objectName: b, objectType: secretsmanager, objectAlias: ../up}
          - {objectName: c, objectType: secretsmanager, objectAlias: same}
          - {objectName: d, objectType: secretsmanager, objectAlias: same}
    ---
    apiVersion: secrets-store.csi.x-k8s.io/v1
    kind: SecretProviderClass
    metadata: {name: gcp, namespace: team-a}
    spec:
      provider: gcp
      parameters:
        secrets: |
          - {resourceName: projects/p/secrets/a/versions/1, pth: x}
          - {resourceName: projects/p/secrets/b/versions/1, path: ../up}
          - {resourceName: projects/p/secrets/c/versions/1, path: same}
          - {resourceName: projects/p/secrets/d/versions/1, path: same}
    ---
    apiVersion: secrets-store.csi.x-k8s.io/v1
    kind: SecretProviderClass
    metadata: {name: azure, namespace: team-a}
    spec:
      provider: azure
      parameters:
        keyvaultName: my-kv
        tenantID: 00000000-0000-0000-0000-000000000000
        clientID: 11111111-1111-1111-1111-111111111111
        objects: |
          array:
            - "{objectName: a, objectType: secret, objectAlais: x}"
            - "{objectName: b, objectType: secret, objectAlias: ../up}"
            - "{objectName: c, objectType: secret, objectAlias: same}"
            - "{objectName: d, objectType: secret, objectAlias: same}"
    """
)


def test_validate_shows_every_mistake_of_a_class_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "mistakes.yaml"
    f.write_text(EVERY_MISTAKE)
    assert main(["validate", str(f)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    names = ("native", "aws", "gcp", "azure")
    unknowns = ("pth", "objectAlais", "pth", "objectAlais")
    for line, name, unknown in zip(lines, names, unknowns, strict=True):
        assert f"(SecretProviderClass {name}):" in line
        assert f"unknown key '{unknown}'" in line
        assert "'../up'" in line and "contains a '..' element" in line
        assert "'same' is also written by" in line


def test_demo_mounts_the_embedded_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "..data -> ..20" in out
    assert "db/password  mode 0600" in out and "| s3cr3t-demo" in out
    assert "api-key  mode 0600" in out and "| demo-api-key-1234" in out
    assert "server stopped, sockets removed" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("keyferry 0.")


def test_every_shipped_example_validates(capsys: pytest.CaptureFixture[str]) -> None:
    """validate checks manifests, not requests: it must not demand the pod's tokens."""
    examples = sorted(str(p) for p in (REPO / "examples").glob("*/*.yaml"))
    assert main(["validate", *examples]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for dialect in ("native", "aws", "gcp", "azure"):
        assert f"dialect {dialect})" in out


def test_mount_of_a_missing_file_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["mount", "-f", str(missing), "--print"])
    assert str(exc.value) == f"{missing}: cannot read: No such file or directory"
