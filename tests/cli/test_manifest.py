"""provider.cli.manifest: loading SecretProviderClass files, building driver-shaped attributes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provider import protocol
from provider._proto.v1alpha1 import service_pb2 as pb
from provider.cli import manifest
from provider.cli.manifest import SecretProviderClass
from provider.errors import InvalidArgument, KeyferryError, MountFailed
from provider.model import Pod

OBJECTS = "- backend: local\n  name: db/password\n"
POD = Pod(namespace="team-a", name="web-0", uid="uid-1", service_account="web")

GOOD = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: good
  namespace: team-a
spec:
  provider: keyferry
  parameters:
    objects: |
      - backend: local
        name: db/password
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spc.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def spc(
    parameters: dict[str, str] | None = None, provider: str = "keyferry", name: str = "my-spc"
) -> SecretProviderClass:
    return SecretProviderClass(
        name=name,
        namespace="team-a",
        provider=provider,
        parameters=parameters if parameters is not None else {"objects": OBJECTS},
        source="spc.yaml: document 1 (SecretProviderClass my-spc)",
    )


# --- load ----------------------------------------------------------------------------------


def test_load_single_class(tmp_path: Path) -> None:
    (item,) = list(manifest.load(write(tmp_path, GOOD)))
    assert isinstance(item, SecretProviderClass)
    assert item.name == "good"
    assert item.namespace == "team-a"
    assert item.provider == "keyferry"
    assert dict(item.parameters) == {"objects": OBJECTS}
    assert "document 1" in item.source and "good" in item.source


def test_load_multi_document_file_skips_other_kinds(tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n---\n"
        + GOOD
        + "---\n---\n"  # an empty document
        + "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\n"
        + GOOD.replace("name: good", "name: second")
    )
    items = list(manifest.load(write(tmp_path, text)))
    assert [type(i) for i in items] == [SecretProviderClass, SecretProviderClass]
    assert [i.name for i in items if isinstance(i, SecretProviderClass)] == ["good", "second"]
    assert "document 2" in items[0].source  # type: ignore[union-attr]
    assert "document 5" in items[1].source  # type: ignore[union-attr]


def test_non_string_parameter_is_reported_with_file_and_document(tmp_path: Path) -> None:
    bad = GOOD.replace("name: good", "name: bad").replace(
        "  parameters:\n", "  parameters:\n    region: 5\n"
    )
    path = write(tmp_path, GOOD + "---\n" + bad)
    items = list(manifest.load(path))
    assert isinstance(items[0], SecretProviderClass)
    err = items[1]
    assert isinstance(err, InvalidArgument)
    assert str(path) in err.message
    assert "document 2" in err.message
    assert "bad" in err.message
    assert "spec.parameters.region" in err.message


@pytest.mark.parametrize("value", ["true", "5", "1.5", "[a]", "{a: b}", "null"])
def test_each_non_string_parameter_type_is_reported(tmp_path: Path, value: str) -> None:
    text = GOOD.replace("  parameters:\n", f"  parameters:\n    flag: {value}\n")
    (err,) = list(manifest.load(write(tmp_path, text)))
    assert isinstance(err, InvalidArgument)
    assert "spec.parameters.flag" in err.message


@pytest.mark.parametrize("parameters", ["{}", "null", "", "[a, b]", "text"])
def test_empty_or_missing_parameters_are_reported(tmp_path: Path, parameters: str) -> None:
    text = GOOD.split("  parameters:")[0] + f"  parameters: {parameters}\n"
    (err,) = list(manifest.load(write(tmp_path, text)))
    assert isinstance(err, InvalidArgument)
    assert "document 1" in err.message
    assert "spec.parameters must be a non-empty mapping" in err.message


def test_spec_that_is_not_a_mapping_is_reported(tmp_path: Path) -> None:
    text = "kind: SecretProviderClass\nmetadata: {name: x}\nspec: [a]\n"
    (err,) = list(manifest.load(write(tmp_path, text)))
    assert isinstance(err, InvalidArgument)
    assert "spec must be a mapping" in err.message


def test_document_that_is_not_a_mapping_is_reported(tmp_path: Path) -> None:
    items = list(manifest.load(write(tmp_path, "- a\n- b\n---\n" + GOOD)))
    assert isinstance(items[0], InvalidArgument)
    assert "document 1" in items[0].message
    assert isinstance(items[1], SecretProviderClass)


def test_invalid_yaml_is_one_error_with_a_line(tmp_path: Path) -> None:
    (err,) = list(manifest.load(write(tmp_path, GOOD + "---\nkind: [unclosed\n")))
    assert isinstance(err, InvalidArgument)
    assert "not valid YAML" in err.message
    assert "line" in err.message


def test_unnamed_class_is_labelled(tmp_path: Path) -> None:
    text = "kind: SecretProviderClass\nspec:\n  provider: keyferry\n  parameters: {objects: x}\n"
    (item,) = list(manifest.load(write(tmp_path, text)))
    assert isinstance(item, SecretProviderClass)
    assert "<unnamed>" in item.source
    assert item.namespace == ""


def test_non_string_parameter_keys_do_not_crash_attribute_encoding(tmp_path: Path) -> None:
    # Kubernetes stores `1: x` as the string key "1"; keyferry must either report the key or
    # treat it as a string, never crash when the attributes are sorted and encoded.
    text = GOOD.replace("  parameters:\n", "  parameters:\n    1: 'x'\n")
    (item,) = list(manifest.load(write(tmp_path, text)))
    if isinstance(item, KeyferryError):
        return
    encoded = manifest.encode_attributes(manifest.driver_attributes(item, POD))
    assert json.loads(encoded)["1"] == "x"


# --- driver_attributes (docs/protocol.md §2.2) --------------------------------------------------


def test_driver_attributes_hold_parameters_spc_name_and_kubelet_keys() -> None:
    attrs = manifest.driver_attributes(spc({"objects": OBJECTS, "region": "eu"}), POD)
    assert attrs == {
        "objects": OBJECTS,
        "region": "eu",
        "secretProviderClass": "my-spc",
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": "team-a",
        "csi.storage.k8s.io/pod.uid": "uid-1",
        "csi.storage.k8s.io/serviceAccount.name": "web",
        "csi.storage.k8s.io/ephemeral": "true",
    }


def test_volume_attributes_override_parameters() -> None:
    attrs = manifest.driver_attributes(
        spc({"objects": OBJECTS, "region": "eu"}),
        POD,
        volume_attributes={"region": "us", "secretProviderClass": "my-spc", "extra": "e"},
    )
    assert attrs["region"] == "us"
    assert attrs["extra"] == "e"
    assert attrs["objects"] == OBJECTS


def test_kubelet_keys_are_set_by_kubelet_not_the_pod_author() -> None:
    attrs = manifest.driver_attributes(
        spc(), POD, volume_attributes={"csi.storage.k8s.io/pod.namespace": "kube-system"}
    )
    assert attrs["csi.storage.k8s.io/pod.namespace"] == "team-a"


def test_tokens_are_json_inside_json() -> None:
    attrs = manifest.driver_attributes(
        spc(),
        POD,
        tokens={"sts.amazonaws.com": "jwt-1", "": "jwt-2"},
        expiration="2026-05-01T12:00:00Z",
    )
    assert json.loads(attrs[protocol.TOKENS_KEY]) == {
        "sts.amazonaws.com": {"token": "jwt-1", "expirationTimestamp": "2026-05-01T12:00:00Z"},
        "": {"token": "jwt-2", "expirationTimestamp": "2026-05-01T12:00:00Z"},
    }


@pytest.mark.parametrize("tokens", [None, {}])
def test_no_tokens_means_no_tokens_key(tokens: dict[str, str] | None) -> None:
    assert protocol.TOKENS_KEY not in manifest.driver_attributes(spc(), POD, tokens=tokens)


def test_driver_attributes_do_not_change_the_class() -> None:
    original = spc({"objects": OBJECTS})
    manifest.driver_attributes(original, POD, volume_attributes={"objects": "other"})
    assert dict(original.parameters) == {"objects": OBJECTS}


def test_encoded_attributes_decode_to_the_same_mount() -> None:
    attrs = manifest.driver_attributes(
        spc({"objects": OBJECTS, "note": "<a & b>"}),
        POD,
        volume_attributes={"note": "<override>"},
        tokens={"aud": "jwt"},
    )
    text = manifest.encode_attributes(attrs)
    assert "<" not in text and "&" not in text
    assert list(json.loads(text)) == sorted(attrs)
    mount = protocol.decode(pb.MountRequest(attributes=text, secrets="null", permission="420"))
    assert dict(mount.parameters) == {"objects": OBJECTS, "note": "<override>"}
    assert mount.secret_provider_class == "my-spc"
    assert mount.pod == POD
    assert mount.tokens["aud"].token == "jwt"


# --- static_plan ---------------------------------------------------------------------------


def test_static_plan_parses_a_native_class() -> None:
    plan = manifest.static_plan(spc())
    assert plan.dialect == "native"
    assert [o.path for s in plan.objects for o in s.outputs] == ["db/password"]


def test_static_plan_rejects_unknown_provider_naming_the_source() -> None:
    with pytest.raises(InvalidArgument) as err:
        manifest.static_plan(spc(provider="vault"))
    assert "spc.yaml: document 1" in err.value.message
    assert "'vault'" in err.value.message
    assert "keyferry" in err.value.message


def test_static_plan_reports_parameter_errors() -> None:
    with pytest.raises(MountFailed) as err:
        manifest.static_plan(spc({"objects": "- backend: local\n  name: ../x\n"}))
    assert "objects[0]" in err.value.message


def test_static_plan_reports_duplicate_outputs() -> None:
    objects = (
        "- backend: local\n  name: a\n  path: same\n- backend: local\n  name: b\n  path: same\n"
    )
    with pytest.raises(MountFailed):
        manifest.static_plan(spc({"objects": objects}))


@pytest.mark.parametrize("provider", ["keyferry", "aws", "gcp", "azure"])
def test_every_default_socket_name_has_a_dialect(provider: str) -> None:
    assert manifest.dialect_for(provider, "src") == manifest.PROVIDER_DIALECTS[provider]
