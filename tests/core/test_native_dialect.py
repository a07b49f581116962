"""The native dialect (provider.native with the local hook) and make_plan."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from provider import native
from provider.clouds.local.ref import LocalRef
from provider.errors import Code, InvalidArgument, KeyferryError, MountFailed
from provider.model import Extraction, Mount, Plan, Pod
from provider.pipeline import make_plan


def mount(objects: str | None = None, **extra: str) -> Mount:
    parameters = dict(extra)
    if objects is not None:
        parameters["objects"] = objects
    return Mount(pod=Pod(namespace="ns", name="p"), parameters=parameters)


def parse(objects: str | None = None, **extra: str) -> Plan:
    return native.parse(mount(objects, **extra))


def error(objects: str | None = None, **extra: str) -> KeyferryError:
    with pytest.raises(KeyferryError) as err:
        parse(objects, **extra)
    return err.value


# --- valid ---------------------------------------------------------------------------------


def test_local_object_with_path() -> None:
    plan = parse("- backend: local\n  name: db/credentials.json\n  path: creds.json\n")
    assert plan.dialect == "native"
    (spec,) = plan.objects
    assert spec.backend == "local"
    assert spec.ref == LocalRef(path="db/credentials.json")
    assert [o.path for o in spec.outputs] == ["creds.json"]
    assert spec.outputs[0].mode is None
    assert spec.outputs[0].decode is None
    assert spec.ids == ("creds.json",)
    assert spec.optional is False
    assert "objects[0]" in spec.label and "db/credentials.json" in spec.label


def test_default_path_comes_from_the_name() -> None:
    (spec,) = parse("- backend: local\n  name: db/password\n").objects
    assert spec.outputs[0].path == "db/password"
    assert spec.ids == ("db/password",)


def test_local_name_is_cleaned() -> None:
    (spec,) = parse("- backend: local\n  name: ' a//./b '\n").objects
    assert spec.ref == LocalRef(path="a/b")
    assert spec.outputs[0].path == "a/b"


@pytest.mark.parametrize(
    ("written", "mode"),
    [
        ('"0640"', 0o640),
        ("0640", 0o640),  # YAML 1.1 reads 0640 as octal
        ('"640"', 0o640),
        ("'0o640'", 0o640),
        ("0o640", 0o640),
        ('"0400"', 0o400),
        ("0", 0),
        ('"0777"', 0o777),
        ("0777", 0o777),
        ("640", 0o640),  # unquoted numbers are octal, like chmod
        ("400", 0o400),
    ],
)
def test_mode_forms(written: str, mode: int) -> None:
    (spec,) = parse(f"- backend: local\n  name: a\n  mode: {written}\n").objects
    assert spec.outputs[0].mode == mode


@pytest.mark.parametrize(
    ("written", "decoding"),
    [
        ("base64", "base64"),
        ("hex", "hex"),
        ("utf-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("Base64", "base64"),
    ],
)
def test_decode(written: str, decoding: str) -> None:
    (spec,) = parse(f"- backend: local\n  name: a\n  decode: {written}\n").objects
    assert spec.outputs[0].decode == decoding


@pytest.mark.parametrize(
    ("written", "value"),
    [("true", True), ('"true"', True), ("false", False), ('"1"', True), ('"F"', False)],
)
def test_optional(written: str, value: bool) -> None:
    (spec,) = parse(f"- backend: local\n  name: a\n  optional: {written}\n").objects
    assert spec.optional is value


def test_explicit_id() -> None:
    (spec,) = parse("- backend: local\n  name: a\n  id: db-credentials\n").objects
    assert spec.ids == ("db-credentials",)


def test_extract_outputs_with_each_kind_and_inherited_mode() -> None:
    text = """
- backend: local
  name: db/credentials.json
  path: db/credentials.json
  mode: "0600"
  extract:
    - path: db/username
      jmesPath: user.name
    - path: db/password
      jsonKey: password
      mode: "0400"
      decode: base64
    - path: db/host
      yamlKey: host
