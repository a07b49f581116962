"""The ``gcp`` drop-in dialect and the native hook: parsing and validation only
(no network is reachable from these tests)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider import native
from provider.clouds.gcp import dialect as gcp
from provider.clouds.gcp.ref import ParameterVersionRef, SecretVersionRef, parse_resource_name
from provider.errors import Code, KeyferryError, MountFailed
from provider.model import Mount, Pod
from tests import REPO

POD = Pod("team-a", "web-0", "uid", "web")


def mount(secrets: str, *, secret_data: dict[str, str] | None = None, **params: str) -> Mount:
    return Mount(
        pod=POD,
        parameters={"secrets": secrets, **params},
        secrets=secret_data or {},
        dialect="gcp",
        provider_name="gcp",
    )


def error(m: Mount) -> KeyferryError:
    with pytest.raises(KeyferryError) as info:
        gcp.parse(m)
    return info.value


# -- the official provider's documented examples ---------------------------------------


def test_documented_example_parses_to_files_ids_and_modes() -> None:
    plan = gcp.parse(
        mount(
            """
- resourceName: "projects/$PROJECT_ID/secrets/testsecret/versions/latest"
  path: "good1.txt"
- resourceName: "projects/$PROJECT_ID/secrets/testsecret/versions/latest"
  path: "good2.txt"
""".replace("$PROJECT_ID", "my-project")
        )
    )
    # Same resource twice: fetched once, one ObjectVersion id, two files.
    assert len(plan.objects) == 1
    spec = plan.objects[0]
    assert spec.ids == ("projects/my-project/secrets/testsecret/versions/latest",)
    assert [o.path for o in spec.outputs] == ["good1.txt", "good2.txt"]
    assert spec.ref == SecretVersionRef("my-project", "testsecret", "latest", auth_explicit=False)


def test_filename_mode_and_extract_keys() -> None:
    plan = gcp.parse(
        mount(
            """
- resourceName: projects/p1234/secrets/a/versions/3
  fileName: old-style.txt
  mode: 0400
- resourceName: projects/p1234/secrets/b/versions/latest
  path: nested/dir/b.txt
  mode: 0o640
  extractJSONKey: password
- resourceName: projects/p1234/secrets/c/versions/latest
  path: c.txt
  mode: 420
  extractYAMLKey: user
"""
        )
    )
    a, b, c = (spec.outputs[0] for spec in plan.objects)
    assert (a.path, a.mode, a.extract) == ("old-style.txt", 0o400, None)
    assert (b.path, b.mode) == ("nested/dir/b.txt", 0o640)
    assert b.extract is not None and (b.extract.kind, b.extract.expression) == (
        "json_key",
        "password",
    )
    assert c.mode == 420 and c.extract is not None and c.extract.kind == "yaml_key"


def test_path_wins_over_filename_and_default_mode_is_none() -> None:
    plan = gcp.parse(
        mount("- resourceName: projects/p/secrets/s/versions/1\n  path: p\n  fileName: f\n")
    )
    out = plan.objects[0].outputs[0]
    assert out.path == "p" and out.mode is None


def test_regional_and_parameter_manager_names() -> None:
    plan = gcp.parse(
        mount(
            """
- resourceName: projects/p/locations/us-east1/secrets/s/versions/2
  path: a
- resourceName: projects/p/locations/global/secrets/s/versions/2
  path: b
- resourceName: projects/p/locations/global/parameters/cfg/versions/v1
  path: c
- resourceName: projects/p/locations/europe-west4/parameters/cfg/versions/v1
  path: d
