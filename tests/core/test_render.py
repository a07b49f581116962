"""provider.render: key extraction, decoding and turning a fetched object into files."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider import render
from provider.errors import Code, InvalidArgument
from provider.model import Extraction, Fetched, ObjectSpec, Output

CANARY = "CANARY-5be1-secret-value"
WHERE = "objects[4] (local: db.json) -> db/user"

DOC = {
    "user": {"name": "alice", "id": 7, "roles": ["a", "b"], "nothing": None},
    "password": "s3cret",
    "my-key": "hyphen",
    "count": 3,
    "flag": True,
}


def jm(expression: str) -> Extraction:
    return Extraction(kind="jmespath", expression=expression)


def jk(key: str) -> Extraction:
    return Extraction(kind="json_key", expression=key)


def yk(key: str) -> Extraction:
    return Extraction(kind="yaml_key", expression=key)


# --- extract: success ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extraction", "value"),
    [
        (jm("password"), b"s3cret"),
        (jm("user.name"), b"alice"),
        (jm('"my-key"'), b"hyphen"),
        (jm("user.roles[1]"), b"b"),
        (jk("password"), b"s3cret"),
        (jk("my-key"), b"hyphen"),
    ],
)
def test_extract_string_from_json(extraction: Extraction, value: bytes) -> None:
    assert render.extract(json.dumps(DOC).encode(), extraction, WHERE) == value


def test_extract_yaml_key() -> None:
    content = b"host: db.example\nport: 5432\npassword: 'p@ss'\n"
    assert render.extract(content, yk("host"), WHERE) == b"db.example"
    assert render.extract(content, yk("password"), WHERE) == b"p@ss"


# The official GCP provider reads extracted YAML with yaml.v3 (YAML 1.2 core schema, into
# map[string]any): what it writes, byte for byte, or that it rejects the value.
@pytest.mark.parametrize(
    ("scalar", "written"),
    [
        ("yes", b"yes"),
        ("on", b"on"),
        ("No", b"No"),
        ("off", b"off"),
        ("Y", b"Y"),
        ("12:30", b"12:30"),  # YAML 1.1 sexagesimal 750
        ("=", b"="),  # YAML 1.1 value key
        ("2001-12-14", b"2001-12-14"),  # timestamps stay text (yaml.v3 into any)
        ("2001-12-14T21:59:43.10-05:00", b"2001-12-14T21:59:43.10-05:00"),
        ("!!timestamp 2001-12-14", b"2001-12-14"),
        ("<<", b"<<"),
        ("tRue", b"tRue"),
        ("NaN", b"NaN"),
        ("0x", b"0x"),
        ("0xFFFFFFFFFFFFFFFFFF", b"0xFFFFFFFFFFFFFFFFFF"),  # beyond 64 bits: not a number
        ("1e400", b"1e400"),  # out of float range: not a number
        ("9" * 5000, b"9" * 5000),
        ("'0777'", b"0777"),
        ("!!str true", b"true"),
        ("yes # a comment", b"yes"),
    ],
)
def test_yaml_key_reads_yaml_12_like_the_official_provider(scalar: str, written: bytes) -> None:
    assert render.extract(f"k: {scalar}\n".encode(), yk("k"), WHERE) == written


@pytest.mark.parametrize(
    ("scalar", "kind"),
    [
        ("true", "bool"),
        ("False", "bool"),
        ("TRUE", "bool"),
        ("123", "int"),
        ("+12", "int"),
        ("0777", "int"),
        ("0o17", "int"),
        ("0x1F", "int"),
        ("-0x1F", "int"),
        ("0b101", "int"),
        ("1_000", "int"),
        ("1.5", "float"),
        ("1e3", "float"),
        ("-.5", "float"),
        (".inf", "float"),
        ("-.Inf", "float"),
        (".nan", "float"),
        ("99999999999999999999", "float"),
    ],
)
def test_yaml_key_rejects_what_the_official_provider_rejects(scalar: str, kind: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        render.extract(f"k: {scalar}\n".encode(), yk("k"), WHERE)
    assert f"selects a {kind}, not a string" in err.value.message
    assert scalar not in err.value.message.replace(WHERE, "")


@pytest.mark.parametrize("scalar", ["null", "~", "Null", ""])
def test_yaml_key_with_a_null_value_matches_nothing(scalar: str) -> None:
    with pytest.raises(InvalidArgument, match="matched nothing"):
        render.extract(f"k: {scalar}\n".encode(), yk("k"), WHERE)


def test_yaml_keys_that_yaml_11_read_as_booleans_are_found() -> None:
    content = b"yes: agreed\non: switched\nno: refused\n"
    assert render.extract(content, yk("yes"), WHERE) == b"agreed"
    assert render.extract(content, yk("on"), WHERE) == b"switched"
    assert render.extract(content, yk("no"), WHERE) == b"refused"


def test_yaml_document_with_a_duplicate_key_is_rejected_like_upstream() -> None:
    content = ("password: " + CANARY + "\npassword: other\n").encode()
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, yk("password"), WHERE)
    assert "not a valid YAML document" in err.value.message
    assert CANARY not in err.value.message and "other" not in err.value.message


def test_yaml_aliases_and_merge_keys_still_work() -> None:
    content = b"base: &b {user: admin}\nsecret: &s hunter2\ncopy: *s\nmerged:\n  <<: *b\n"
    assert render.extract(content, yk("copy"), WHERE) == b"hunter2"


def test_yaml_lone_surrogate_escape_is_rejected_like_upstream() -> None:
    with pytest.raises(InvalidArgument) as err:
        render.extract(b'k: "a\\ud800b"\n', yk("k"), WHERE)
    assert "not valid Unicode" in err.value.message


# Go's encoding/json writes U+FFFD for a lone UTF-16 surrogate escape.
@pytest.mark.parametrize(
    ("escaped", "written"),
    [
        ("a\\ud800b", b"a\xef\xbf\xbdb"),
        ("\\udc00", b"\xef\xbf\xbd"),
        ("\\ud800\\ud800", b"\xef\xbf\xbd\xef\xbf\xbd"),
        ("\\ud800\\u0041", b"\xef\xbf\xbdA"),
        ("\\ud83d\\ude00", b"\xf0\x9f\x98\x80"),  # a valid pair stays one character
    ],
)
@pytest.mark.parametrize("extraction", [jk("k"), jm("k"), jm("join('', [k])")])
def test_lone_surrogate_escapes_in_json_are_written_as_fffd(
    extraction: Extraction, escaped: str, written: bytes
) -> None:
    content = ('{"k": "' + escaped + '"}').encode()
    assert render.extract(content, extraction, WHERE) == written


def test_extract_keeps_unicode_as_utf8() -> None:
    content = json.dumps({"k": "pässwörd ✓"}).encode()
    assert render.extract(content, jk("k"), WHERE) == "pässwörd ✓".encode()


def test_json_key_is_a_literal_key_not_an_expression() -> None:
    content = json.dumps({"a.b": "dotted", "a": {"b": "nested"}}).encode()
    assert render.extract(content, jk("a.b"), WHERE) == b"dotted"
    assert render.extract(content, jm("a.b"), WHERE) == b"nested"


# --- extract: failures never echo the document ---------------------------------------------

SECRET_DOC = {
    "user": {"name": CANARY, "id": 7, "roles": [CANARY], "nothing": None},
    "password": CANARY,
    "count": 3,
    "flag": True,
}


@pytest.mark.parametrize(
    ("extraction", "expected"),
    [
        (jm("user"), "dict"),
        (jm("user.roles"), "list"),
        (jm("count"), "int"),
        (jm("flag"), "bool"),
        (jm("user.nothing"), "matched nothing"),
        (jm("missing"), "matched nothing"),
        (jm("user.roles[5]"), "matched nothing"),
        (jk("user"), "dict"),
        (jk("count"), "int"),
        (jk("missing"), "not found"),
    ],
)
def test_non_string_or_missing_selection_is_invalid_argument(
    extraction: Extraction, expected: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        render.extract(json.dumps(SECRET_DOC).encode(), extraction, WHERE)
    message = err.value.message
    assert expected in message
    assert message.startswith(WHERE)
    assert repr(extraction.expression) in message
    assert CANARY not in message
    assert err.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("extraction", [jm("password"), jk("password")])
@pytest.mark.parametrize(
    "content",
    [
        b'{"password": "' + CANARY.encode(),
        b'{"password": ' + CANARY.encode() + b"}",
        CANARY.encode(),
        b"password=" + CANARY.encode(),
        b"",
    ],
)
def test_non_json_document_is_invalid_argument_without_content(
    extraction: Extraction, content: bytes
) -> None:
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, extraction, WHERE)
    assert "not valid JSON" in err.value.message
    assert WHERE in err.value.message
    assert CANARY not in err.value.message


@pytest.mark.parametrize("extraction", [jm("password"), jk("password"), yk("password")])
def test_non_utf8_document_is_invalid_argument_without_content(extraction: Extraction) -> None:
    content = b'{"password": "' + CANARY.encode() + b'\xff\xfe"}'
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, extraction, WHERE)
    assert "not UTF-8" in err.value.message
    assert WHERE in err.value.message
    assert CANARY not in err.value.message


@pytest.mark.parametrize("extraction", [jk("password"), yk("password")])
@pytest.mark.parametrize(
    "document",
    [[CANARY, CANARY], CANARY, 12345],
)
def test_key_extraction_needs_a_mapping(extraction: Extraction, document: Any) -> None:
    content = json.dumps(document).encode()
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, extraction, WHERE)
    assert "not a mapping" in err.value.message
    assert "'password'" in err.value.message
    assert CANARY not in err.value.message


@pytest.mark.parametrize("extraction", [jm("a"), jk("a"), yk("a")])
def test_absurdly_nested_document_is_invalid_argument(extraction: Extraction) -> None:
    content = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, extraction, WHERE)
    assert WHERE in err.value.message


def test_invalid_yaml_document_is_invalid_argument_without_content() -> None:
    content = ("password: " + CANARY + "\n  bad: [unclosed\n").encode()
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, yk("password"), WHERE)
    assert "not a valid YAML document" in err.value.message
    assert CANARY not in err.value.message


@pytest.mark.parametrize("tagged", ["!!bool 0b", "!!int ''", "!!map [1]"])
def test_a_yaml_value_its_explicit_tag_cannot_take_is_invalid_argument(tagged: str) -> None:
    content = f"password: {CANARY}\nother: {tagged}\n".encode()
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, yk("password"), WHERE)
    assert "not a valid YAML document" in err.value.message
    assert CANARY not in err.value.message


def test_yaml_key_selecting_a_list_is_rejected_without_content() -> None:
    content = ("password:\n  - " + CANARY + "\n").encode()
    with pytest.raises(InvalidArgument) as err:
        render.extract(content, yk("password"), WHERE)
    assert "list" in err.value.message
    assert CANARY not in err.value.message


def test_invalid_jmespath_at_render_time_names_the_expression() -> None:
    with pytest.raises(InvalidArgument) as err:
        render.extract(b"{}", jm("a["), WHERE)
    assert "'a['" in err.value.message
    assert WHERE in err.value.message


@pytest.mark.parametrize(
    "expression",
    [
        "abs(password)",
        "length(count)",
        "keys(password)",
        "avg(user.roles)",
        "max(user)",
        "nosuchfn(password)",
        "length(password, count)",
    ],
)
def test_jmespath_runtime_error_is_invalid_argument_without_content(expression: str) -> None:
    # jmespath reports wrong argument types, unknown functions and wrong arity only when the
    # expression runs (JMESPathTypeError's text embeds the offending value). Each must become
    # an InvalidArgument naming the expression, not an unexpected error carrying the secret.
    with pytest.raises(InvalidArgument) as err:
        render.extract(json.dumps(SECRET_DOC).encode(), jm(expression), WHERE)
    assert repr(expression) in err.value.message
    assert WHERE in err.value.message
    assert CANARY not in err.value.message


_LEAF = st.one_of(
    st.just(CANARY),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_JSON = st.recursive(
    _LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "password"]), children, max_size=3),
    ),
    max_leaves=10,
)
_EXPRESSIONS = st.one_of(
    st.sampled_from(["a", "b", "a.b", "password", "a[0]", "[0]", "*", "a.*", "length(@)"]).map(jm),
    st.sampled_from(["a", "b", "password", "zzz"]).map(jk),
    st.sampled_from(["a", "b", "password", "zzz"]).map(yk),
)


@settings(max_examples=300, deadline=None)
@given(_JSON, _EXPRESSIONS, st.booleans())
def test_extraction_result_or_error_never_leaks_the_document(
    document: Any, extraction: Extraction, truncate: bool
) -> None:
    content = json.dumps(document).encode()
    if truncate:
        content = content[: max(0, len(content) - 1)]
    try:
        value = render.extract(content, extraction, WHERE)
    except InvalidArgument as exc:
        assert CANARY not in exc.message
        assert WHERE in exc.message
    else:
        assert isinstance(value, bytes)


# --- decode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "decoding", "expected"),
    [
        (b"hello", None, b"hello"),
        (b"hello", "utf-8", b"hello"),
        (b"\xff\x00", None, b"\xff\x00"),
        (b"aGVsbG8=", "base64", b"hello"),
        (b"  aGVsbG8=\n", "base64", b"hello"),
        (b"", "base64", b""),
        (b"68656c6c6f", "hex", b"hello"),
        (b"68656C6C6F\n", "hex", b"hello"),
        (b"00ff", "hex", b"\x00\xff"),
    ],
)
def test_decode(content: bytes, decoding: str | None, expected: bytes) -> None:
    assert render.decode(content, decoding, WHERE) == expected


@pytest.mark.parametrize(
    ("content", "decoding"),
    [
        (b"not base64!", "base64"),
        (b"aGVsbG8", "base64"),  # missing padding
        (b"a", "base64"),
        (b"68656c6c6", "hex"),  # odd length
        (b"zz", "hex"),
        (CANARY.encode(), "hex"),
        (CANARY.encode(), "base64"),
    ],
)
def test_invalid_encoded_input_is_invalid_argument_without_content(
    content: bytes, decoding: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        render.decode(content, decoding, WHERE)
    assert f"not valid {decoding}" in err.value.message
    assert WHERE in err.value.message
    assert CANARY not in err.value.message


def test_unknown_decoding_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="unknown decoding"):
        render.decode(b"x", "rot13", WHERE)


def test_line_wrapped_base64_is_decoded() -> None:
    # `base64 file` wraps at 76 columns, and Go's base64 decoder (used by the official
    # providers) ignores '\r' and '\n'; a wrapped value must decode, not fail the mount.
    payload = bytes(range(256))
    wrapped = base64.encodebytes(payload)  # newline every 76 characters
    assert b"\n" in wrapped.strip()
    assert render.decode(wrapped, "base64", WHERE) == payload


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_base64_and_hex_round_trip(payload: bytes) -> None:
    assert render.decode(base64.b64encode(payload), "base64", WHERE) == payload
    assert render.decode(payload.hex().encode(), "hex", WHERE) == payload


# --- render --------------------------------------------------------------------------------


def spec(*outputs: Output, label: str = "objects[0] (local: db.json)") -> ObjectSpec:
    return ObjectSpec(label=label, backend="local", ref="db.json", outputs=outputs, ids=("db",))


def test_render_whole_file_with_default_mode() -> None:
    (f,) = render.render(spec(Output(path="db.json")), Fetched(content=b"{}"), 0o644)
    assert (f.path, f.mode, f.contents, f.source) == (
        "db.json",
        0o644,
        b"{}",
        "objects[0] (local: db.json)",
    )


def test_render_explicit_mode_wins_including_zero() -> None:
    files = render.render(
        spec(Output(path="a", mode=0o400), Output(path="b", mode=0)), Fetched(b"x"), 0o644
    )
    assert [f.mode for f in files] == [0o400, 0]


def test_render_extracts_then_decodes_each_output() -> None:
    content = json.dumps(
        {"user": "alice", "b64": base64.b64encode(b"\x00bin").decode(), "hex": "ff00"}
    ).encode()
    files = render.render(
        spec(
            Output(path="db.json"),
            Output(path="user", extract=jm("user")),
            Output(path="bin", extract=jk("b64"), decode="base64"),
            Output(path="hex", extract=jk("hex"), decode="hex", mode=0o600),
        ),
        Fetched(content=content),
        0o640,
    )
    assert [(f.path, f.mode, f.contents) for f in files] == [
        ("db.json", 0o640, content),
        ("user", 0o640, b"alice"),
        ("bin", 0o640, b"\x00bin"),
        ("hex", 0o600, b"\xff\x00"),
    ]
    assert {f.source for f in files} == {"objects[0] (local: db.json)"}


def test_render_error_names_the_object_and_the_output_path() -> None:
    content = json.dumps({"password": CANARY}).encode()
    with pytest.raises(InvalidArgument) as err:
        render.render(spec(Output(path="db/pw", extract=jk("nope"))), Fetched(content), 0o644)
    assert "objects[0] (local: db.json) -> db/pw" in err.value.message
    assert "'nope'" in err.value.message
    assert CANARY not in err.value.message


def test_render_applies_transform_before_extraction() -> None:
    seen: list[tuple[bytes, str, str]] = []

    def transform(fetched: Fetched, output: Output, where: str) -> bytes:
        seen.append((fetched.content, output.path, where))
        return json.dumps({"k": fetched.content.decode().upper()}).encode()

    (f,) = render.render(
        spec(Output(path="out", extract=jk("k"), transform=transform)), Fetched(b"abc"), 0o644
    )
    assert f.contents == b"ABC"
    assert seen == [(b"abc", "out", "objects[0] (local: db.json) -> out")]


def test_compile_jmespath_caches_and_rejects() -> None:
    assert render.compile_jmespath("a.b", "w") is render.compile_jmespath("a.b", "w")
    with pytest.raises(InvalidArgument, match=r"w: jmesPath 'a\.\.b'"):
        render.compile_jmespath("a..b", "w")