"""
    (spec,) = parse(text).objects
    assert [o.path for o in spec.outputs] == [
        "db/credentials.json",
        "db/username",
        "db/password",
        "db/host",
    ]
    assert [o.mode for o in spec.outputs] == [0o600, 0o600, 0o400, 0o600]
    assert spec.outputs[1].extract == Extraction(kind="jmespath", expression="user.name")
    assert spec.outputs[2].extract == Extraction(kind="json_key", expression="password")
    assert spec.outputs[2].decode == "base64"
    assert spec.outputs[3].extract == Extraction(kind="yaml_key", expression="host")
    assert spec.ids == ("db/credentials.json",)


def test_extract_only_object_writes_no_whole_file_and_takes_first_extract_path_as_id() -> None:
    text = "- backend: local\n  name: c.json\n  extract:\n    - path: u\n      jsonKey: user\n"
    (spec,) = parse(text).objects
    assert [o.path for o in spec.outputs] == ["u"]
    assert spec.ids == ("u",)


def test_one_spec_per_object_in_order() -> None:
    text = "- backend: local\n  name: a\n- backend: local\n  name: b\n- backend: local\n  name: c\n"
    plan = parse(text)
    assert [s.outputs[0].path for s in plan.objects] == ["a", "b", "c"]
    assert [s.label.split(" ")[0] for s in plan.objects] == [
        "objects[0]",
        "objects[1]",
        "objects[2]",
    ]


def test_flow_style_yaml_list_is_accepted() -> None:
    plan = parse('[{backend: local, name: a}, {backend: local, name: b, path: "x/y"}]')
    assert [s.outputs[0].path for s in plan.objects] == ["a", "x/y"]


# --- parameter-level errors ------------------------------------------------------------------


def test_missing_objects_parameter() -> None:
    err = error(None)
    assert isinstance(err, InvalidArgument)
    assert "'objects'" in err.message and "missing" in err.message


@pytest.mark.parametrize("text", ["[]", "", "   ", "~", "null"])
def test_empty_object_list_is_rejected_saying_why(text: str) -> None:
    err = error(text)
    assert isinstance(err, InvalidArgument)
    assert "'objects'" in err.message
    assert "missing object versions" in err.message


@pytest.mark.parametrize("text", ["backend: local\nname: a\n", "just text", "5", "{a: b}"])
def test_objects_not_a_list(text: str) -> None:
    err = error(text)
    assert isinstance(err, InvalidArgument)
    assert "must be a YAML list" in err.message


def test_bad_yaml_reports_line_and_column() -> None:
    err = error("- backend: local\n  name: [a\n")
    assert isinstance(err, InvalidArgument)
    assert "not valid YAML" in err.message
    assert "line 3" in err.message and "column" in err.message


def test_bad_yaml_indentation_reports_position() -> None:
    err = error("- backend: local\n   name: a\n  path: b\n")
    assert "line 2, column 8" in err.message


def test_unknown_top_level_parameter_is_rejected_with_suggestion() -> None:
    err = error("- backend: local\n  name: a\n", object="x")
    assert isinstance(err, InvalidArgument)
    assert "unknown key 'object'" in err.message
    assert "did you mean 'objects'" in err.message


# --- object-level errors ---------------------------------------------------------------------


def only_error(text: str) -> str:
    err = error(text)
    assert isinstance(err, MountFailed)
    assert len(err.errors) == 1
    assert err.code is Code.INVALID_ARGUMENT
    return err.message


def test_unknown_object_key_suggests_the_closest() -> None:
    message = only_error("- backend: local\n  name: a\n  pth: x\n")
    assert "objects[0]" in message
    assert "unknown key 'pth'" in message
    assert "did you mean 'path'" in message


def test_unknown_backend_suggests_the_closest() -> None:
    message = only_error("- backend: lcoal\n  name: a\n")
    assert "unknown backend 'lcoal'" in message
    assert "did you mean 'local'" in message


def test_missing_backend() -> None:
    assert "'backend' is required" in only_error("- name: a\n")


def test_item_that_is_not_a_mapping() -> None:
    assert "must be a mapping" in only_error("- just-a-string\n")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("path", "[a, b]", "'path' must be a string"),
        ("path", "{a: b}", "'path' must be a string"),
        ("path", "true", "'path' must be a string"),
        ("id", "[x]", "'id' must be a string"),
        ("name", "[x]", "'name' must be a string"),
        ("backend", "[local]", "'backend' must be a string"),
        ("mode", "[1]", "file mode"),
        ("mode", "true", "not a boolean"),
        ("mode", "rw-r--r--", "not an octal file mode"),
        ("mode", '"0x1ff"', "not an octal file mode"),
        ("mode", '"-1"', "not an octal file mode"),
        ("mode", "1.5", "file mode"),
        ("optional", "maybe", "not a boolean"),
        ("decode", "base32", "not supported"),
        ("extract", "u", "'extract' must be a non-empty list"),
        ("extract", "[]", "'extract' must be a non-empty list"),
    ],
)
def test_wrong_types_are_rejected(field: str, value: str, expected: str) -> None:
    base = {"backend": "local", "name": "a"}
    lines = [f"  {k}: {v}" for k, v in base.items() if k != field]
    text = "-" + "\n".join(lines)[1:] + f"\n  {field}: {value}\n"
    message = only_error(text)
    assert expected in message
    assert "objects[0]" in message


def test_decode_suggests_the_closest() -> None:
    assert "did you mean 'base64'" in only_error("- backend: local\n  name: a\n  decode: bas64\n")


@pytest.mark.parametrize("written", ["0o4755", '"04755"', '"4755"', '"1000"', '"01777"', "01000"])
def test_mode_with_special_bits_is_rejected(written: str) -> None:
    message = only_error(f"- backend: local\n  name: a\n  mode: {written}\n")
    assert "setuid" in message
    assert "mode" in message


def test_yaml_octal_4755_hint_does_not_suggest_another_special_mode() -> None:
    # `mode: 04755` reaches the parser as the integer 2541; the message must not tell the
    # user to "write 02541" (still outside 0..0777, and not what they wrote).
    message = only_error("- backend: local\n  name: a\n  mode: 04755\n")
    assert "setuid" in message
    assert "02541" not in message


@pytest.mark.parametrize("written", ["384", "420", "9"])
def test_modes_are_octal_like_chmod_and_non_octal_digits_are_rejected(written: str) -> None:
    if set(written) <= set("01234567"):
        (spec,) = parse(f"- backend: local\n  name: a\n  mode: {written}\n").objects
        assert spec.outputs[0].mode == int(written, 8)
    else:
        message = only_error(f"- backend: local\n  name: a\n  mode: {written}\n")
        assert "not an octal file mode" in message


def test_jmespath_and_jsonkey_together_are_rejected() -> None:
    text = (
        "- backend: local\n  name: a\n  extract:\n"
        "    - path: u\n      jmesPath: a\n      jsonKey: a\n"
    )
    message = only_error(text)
    assert "exactly one of" in message
    assert "extract[0]" in message


def test_extract_without_expression_is_rejected() -> None:
    message = only_error("- backend: local\n  name: a\n  extract:\n    - path: u\n")
    assert "exactly one of" in message


@pytest.mark.parametrize("expression", ["'a['", "'my-key'", "'foo.'", "'[?'"])
def test_invalid_jmespath_is_rejected_before_any_fetch(expression: str) -> None:
    text = f"- backend: local\n  name: a\n  extract:\n    - path: u\n      jmesPath: {expression}\n"
    message = only_error(text)
    assert "jmesPath" in message
    assert "not a valid expression" in message
    assert "extract[0]" in message


@pytest.mark.parametrize("expression", ["'nosuchfn(@)'", "'length(a, b)'", "'length()'"])
def test_jmespath_unknown_function_or_wrong_arity_is_rejected_before_any_fetch(
    expression: str,
) -> None:
    # jmespath.compile accepts these; they fail only when run, i.e. after the fetch.
    text = f"- backend: local\n  name: a\n  extract:\n    - path: u\n      jmesPath: {expression}\n"
    message = only_error(text)
    assert "jmesPath" in message
    assert "extract[0]" in message


def test_hyphenated_jmespath_gets_a_quoting_hint() -> None:
    text = "- backend: local\n  name: a\n  extract:\n    - path: u\n      jmesPath: my-key\n"
    assert "quote keys with hyphens" in only_error(text)


def test_unknown_extract_key_suggests_the_closest() -> None:
    text = "- backend: local\n  name: a\n  extract:\n    - path: u\n      jsonkey: a\n"
    assert "did you mean 'jsonKey'" in only_error(text)


@pytest.mark.parametrize("path", ["../x", "/abs", ".", "a/../b", "..data", "a//b", "./a"])
def test_bad_output_paths_are_rejected(path: str) -> None:
    message = only_error(f"- backend: local\n  name: a\n  path: '{path}'\n")
    assert "objects[0]" in message
    assert "path" in message


@pytest.mark.parametrize("path", ["../x", "/abs", "."])
def test_bad_extract_paths_are_rejected(path: str) -> None:
    text = f"- backend: local\n  name: a\n  extract:\n    - path: '{path}'\n      jsonKey: k\n"
    assert "extract[0]" in only_error(text)


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/etc/passwd", "a/../../b", "..", "a/..", ".", "./", "//"]
)
def test_local_names_cannot_escape_the_root(name: str) -> None:
    message = only_error(f"- backend: local\n  name: '{name}'\n")
    assert "local name" in message
    assert "objects[0]" in message


def test_local_name_with_nul_is_rejected() -> None:
    assert "local name" in only_error('- backend: local\n  name: "a\\0b"\n')


def test_path_given_twice_in_one_object_is_rejected() -> None:
    # Silently keeping the last of two 'path' keys hides a mistake (the gcp dialect rejects
    # duplicate keys; check_keys has a "given twice" error for exactly this).
    err = error("- backend: local\n  name: a\n  path: first\n  path: second\n")
    assert "twice" in err.message or "duplicate" in err.message


def test_several_bad_objects_are_reported_together() -> None:
    text = """