"""
        )
    )
    refs = [spec.ref for spec in plan.objects]
    assert isinstance(refs[0], SecretVersionRef) and refs[0].location == "us-east1"
    # locations/global is the global service (upstream dials a 'global' regional host).
    assert isinstance(refs[1], SecretVersionRef) and refs[1].location == ""
    assert refs[1].name == "projects/p/secrets/s/versions/2"
    assert isinstance(refs[2], ParameterVersionRef) and refs[2].location == ""
    assert refs[2].name == "projects/p/locations/global/parameters/cfg/versions/v1"
    assert isinstance(refs[3], ParameterVersionRef) and refs[3].location == "europe-west4"
    # ids stay the resourceName as written
    assert plan.objects[1].ids == ("projects/p/locations/global/secrets/s/versions/2",)


def test_string_fields_take_source_text() -> None:
    plan = gcp.parse(mount("- resourceName: projects/p/secrets/s/versions/1\n  path: 0123\n"))
    assert plan.objects[0].outputs[0].path == "0123"


# -- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "key_json", "expected"),
    [
        ("", False, ("pod-adc", False, False)),
        ("pod-adc", False, ("pod-adc", False, True)),
        ("provider-adc", False, ("provider-adc", False, True)),
        ("", True, ("node-publish-secret", True, False)),
        ("pod-adc", True, ("pod-adc", True, True)),
    ],
)
def test_auth_choice(auth: str, key_json: bool, expected: tuple[str, bool, bool]) -> None:
    data = {"key.json": '{"type": "service_account"}'} if key_json else {}
    params = {"auth": auth} if auth else {}
    plan = gcp.parse(
        mount(
            "- resourceName: projects/p/secrets/s/versions/1\n  path: a\n",
            secret_data=data,
            **params,
        )
    )
    ref = plan.objects[0].ref
    assert isinstance(ref, SecretVersionRef)
    assert (ref.auth, ref.key_json, ref.auth_explicit) == expected


def test_unknown_auth_is_rejected_with_suggestion() -> None:
    err = error(mount("- resourceName: projects/p/secrets/s/versions/1\n  path: a\n", auth="pod"))
    assert err.code is Code.INVALID_ARGUMENT
    assert "unknown auth configuration 'pod'" in err.message
    assert "pod-adc" in err.message


# -- bad input: clear INVALID_ARGUMENT, every failing entry listed ------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("xprojects/p/secrets/s/versions/1", "must start with 'projects/'"),
        ("garbage/projects/p/secrets/s/versions/1", "must start with 'projects/'"),
        ("projects/p/secrets/s", "names no version"),
        ("projects/p/secrets/s/versions/1/extra", "does not match"),
        ("projects/p//secrets/s/versions/1", "empty path element"),
        (" projects/p/secrets/s/versions/1", "whitespace"),
        ("//secretmanager.googleapis.com/projects/p/secrets/s/versions/1", "not a URL"),
        ("projects/p/locations/" + "a" * 31 + "/secrets/s/versions/1", "longer than 30"),
        ("projects/p/secrets/s/versions/0", "does not match"),
        ("projects/p/secrets/s/versions/-x", "does not match"),
    ],
)
def test_malformed_resource_names(name: str, why: str) -> None:
    err = error(mount(f"- resourceName: '{name}'\n  path: a\n"))
    assert err.code is Code.INVALID_ARGUMENT
    assert why in err.message
    assert "secrets[0]" in err.message


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("01777", "outside 0..0777"),
        ("04755", "outside 0..0777"),
        ("644", "read as decimal"),
        ("-1", "outside"),
        ('"0400"', "quoted"),
        ("rw-r--r--", "not an integer"),
        ("4.5", "not an integer"),
    ],
)
def test_bad_modes(mode: str, why: str) -> None:
    err = error(
        mount(f"- resourceName: projects/p/secrets/s/versions/1\n  path: a\n  mode: {mode}\n")
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert why in err.message


def test_both_extract_keys_is_an_error() -> None:
    err = error(
        mount(
            "- resourceName: projects/p/secrets/s/versions/1\n  path: a\n"
            "  extractJSONKey: a\n  extractYAMLKey: b\n"
        )
    )
    assert "'extractJSONKey' and 'extractYAMLKey' are both set" in err.message


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../b", "..data", ".", "a//b", "a/"])
def test_traversal_and_unclean_paths(path: str) -> None:
    err = error(mount(f"- resourceName: projects/p/secrets/s/versions/1\n  path: '{path}'\n"))
    assert err.code is Code.INVALID_ARGUMENT
    assert "output path" in err.message


def test_missing_path_is_caught_before_fetching() -> None:
    err = error(mount("- resourceName: projects/p/secrets/s/versions/1\n"))
    assert "give 'path'" in err.message


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("objectName", "resourceName"),
        ("filename", "fileName"),
        ("extractJsonKey", "extractJSONKey"),
        ("objectAlias", "path"),
    ],
)
def test_unknown_keys_name_the_right_one(key: str, hint: str) -> None:
    err = error(mount(f"- resourceName: projects/p/secrets/s/versions/1\n  path: a\n  {key}: x\n"))
    assert f"unknown key '{key}'" in err.message and hint in err.message


def test_unknown_top_level_parameter() -> None:
    err = error(mount("- resourceName: projects/p/secrets/s/versions/1\n  path: a\n", objects="x"))
    assert "unknown key 'objects'" in err.message


def test_every_failing_entry_is_listed_once() -> None:
    err = error(
        mount(
            """
