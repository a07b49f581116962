"""``keyferry validate`` checks each SecretSync against its class: every sourcePath must be a
file the class's Mount writes, in the form the SecretSync CRD admits (one name, or name/N);
``keyferry mount --sync-controller`` sends the request the controller sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from keyferry_fakes.harness import sync_controller_request
from provider.cli import manifest
from provider.cli.main import build_request, main, parser
from tests import REPO

CLASS = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: app, namespace: team-a}
spec:
  provider: keyferry
  parameters:
    objects: |
      - backend: local
        name: db.json
        path: db.json
        extract:
          - {path: db-password, jsonKey: password}
          - {path: nested/user, jsonKey: user}
"""

Validate = Callable[..., tuple[int, str, str]]


def sync(data: str, *, namespace: str = "team-a", spec: str = "") -> str:
    return (
        "apiVersion: secret-sync.x-k8s.io/v1alpha1\n"
        "kind: SecretSync\n"
        f"metadata: {{name: app-secret, namespace: {namespace}}}\n"
        "spec:\n"
        + (spec or "  serviceAccountName: web\n  secretProviderClassName: app\n")
        + "  secretObject:\n    type: Opaque\n    data:\n"
        + data
    )


@pytest.fixture
def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Validate:
    """``validate(text, ...)``: each text a file, ``keyferry validate`` over them all;
    (exit code, stdout, stderr)."""

    def go(*texts: str) -> tuple[int, str, str]:
        paths = []
        for i, text in enumerate(texts):
            path = tmp_path / f"f{i}.yaml"
            path.write_text(text)
            paths.append(str(path))
        code = main(["validate", *paths])
        out = capsys.readouterr()
        return code, out.out, out.err

    return go


def test_the_example_secretsync_is_checked_against_its_class(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = REPO / "examples" / "sync-controller" / "secretsync.yaml"
    assert main(["validate", str(example)]) == 0
    out = capsys.readouterr().out
    assert "document 3 (SecretSync web-db): ok (3 keys from web-sync)" in out
    assert "SecretSync web-db): skipped" not in out


def test_a_sync_of_files_the_class_writes_is_ok_across_files(validate: Validate) -> None:
    code, out, err = validate(CLASS, sync("      - {sourcePath: db-password, targetKey: pw}\n"))
    assert code == 0, err
    assert "(SecretSync app-secret): ok (1 keys from app)" in out


def test_a_source_path_the_class_does_not_write_is_named_with_the_files_it_does(
    validate: Validate,
) -> None:
    code, _, err = validate(
        CLASS + "---\n" + sync("      - {sourcePath: db-pasword, targetKey: pw}\n")
    )
    assert code == 1
    assert "sourcePath 'db-pasword' is not a file of SecretProviderClass app" in err
    assert "did you mean 'db-password'?" in err and "db.json" in err


def test_a_nested_file_cannot_be_synced_and_the_fix_is_a_flat_path(validate: Validate) -> None:
    code, _, err = validate(CLASS, sync("      - {sourcePath: nested/user, targetKey: user}\n"))
    assert code == 1
    assert "'nested/user' is not admitted by the SecretSync CRD" in err
    assert "give the object a path without '/'" in err


def test_a_class_in_another_namespace_is_not_the_syncs(validate: Validate) -> None:
    code, out, _ = validate(
        CLASS, sync("      - {sourcePath: whatever, targetKey: k}\n", namespace="team-b")
    )
    assert code == 0
    assert "its SecretProviderClass app is not among the files" in out


@pytest.mark.parametrize(
    ("data", "spec", "message"),
    [
        ("      - {sourcePath: ../db.json, targetKey: k}\n", "", "'../db.json' is not admitted"),
        ("      - {sourcePath: db.json, targetKey: a/b}\n", "", "targetKey 'a/b' is not admitted"),
        ("      - {sourcePath: 7, targetKey: k}\n", "", "sourcePath is required (a string)"),
        ("      - just-a-string\n", "", "data[0] must be a mapping"),
        ("      {}\n", "", "must list at least one"),
        (
            "      - {sourcePath: db.json, targetKey: k}\n" * 2,
            "",
            "targetKey 'k' is given twice",
        ),
        (
            "      - {sourcePath: db.json, targetKey: k}\n",
            "  secretProviderClassName: app\n",
            "spec.serviceAccountName is required",
        ),
    ],
)
def test_a_bad_secretsync_is_an_error_naming_the_field(
    validate: Validate, data: str, spec: str, message: str
) -> None:
    code, _, err = validate(CLASS, sync(data, spec=spec))
    assert code == 1
    assert "(SecretSync app-secret): " in err and message in err


def test_a_secretsync_that_is_not_a_mapping_inside_is_reported_not_crashed(
    validate: Validate,
) -> None:
    text = "apiVersion: v1\nkind: SecretSync\nmetadata: [1]\nspec: 5\n"
    code, _, err = validate(CLASS, text)
    assert code == 1
    assert "apiVersion must be secret-sync.x-k8s.io/v1alpha1" in err
    assert "spec.secretProviderClassName is required" in err


# -- keyferry mount --sync-controller ------------------------------------------------------


def test_mount_sync_controller_sends_exactly_the_controllers_request(tmp_path: Path) -> None:
    spc_file = tmp_path / "spc.yaml"
    spc_file.write_text(CLASS)
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    args = parser().parse_args(
        [
            "mount",
            "-f",
            str(spc_file),
            "--sync-controller",
            "--pod",
            "team-a/ctrl-0",
            "--pod-uid",
            "u-1",
            "--service-account",
            "web",
            "--token",
            f"aud-1={token}",
        ]
    )
    (spc,) = manifest.select(spc_file)
    got = build_request(args, spc)
    expected = sync_controller_request(
        spc.parameters,
        namespace="team-a",
        service_account="web",
        tokens={"aud-1": "tok-1"},
        controller_pod=("ctrl-0", "u-1"),
        expiration="",
    )
    assert got == expected


def test_mount_sync_controller_writes_the_files_for_the_secretsync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "db.json").write_text(json.dumps({"password": "pw", "user": "app"}))
    spc_file = tmp_path / "spc.yaml"
    spc_file.write_text(CLASS)
    mount = ["mount", "-f", str(spc_file), "--local-root", str(tmp_path), "--print"]
    rc = main([*mount, "--sync-controller", "--pod", "team-a", "--service-account", "web"])
    assert rc == 0
    assert "db-password  mode 0644  2 bytes" in capsys.readouterr().out


def test_mount_sync_controller_refuses_what_the_controller_never_sends(tmp_path: Path) -> None:
    spc_file = tmp_path / "spc.yaml"
    spc_file.write_text(CLASS)
    with pytest.raises(SystemExit) as info:
        main(["mount", "-f", str(spc_file), "--sync-controller", "--secret", f"k={spc_file}"])
    assert "sends no nodePublishSecretRef" in str(info.value)