- backend: local
  name: good
- backend: lcoal
  name: a
- backend: local
  name: b
  pth: x
- backend: local
  name: c
  mode: "0o4755"
- backend: local
  name: ../escape
"""
    err = error(text)
    assert isinstance(err, MountFailed)
    assert len(err.errors) == 4
    for index in ("objects[1]", "objects[2]", "objects[3]", "objects[4]"):
        assert index in err.message
    assert "objects[0]" not in err.message
    assert err.message.startswith("invalid 'objects' parameter")
    assert err.code is Code.INVALID_ARGUMENT


def test_one_error_lists_per_object_and_cross_object_problems() -> None:
    text = (
        "- {backend: local, name: a, pth: x}\n"  # unknown key
        "- {backend: local, name: b, path: ../up}\n"  # traversal
        "- {backend: local, name: c, path: same}\n"
        "- {backend: local, name: d, path: same}\n"  # duplicate output path
        "- {backend: local, name: e, path: dir}\n"
        "- {backend: local, name: f, path: dir/file}\n"  # file where a directory is needed
    )
    for run in (parse, lambda t: make_plan(mount(t))):
        with pytest.raises(MountFailed) as err:
            run(text)
        message = err.value.message
        assert err.value.code is Code.INVALID_ARGUMENT
        assert "objects[0]: unknown key 'pth'" in message
        assert "objects[1] (local: b) path: output path '../up' contains a '..'" in message
        assert "output path 'same' is also written by objects[2] (local: c)" in message
        assert "needs a directory 'dir', but objects[4] (local: e) writes a file" in message
        assert len(err.value.errors) == 4


# --- make_plan -----------------------------------------------------------------------------


def test_make_plan_checks_duplicate_paths_across_objects() -> None:
    m = mount(
        "- backend: local\n  name: a\n  path: out\n- backend: local\n  name: b\n  path: out\n"
    )
    with pytest.raises(MountFailed) as err:
        make_plan(m)
    assert "objects[0]" in err.value.message and "objects[1]" in err.value.message


def test_make_plan_checks_file_directory_clashes_across_objects() -> None:
    m = mount("- backend: local\n  name: a\n- backend: local\n  name: a/b\n")
    with pytest.raises(MountFailed) as err:
        make_plan(m)
    assert "'a'" in err.value.message


def test_make_plan_checks_clashes_between_extract_outputs() -> None:
    text = (
        "- backend: local\n  name: a.json\n  extract:\n"
        "    - path: u\n      jsonKey: x\n    - path: u\n      jsonKey: y\n"
    )
    with pytest.raises(MountFailed):
        make_plan(mount(text))


def test_make_plan_returns_the_plan() -> None:
    plan = make_plan(mount("- backend: local\n  name: a\n"))
    assert len(plan.objects) == 1


# --- property ------------------------------------------------------------------------------

_SEGMENT = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_REL = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)
_MODE = st.integers(min_value=0, max_value=0o777)


@st.composite
def _mode_field(draw: Any) -> tuple[Any, int]:
    mode = draw(_MODE)
    # Numbers are dumped in decimal, which the native dialect would read as octal text
    # (modes are octal, like chmod), so only the textual forms are generated here.
    form = draw(st.sampled_from(["0text", "text", "0otext"]))
    written: Any = {
        "0text": f"0{mode:o}",
        "text": f"{mode:o}",
        "0otext": f"0o{mode:o}",
    }[form]
    return written, mode


@st.composite
def _object(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    obj: dict[str, Any] = {"backend": "local", "name": draw(_REL)}
    expected: dict[str, Any] = {"path": obj["name"], "mode": None, "decode": None}
    if draw(st.booleans()):
        obj["path"] = expected["path"] = draw(_REL)
    if draw(st.booleans()):
        obj["mode"], expected["mode"] = draw(_mode_field())
    if draw(st.booleans()):
        obj["decode"] = expected["decode"] = draw(st.sampled_from(["utf-8", "base64", "hex"]))
    expected["optional"] = False
    if draw(st.booleans()):
        obj["optional"] = expected["optional"] = draw(st.booleans())
    expected["id"] = expected["path"]
    if draw(st.booleans()):
        obj["id"] = expected["id"] = draw(_SEGMENT)
    keys = list(obj)
    order = draw(st.permutations(keys))
    return {k: obj[k] for k in order}, expected


@settings(max_examples=150, deadline=None)
@given(st.lists(_object(), min_size=1, max_size=5), st.booleans())
def test_well_formed_object_lists_always_parse(
    items: list[tuple[dict[str, Any], dict[str, Any]]], flow: bool
) -> None:
    paths = [expected["path"] for _, expected in items]
    # Two objects on one path, or a file where another needs a directory, is an error.
    assume(len(set(paths)) == len(paths))
    assume(not any(q.startswith(p + "/") for p in paths for q in paths))
    text = yaml.safe_dump([obj for obj, _ in items], default_flow_style=flow)
    plan = parse(text)
    assert len(plan.objects) == len(items)
    for spec, (obj, expected) in zip(plan.objects, items, strict=True):
        assert spec.backend == "local"
        assert spec.ref == LocalRef(path=obj["name"])
        assert len(spec.outputs) == 1
        assert spec.outputs[0].path == expected["path"]
        assert spec.outputs[0].mode == expected["mode"]
        assert spec.outputs[0].decode == expected["decode"]
        assert spec.optional is expected["optional"]
        assert spec.ids == (expected["id"],)