- resourceName: nope
  path: a
- resourceName: projects/p/secrets/s/versions/1
  path: ../b
- resourceName: projects/p/secrets/s/versions/1
  path: c
  mode: 0777
- resourceName: projects/p/secrets/s/versions/2
  path: d
  extractJSONKey: x
  extractYAMLKey: y
""",
            auth="bogus",
        )
    )
    assert err.code is Code.INVALID_ARGUMENT
    for part in ("'auth'", "secrets[0]", "secrets[1]", "secrets[3]"):
        assert part in err.message
    assert "secrets[2]" not in err.message
    assert err.message.count("[") >= 4


def test_one_error_lists_per_entry_and_cross_entry_problems() -> None:
    err = error(
        mount(
            """
- resourceName: projects/p/secrets/a/versions/1
  path: a
  pth: x
- resourceName: projects/p/secrets/b/versions/1
  path: ../up
- resourceName: projects/p/secrets/c/versions/1
  path: same
- resourceName: projects/p/secrets/d/versions/1
  path: same
- resourceName: projects/p/secrets/e/versions/1
  path: dir
- resourceName: projects/p/secrets/f/versions/1
  path: dir/file
"""
        )
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert "secrets[0]: unknown key 'pth'" in err.message
    assert "secrets[1] (projects/p/secrets/b/versions/1) path: output path '../up'" in err.message
    assert (
        "secrets[3] (projects/p/secrets/d/versions/1): output path 'same' is also written by "
        "secrets[2] (projects/p/secrets/c/versions/1)" in err.message
    )
    assert "needs a directory 'dir', but secrets[4]" in err.message
    assert err.message.startswith("invalid 'gcp' SecretProviderClass: [1] ")
    assert isinstance(err, MountFailed) and len(err.errors) == 4


def test_two_entries_of_one_secret_writing_one_path_are_reported() -> None:
    err = error(
        mount(
            "- {resourceName: projects/p/secrets/a/versions/1, path: same}\n"
            "- {resourceName: projects/p/secrets/a/versions/1, path: same}\n"
        )
    )
    assert "secrets[1] (projects/p/secrets/a/versions/1): output path 'same' is also" in err.message


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "~",
        "not: a list",
        "- just a string",
        "- [1, 2]",
        "- resourceName: [a]\n  path: b",
        "a: &a [*a]",
    ],
)
def test_structural_errors(text: str) -> None:
    m = mount(text) if text else Mount(pod=POD, parameters={}, dialect="gcp")
    assert error(m).code is Code.INVALID_ARGUMENT


def test_invalid_yaml_points_at_the_problem() -> None:
    err = error(mount("- resourceName: [unclosed\n  path: a\n"))
    assert "not valid YAML" in err.message and "line" in err.message


def test_duplicate_keys_rejected() -> None:
    err = error(mount("- resourceName: projects/p/secrets/s/versions/1\n  path: a\n  path: b\n"))
    assert "given twice" in err.message


# -- properties ------------------------------------------------------------------------

_ID = st.from_regex(r"[a-z][a-z0-9-]{4,20}[a-z0-9]", fullmatch=True)
_SECRET = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
_VERSION = st.one_of(
    st.just("latest"),
    st.integers(min_value=1, max_value=10**9).map(str),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}[A-Za-z0-9]", fullmatch=True),
)
_LOCATION = st.from_regex(r"[a-z]{2,8}-[a-z]{2,8}[0-9]", fullmatch=True)


@settings(max_examples=200)
@given(project=_ID, secret=_SECRET, version=_VERSION, location=st.one_of(st.just(""), _LOCATION))
def test_valid_secret_names_round_trip(
    project: str, secret: str, version: str, location: str
) -> None:
    prefix = f"projects/{project}" + (f"/locations/{location}" if location else "")
    name = f"{prefix}/secrets/{secret}/versions/{version}"
    ref = parse_resource_name(name)
    assert isinstance(ref, SecretVersionRef)
    assert (ref.project, ref.secret, ref.version, ref.location) == (
        project,
        secret,
        version,
        location,
    )
    assert ref.name == name


@settings(max_examples=300)
@given(text=st.text(max_size=120))
def test_arbitrary_resource_names_never_crash(text: str) -> None:
    yaml_text = "- resourceName: " + repr(text).replace("\\", "\\\\") + "\n  path: a\n"
    m = mount(yaml_text)
    try:
        plan = gcp.parse(m)
    except KeyferryError as exc:
        assert exc.code is Code.INVALID_ARGUMENT
    else:
        ref = plan.objects[0].ref
        assert isinstance(ref, SecretVersionRef | ParameterVersionRef)
        assert ref.name.startswith("projects/")


@settings(max_examples=200)
@given(mode=st.integers(min_value=-10, max_value=0o10000))
def test_modes_in_range_accepted_outside_rejected(mode: int) -> None:
    text = f"- resourceName: projects/p/secrets/s/versions/1\n  path: a\n  mode: {mode}\n"
    if 0 <= mode <= 0o777:
        assert gcp.parse(mount(text)).objects[0].outputs[0].mode == mode
    else:
        assert error(mount(text)).code is Code.INVALID_ARGUMENT


@settings(max_examples=100)
@given(mode=st.integers(min_value=0, max_value=0o777))
def test_octal_spellings(mode: int) -> None:
    for spelled in (f"0{mode:o}", f"0o{mode:o}"):
        text = f"- resourceName: projects/p/secrets/s/versions/1\n  path: a\n  mode: {spelled}\n"
        assert gcp.parse(mount(text)).objects[0].outputs[0].mode == mode


# -- native hook -----------------------------------------------------------------------


def native_mount(objects: str, secrets: dict[str, str] | None = None) -> Mount:
    return Mount(pod=POD, parameters={"objects": objects}, secrets=secrets or {})


def test_native_gcp_objects() -> None:
    plan = native.parse(
        native_mount(
            """
