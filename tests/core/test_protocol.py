"""provider.protocol: MountRequest -> Mount decoding and the driver's attribute encoding."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keyferry_fakes.harness import driver_request
from provider import protocol
from provider._proto.v1alpha1 import service_pb2 as pb
from provider.errors import Code, InvalidArgument, KeyferryError
from provider.model import ObjectVersion, OutputFile, Result

TOKENS = protocol.TOKENS_KEY
CANARY = "CANARY-7d1f0a-do-not-leak"

KUBELET = {
    "csi.storage.k8s.io/pod.name": "web-0",
    "csi.storage.k8s.io/pod.namespace": "team-a",
    "csi.storage.k8s.io/pod.uid": "11111111-2222",
    "csi.storage.k8s.io/serviceAccount.name": "web",
    "csi.storage.k8s.io/ephemeral": "true",
}


def request(
    attributes: dict[str, Any] | str | None = None,
    *,
    secrets: str = "null",
    permission: str = "420",
    target_path: str = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount",
    current: list[tuple[str, str]] | None = None,
) -> pb.MountRequest:
    if attributes is None:
        attributes = {"objects": "- x", "secretProviderClass": "spc", **KUBELET}
    text = attributes if isinstance(attributes, str) else json.dumps(attributes)
    return pb.MountRequest(
        attributes=text,
        secrets=secrets,
        permission=permission,
        target_path=target_path,
        current_object_version=[pb.ObjectVersion(id=i, version=v) for i, v in current or []],
    )


def tokens_json(**audiences: str) -> str:
    return json.dumps(
        {
            aud: {"token": tok, "expirationTimestamp": "2026-05-01T12:00:00Z"}
            for aud, tok in audiences.items()
        }
    )


# --- attributes -----------------------------------------------------------------------------


def test_decode_driver_shaped_request_fills_pod_and_parameters() -> None:
    mount = protocol.decode(request(), dialect="aws", provider_name="aws")
    assert mount.pod.name == "web-0"
    assert mount.pod.namespace == "team-a"
    assert mount.pod.uid == "11111111-2222"
    assert mount.pod.service_account == "web"
    assert dict(mount.parameters) == {"objects": "- x"}
    assert mount.secret_provider_class == "spc"
    assert mount.default_mode == 0o644
    assert mount.dialect == "aws"
    assert mount.provider_name == "aws"
    assert mount.target_path.endswith("/mount")
    assert dict(mount.secrets) == {}
    assert dict(mount.tokens) == {}


@pytest.mark.parametrize(
    ("attributes", "shown"),
    [
        ({"objects": "x", "region": 5}, "region"),
        ({"objects": "x", "flag": True}, "flag"),
        ({"objects": "x", "nested": {"a": "b"}}, "nested"),
        ({"objects": "x", "list": ["a"]}, "list"),
        ({"objects": "x", "nothing": None}, "nothing"),
    ],
)
def test_attribute_values_must_be_strings(attributes: dict[str, Any], shown: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        protocol.decode(request(attributes))
    assert "MountRequest.attributes" in err.value.message
    assert shown in err.value.message


@pytest.mark.parametrize("text", ["[]", '["a"]', '"text"', "5", "true", "null"])
def test_attributes_must_be_a_json_object(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"MountRequest\.attributes"):
        protocol.decode(request(text))


@pytest.mark.parametrize("text", ["", "{", '{"a": "b",}', "{'a': 'b'}", "not json"])
def test_malformed_attributes_json_is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"MountRequest\.attributes"):
        protocol.decode(request(text))


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["null", "", "{}", "  null  ", "\n"])
def test_secrets_accepts_null_empty_and_empty_object(text: str) -> None:
    mount = protocol.decode(request(secrets=text))
    assert dict(mount.secrets) == {}


def test_secrets_map_is_decoded() -> None:
    mount = protocol.decode(request(secrets=json.dumps({"key.json": "{}", "user": "u"})))
    assert dict(mount.secrets) == {"key.json": "{}", "user": "u"}


@pytest.mark.parametrize("text", ["[]", '"s"', "1", '{"a": 1}', '{"a": null}', "{bad"])
def test_bad_secrets_are_invalid_argument_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"MountRequest\.secrets"):
        protocol.decode(request(secrets=text))


def test_bad_secrets_error_reveals_neither_keys_nor_values() -> None:
    for text in (
        json.dumps({CANARY: 1}),
        json.dumps({"k": [CANARY]}),
        '{"k": "' + CANARY,
    ):
        with pytest.raises(InvalidArgument) as err:
            protocol.decode(request(secrets=text))
        assert CANARY not in err.value.message


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_come_from_attributes() -> None:
    attrs = {"objects": "x", **KUBELET, TOKENS: tokens_json(**{"sts.amazonaws.com": "jwt-a"})}
    mount = protocol.decode(request(attrs))
    token = mount.tokens["sts.amazonaws.com"]
    assert token.token == "jwt-a"
    assert token.audience == "sts.amazonaws.com"
    assert token.expiration == "2026-05-01T12:00:00Z"
    assert TOKENS not in mount.parameters


def test_tokens_fall_back_to_secrets_and_are_removed_from_secrets() -> None:
    secrets = json.dumps({TOKENS: tokens_json(aud="jwt-s"), "other": "v"})
    mount = protocol.decode(request(secrets=secrets))
    assert mount.tokens["aud"].token == "jwt-s"
    assert dict(mount.secrets) == {"other": "v"}


def test_attribute_tokens_win_over_secret_tokens_and_secret_copy_is_removed() -> None:
    attrs = {"objects": "x", TOKENS: tokens_json(aud="from-attributes")}
    secrets = json.dumps({TOKENS: tokens_json(aud="from-secrets")})
    mount = protocol.decode(request(attrs, secrets=secrets))
    assert mount.tokens["aud"].token == "from-attributes"
    assert TOKENS not in mount.secrets


def test_empty_attribute_tokens_fall_back_to_secrets() -> None:
    attrs = {"objects": "x", TOKENS: ""}
    secrets = json.dumps({TOKENS: tokens_json(aud="from-secrets")})
    mount = protocol.decode(request(attrs, secrets=secrets))
    assert mount.tokens["aud"].token == "from-secrets"


def test_default_audience_key_is_kept() -> None:
    mount = protocol.decode(request({"objects": "x", TOKENS: tokens_json(**{"": "jwt"})}))
    assert mount.tokens[""].token == "jwt"


def test_token_without_expiration_gets_empty_expiration() -> None:
    mount = protocol.decode(request({"objects": "x", TOKENS: json.dumps({"a": {"token": "t"}})}))
    assert mount.tokens["a"].expiration == ""


@pytest.mark.parametrize(
    "raw",
    [
        '{"aud": {"token": "' + CANARY,
        '{"aud": {"token": "' + CANARY + '"}',
        CANARY,
        json.dumps([CANARY]),
        json.dumps(CANARY),
        json.dumps({"aud": CANARY}),
        json.dumps({"aud": {"tok": CANARY}}),
        json.dumps({"aud": {"token": [CANARY]}}),
    ],
)
@pytest.mark.parametrize("where", ["attributes", "secrets"])
def test_malformed_tokens_are_rejected_without_echoing_token_text(raw: str, where: str) -> None:
    if where == "attributes":
        req = request({"objects": "x", TOKENS: raw})
    else:
        req = request({"objects": "x"}, secrets=json.dumps({TOKENS: raw}))
    with pytest.raises(InvalidArgument) as err:
        protocol.decode(req)
    assert CANARY not in err.value.message
    assert CANARY not in str(err.value)
    assert TOKENS in err.value.message
    assert where in err.value.message


def test_token_is_kept_out_of_repr() -> None:
    mount = protocol.decode(request({"objects": "x", TOKENS: tokens_json(aud=CANARY)}))
    assert CANARY not in repr(mount)
    assert CANARY not in repr(mount.tokens["aud"])


def test_secret_values_lists_tokens_and_secrets_for_redaction() -> None:
    attrs = {"objects": "x", TOKENS: tokens_json(a="tok-a", b="tok-b")}
    mount = protocol.decode(request(attrs, secrets=json.dumps({"s": "secret-value"})))
    assert sorted(protocol.secret_values(mount)) == ["secret-value", "tok-a", "tok-b"]


# --- permission -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("permission", "mode"),
    [
        ("420", 0o644),
        ("0", 0),
        ("511", 0o777),
        ("256", 0o400),
        ('"420"', 0o644),
        (" 420 ", 0o644),
    ],
)
def test_permission_is_json_decimal_mode(permission: str, mode: int) -> None:
    assert protocol.decode(request(permission=permission)).default_mode == mode


@pytest.mark.parametrize(
    "permission",
    [
        "512",
        "-1",
        "0644x",
        "true",
        "null",
        "4.2",
        "[420]",
        '"0o644"',
        '"-1"',
        "garbage",
        "1e2",
        '"²"',
        "",
        "  ",
    ],
)
def test_bad_permission_is_invalid_argument(permission: str) -> None:
    with pytest.raises(InvalidArgument, match=r"MountRequest\.permission"):
        protocol.decode(request(permission=permission))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
@example('"\u00b2"')  # str.isdigit() is true for superscript two, int() rejects it
def test_any_permission_string_decodes_or_is_invalid_argument(permission: str) -> None:
    try:
        mode = protocol.decode(request(permission=permission)).default_mode
    except InvalidArgument:
        return
    assert 0 <= mode <= 0o777


# --- parameters -----------------------------------------------------------------------------


def test_kubelet_and_driver_keys_are_stripped_from_parameters() -> None:
    attrs = {
        "objects": "x",
        "region": "eu-west-1",
        "secretProviderClass": "spc",
        "providerName": "keyferry",
        "csi.storage.k8s.io/anything.new": "v",
        TOKENS: tokens_json(a="t"),
        **KUBELET,
    }
    mount = protocol.decode(request(attrs))
    assert dict(mount.parameters) == {"objects": "x", "region": "eu-west-1"}


def test_custom_volume_attributes_stay_in_parameters() -> None:
    attrs = {"objects": "x", "csi.storage.k8s.io.lookalike": "v", "custom": "c"}
    mount = protocol.decode(request(attrs))
    assert dict(mount.parameters) == attrs


def test_v15_rotation_request_decodes() -> None:
    attrs = {
        "objects": "x",
        "csi.storage.k8s.io/pod.name": "web-0",
        "csi.storage.k8s.io/pod.namespace": "team-a",
        "csi.storage.k8s.io/pod.uid": "uid",
        "csi.storage.k8s.io/serviceAccount.name": "web",
        TOKENS: tokens_json(aud="minted"),
    }
    mount = protocol.decode(request(attrs, secrets="{}", current=[("db", "v1"), ("api", "v7")]))
    assert mount.secret_provider_class == ""
    assert dict(mount.parameters) == {"objects": "x"}
    assert dict(mount.current_versions) == {"db": "v1", "api": "v7"}
    assert mount.tokens["aud"].token == "minted"
    assert mount.pod.name == "web-0"


def test_missing_pod_keys_decode_to_empty_strings() -> None:
    mount = protocol.decode(request({"objects": "x"}, target_path=""))
    assert (mount.pod.name, mount.pod.namespace, mount.pod.uid, mount.pod.service_account) == (
        "",
        "",
        "",
        "",
    )
    assert mount.target_path == ""


# --- encode ---------------------------------------------------------------------------------


def test_encode_carries_files_modes_and_versions() -> None:
    result = Result(
        files=(OutputFile("a/b", 0o400, b"\x00\xff"), OutputFile("c", 0o644, b"")),
        versions=(ObjectVersion("a", "1"), ObjectVersion("c", "2")),
    )
    response = protocol.encode(result)
    assert [(f.path, f.mode, f.contents) for f in response.files] == [
        ("a/b", 0o400, b"\x00\xff"),
        ("c", 0o644, b""),
    ]
    assert [(v.id, v.version) for v in response.object_version] == [("a", "1"), ("c", "2")]
    assert not response.error.code


# --- attributes_json ------------------------------------------------------------------------


def test_attributes_json_sorts_keys_and_escapes_html_like_go() -> None:
    text = protocol.attributes_json({"b": "<x>&y", "a": "1", "c": "é"})
    # Go: json.Marshal(map[string]string{"b": "<x>&y", "a": "1", "c": "é"})
    assert text == '{"a":"1","b":"\\u003cx\\u003e\\u0026y","c":"é"}'


def test_attributes_json_escapes_html_in_keys_too() -> None:
    assert protocol.attributes_json({"<k>": "v"}) == '{"\\u003ck\\u003e":"v"}'


def test_attributes_json_escapes_line_and_paragraph_separators_like_go() -> None:
    # Go's encoding/json escapes U+2028 and U+2029 even with HTML escaping on.
    assert protocol.attributes_json({"k": "a\u2028b\u2029c"}) == '{"k":"a\\u2028b\\u2029c"}'


def test_attributes_json_escapes_control_characters() -> None:
    text = protocol.attributes_json({"k": "a\nb\tc\x01"})
    assert "\n" not in text and "\t" not in text and "\x01" not in text
    assert json.loads(text) == {"k": "a\nb\tc\x01"}


# typed: mypy infers tuple[str] for a bare ("Cs",) through hypothesis' decorators
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_TEXT = st.text(
    alphabet=st.characters(exclude_categories=_SURROGATES),
    max_size=20,
)
_KEYS = st.one_of(
    _TEXT,
    st.sampled_from(
        [
            "secretProviderClass",
            "providerName",
            "csi.storage.k8s.io/pod.name",
            "csi.storage.k8s.io/ephemeral",
            "objects",
            "<&>",
        ]
    ),
).filter(lambda k: k != TOKENS)


def _stripped(key: str) -> bool:
    return key.startswith(protocol.KUBELET_PREFIX) or key in protocol.DRIVER_KEYS


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_KEYS, _TEXT, max_size=8))
def test_attributes_json_round_trips_through_decode(attributes: dict[str, str]) -> None:
    text = protocol.attributes_json(attributes)
    assert json.loads(text) == attributes
    assert "<" not in text and ">" not in text and "&" not in text
    mount = protocol.decode(pb.MountRequest(attributes=text, secrets="null", permission="420"))
    assert dict(mount.parameters) == {k: v for k, v in attributes.items() if not _stripped(k)}
    assert mount.secret_provider_class == attributes.get("secretProviderClass", "")
    assert mount.pod.name == attributes.get("csi.storage.k8s.io/pod.name", "")


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_TEXT, _TEXT, max_size=8))
def test_attributes_json_keys_come_out_sorted(attributes: dict[str, str]) -> None:
    decoded = json.loads(protocol.attributes_json(attributes))
    assert list(decoded) == sorted(attributes)


# --- wire bytes -----------------------------------------------------------------------------


def test_parse_reads_the_wire_bytes_of_a_request() -> None:
    raw = request(permission="256").SerializeToString()
    assert protocol.decode(protocol.parse(raw)).default_mode == 0o400


@pytest.mark.parametrize("raw", [b"\xff", b"\x0a\x05ab", b"\x22\x02\xff\xfe", b"\x0b"])
def test_bytes_that_are_not_a_mount_request_are_invalid_argument(raw: bytes) -> None:
    with pytest.raises(InvalidArgument, match="MountRequest could not be decoded"):
        protocol.parse(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_are_invalid_argument(raw: bytes) -> None:
    try:
        parsed = protocol.parse(raw)
    except InvalidArgument as exc:
        assert "MountRequest could not be decoded" in exc.message
    else:
        assert isinstance(parsed, pb.MountRequest)


def test_deeply_nested_tokens_attribute_is_invalid_argument() -> None:
    # The tokens key can come from the pod's volumeAttributes (docs/protocol.md §2.2).
    request = driver_request({"objects": "- {backend: local, name: plain.txt, path: plain.txt}"})
    attributes = json.loads(request.attributes)
    attributes[protocol.TOKENS_KEY] = "[" * 100_000 + "]" * 100_000
    request.attributes = json.dumps(attributes)
    with pytest.raises(KeyferryError) as info:
        protocol.decode(request)
    assert info.value.code is Code.INVALID_ARGUMENT