- backend: gcp
  name: projects/p/locations/us-east1/secrets/db/versions/latest
  extract:
    - path: db/user
      jsonKey: user
- backend: gcp
  name: projects/p/locations/global/parameters/cfg/versions/v2
  auth: provider-adc
"""
        )
    )
    first, second = plan.objects
    assert first.backend == "gcp" and isinstance(first.ref, SecretVersionRef)
    assert first.ref.location == "us-east1"
    assert [o.path for o in first.outputs] == ["db/user"]
    assert isinstance(second.ref, ParameterVersionRef) and second.ref.auth == "provider-adc"
    assert second.outputs[0].path == "cfg"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("  name: nope\n", "must start with 'projects/'"),
        ("  resourceName: projects/p/secrets/s/versions/1\n", "unknown key 'resourceName'"),
        ("  name: projects/p/secrets/s/versions/1\n  auth: key\n", "not supported"),
        ("  name: projects/p/secrets/s/versions/1\n  auth: node-publish-secret\n", "key.json"),
    ],
)
def test_native_gcp_errors(body: str, why: str) -> None:
    with pytest.raises(KeyferryError) as info:
        native.parse(native_mount("- backend: gcp\n" + body))
    assert info.value.code is Code.INVALID_ARGUMENT
    assert why in info.value.message


def test_shipped_example_parses() -> None:
    import yaml

    root = REPO / "examples" / "gcp"
    spc = yaml.safe_load((root / "secretproviderclass.yaml").read_text())
    plan = gcp.parse(
        Mount(pod=POD, parameters=spc["spec"]["parameters"], dialect="gcp", provider_name="gcp")
    )
    assert [o.outputs[0].path for o in plan.objects] == [
        "db/password",
        "api-key",
        "db/user",
        "config.json",
    ]
