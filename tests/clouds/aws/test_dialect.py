"""The ``aws`` dialect (drop-in for ASCP 3.1.x): parsing, validation, file names,
ids. Pure parsing: nothing here touches the network."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider.clouds.aws import dialect as aws
from provider.clouds.aws.ref import AwsRef, AwsTarget
from provider.errors import Code, KeyferryError
from provider.model import Mount, Pod

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:MySecret-a1b2c3"


def mount(objects: str, **params: str) -> Mount:
    return Mount(
        pod=Pod("ns", "pod", "uid", "sa"),
        parameters={"objects": objects, **params},
        dialect="aws",
        provider_name="aws",
    )


def parse(objects: str, **params: str) -> aws.Plan:  # type: ignore[name-defined]
    return aws.parse(mount(objects, **params))


def error(objects: str, **params: str) -> KeyferryError:
    with pytest.raises(KeyferryError) as info:
        parse(objects, **params)
    return info.value


def outputs(plan: object) -> list[tuple[str, int | None, str | None]]:
    return [
        (o.path, o.mode, o.extract.expression if o.extract else None)
        for spec in plan.objects  # type: ignore[attr-defined]
        for o in spec.outputs
    ]


# --------------------------------------------------------------- README examples


def test_readme_basic_secret() -> None:
    plan = parse('- objectName: "MySecret"\n  objectType: "secretsmanager"\n')
    (spec,) = plan.objects
    assert spec.ids == ("MySecret",)
    assert spec.ref == AwsRef(service="secretsmanager", target=AwsTarget("MySecret"))
    assert outputs(plan) == [("MySecret", None, None)]


def test_readme_jmespath_writes_parent_and_children() -> None:
    plan = parse(
        """
- objectName: "MySecret"
  objectType: "secretsmanager"
  jmesPath:
      - path: "username"
        objectAlias: "MySecretUsername"
      - path: "password"
        objectAlias: "MySecretPassword"
"""
    )
    assert outputs(plan) == [
        ("MySecret", None, None),
        ("MySecretUsername", None, "username"),
        ("MySecretPassword", None, "password"),
    ]
    assert plan.objects[0].ids == ("MySecret", "MySecretUsername", "MySecretPassword")


def test_readme_hyphenated_jmes_path_and_alias_are_taken_literally() -> None:
    plan = parse(
        """
- objectName: MySecret
  objectType: secretsmanager
  jmesPath:
    - path: '"hyphenated-path"'
      objectAlias: '"hyphenated-alias"'
"""
    )
    assert outputs(plan)[1] == ('"hyphenated-alias"', None, '"hyphenated-path"')


def test_readme_failover_object_with_arns() -> None:
    plan = parse(
        """
- objectName: "arn:aws:secretsmanager:us-east-1:123456789012:secret:PrimarySecret-12345"
  failoverObject:
    objectName: "arn:aws:secretsmanager:us-east-2:123456789012:secret:FailoverSecret-12345"
  objectAlias: testArn
""",
        region="us-east-1",
        failoverRegion="us-east-2",
    )
    (spec,) = plan.objects
    ref = spec.ref
    assert isinstance(ref, AwsRef)
    assert ref.service == "secretsmanager"
    assert ref.failover_region == "us-east-2"
    assert ref.failover_target.name.endswith("FailoverSecret-12345")
    assert spec.ids == ("testArn",)


def test_integration_spc_with_capitalised_keys() -> None:
    """ASCP's own integration SPC writes ``Path:``/``ObjectAlias:``; keys are
    case-insensitive."""
    plan = parse(
        """
- objectName: "jsonSsm"
  objectType: "ssmparameter"
  jmesPath:
      - Path: "username"
        ObjectAlias: "ssmUsername"
- ObjectName: "ParameterStoreTestWithLongName"
  ObjectAlias: "ParameterStoreTest2"
  OBJECTTYPE: "ssmparameter"
"""
    )
    assert [o[0] for o in outputs(plan)] == ["jsonSsm", "ssmUsername", "ParameterStoreTest2"]


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("translation", "name", "expected"),
    [
        ("", "/a/b/c", "_a_b_c"),
        ("-", "a/b", "a-b"),
        ("False", "/a/b", "a/b"),
        ("false", "a/b", "a/b"),
        ("é", "a/b", "aéb"),
    ],
)
def test_path_translation(translation: str, name: str, expected: str) -> None:
    params = {"pathTranslation": translation} if translation else {}
    plan = parse(f"- objectName: {name}\n  objectType: ssmparameter\n", **params)
    assert outputs(plan)[0][0] == expected


def test_translation_applies_to_aliases_too() -> None:
    plan = parse(
        "- objectName: x\n  objectType: secretsmanager\n  objectAlias: dir/file\n"
        "  jmesPath: [{path: a, objectAlias: j/k}]\n"
    )
    assert [o[0] for o in outputs(plan)] == ["dir_file", "j_k"]


def test_numbers_in_string_fields_become_decimal_text() -> None:
    plan = parse("- objectName: 12\n  objectType: ssmparameter\n  objectVersion: 3\n")
    ref = plan.objects[0].ref
    assert isinstance(ref, AwsRef)
    assert ref.target == AwsTarget("12", version_id="3")


@pytest.mark.parametrize("number", ["3.4028235677973366e+38", "1.0e+39", "-1.0e+39", ".inf"])
def test_floats_beyond_float32_are_infinite_text_not_a_crash(number: str) -> None:
    # Found by tests/core/test_fuzz.py: a float just past float32's range crashed the
    # conversion ASCP applies (Go's float32(v) is an infinity there).
    err = error(f"- objectName: x\n  objectType: secretsmanager\n  filePermission: {number}\n")
    assert err.code is Code.INVALID_ARGUMENT
    assert "inf" in err.message


def test_arn_without_object_type_takes_the_service_from_the_arn() -> None:
    plan = parse(
        "- objectName: arn:aws:ssm:us-east-1:123456789012:parameter/app/db\n", region="us-east-1"
    )
    ref = plan.objects[0].ref
    assert isinstance(ref, AwsRef)
    assert ref.service == "ssm"


def test_same_secret_twice_with_aliases_and_stages() -> None:
    plan = parse(
        """
- {objectName: s, objectType: secretsmanager, objectAlias: current}
- {objectName: s, objectType: secretsmanager, objectAlias: previous,
   objectVersionLabel: AWSPREVIOUS}
"""
    )
    assert [o[0] for o in outputs(plan)] == ["current", "previous"]


def test_file_permissions_and_jmes_inheritance() -> None:
    plan = parse(
        """
- objectName: s
  objectType: secretsmanager
  filePermission: "0600"
  jmesPath:
    - {path: a, objectAlias: a}
    - {path: b, objectAlias: b, filePermission: "0400"}
"""
    )
    assert outputs(plan) == [("s", 0o600, None), ("a", 0o600, "a"), ("b", 0o400, "b")]


def test_top_level_options() -> None:
    plan = parse(
        "- {objectName: s, objectType: secretsmanager}\n",
        region="eu-west-3",
        usePodIdentity="True",
        preferredAddressType="IPv6",
    )
    ref = plan.objects[0].ref
    assert isinstance(ref, AwsRef)
    assert (ref.region, ref.auth, ref.address_type) == ("eu-west-3", "pod-identity", "ipv6")


# ------------------------------------------------------------------ bad input


def test_one_error_lists_per_object_and_cross_object_problems() -> None:
    err = error(
        "- {objectName: a, objectType: secretsmanager, objectAlais: x}\n"
        "- {objectName: b, objectType: secretsmanager, objectAlias: ../up}\n"
        "- {objectName: c, objectType: secretsmanager, objectAlias: same}\n"
        "- {objectName: d, objectType: secretsmanager, objectAlias: same}\n"
        "- {objectName: e, objectType: secretsmanager, objectAlias: dir}\n"
        "- {objectName: f, objectType: secretsmanager, objectAlias: dir/file}\n",
        pathTranslation="False",
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert "objects[0]: unknown key 'objectAlais'" in err.message
    assert "objects[1] (b) file name: output path '../up' contains a '..'" in err.message
    assert "objects[3] (d): output file 'same' is also written by objects[2] (c)" in err.message
    assert "needs a directory 'dir', but objects[4] (e) writes a file" in err.message


@pytest.mark.parametrize(
    ("objects", "params", "needle"),
    [
        ("- objectName: arn:aws:secretsmanager\n", {}, "not a valid ARN"),
        (f"- objectName: {ARN}\n", {"region": "us-west-2"}, "does not match the region"),
        (
            f"- objectName: {ARN}\n  objectType: ssmparameter\n",
            {"region": "us-east-1"},
            "does not match the ARN",
        ),
        ("- objectName: x\n", {}, "'objectType' is required"),
        ("- objectName: x\n  objectType: ssm\n", {}, "'ssmparameter'"),
        ("- objectName: x\n  objectType: vault\n", {}, "objectType 'vault'"),
        (
            "- {objectName: x, objectType: ssmparameter, objectVersion: '2', "
            "objectVersionLabel: l}\n",
            {},
            "not both",
        ),
        (
            "- {objectName: x, objectType: secretsmanager}\n"
            "- {objectName: x, objectType: secretsmanager}\n",
            {},
            "also written by objects[0]",
        ),
        (
            "- {objectName: x, objectType: secretsmanager, objectAlias: a}\n"
            "- {objectName: y, objectType: secretsmanager, objectAlias: a}\n",
            {},
            "also written by",
        ),
        (
            "- {objectName: x, objectType: secretsmanager, objectAlias: a}\n"
            "- objectName: y\n  objectType: secretsmanager\n  jmesPath: [{path: p, objectAlias: a}]\n",  # noqa: E501
            {},
            "also written by",
        ),
        (
            "- {objectName: a, objectType: secretsmanager}\n"
            "- {objectName: x, objectType: secretsmanager, objectAlias: a}\n",
            {},
            "also written by",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: '[', objectAlias: j}]\n",  # noqa: E501
            {},
            "not a valid expression",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{objectAlias: j}]\n",
            {},
            "'path' is required",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: a}]\n",
            {},
            "'objectAlias' is required",
        ),
        (
            "- {objectName: s, objectType: secretsmanager, objectAlias: ../x}\n",
            {"pathTranslation": "False"},
            "'..'",
        ),
        (
            "- {objectName: ../../etc/passwd, objectType: secretsmanager}\n",
            {"pathTranslation": "False"},
            "'..'",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: a, objectAlias: ../x}]\n",  # noqa: E501
            {"pathTranslation": "false"},
            "'..'",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: a, objectAlias: .}]\n",  # noqa: E501
            {},
            "'.'",
        ),
        ("- {objectName: s, objectType: secretsmanager, objectAlias: ..data}\n", {}, "reserves"),
        (
            "- {objectName: s, objectType: secretsmanager, filePermission: '644'}\n",
            {},
            "4 octal digits",
        ),
        (
            "- {objectName: s, objectType: secretsmanager, filePermission: '0999'}\n",
            {},
            "4 octal digits",
        ),
        ("- {objectName: s, objectType: secretsmanager, filePermission: '4755'}\n", {}, "setuid"),
        (
            "- {objectName: s, objectType: secretsmanager, filePermission: 0600}\n",
            {},
            'quoted 4-digit octal string, e.g. filePermission: "0600"',
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: a, objectAlias: b, filePermission: 'rw'}]\n",  # noqa: E501
            {},
            "4 octal digits",
        ),
        (
            "- {objectName: s, objectType: secretsmanager, objectAlais: x}\n",
            {},
            "did you mean 'objectAlias'",
        ),
        (
            "- objectName: s\n  objectType: secretsmanager\n  jmesPath: [{path: a, objectAlias: b, alias: c}]\n",  # noqa: E501
            {},
            "unknown key 'alias'",
        ),
        (
            "- {objectName: s, objectType: secretsmanager, failoverObject: {objectName: t}}\n",
            {"failoverRegion": "us-east-2"},
            "needs an 'objectAlias'",
        ),
        (
            "- {objectName: s, objectType: secretsmanager, objectAlias: a, failoverObject: {objectName: t}}\n",  # noqa: E501
            {},
            "needs the 'failoverRegion'",
        ),
        (
            "- {objectName: s, objectType: secretsmanager, objectAlias: a, objectVersion: "
            "01234567890123456789012345678901, failoverObject: {objectName: t}}\n",
            {"failoverRegion": "us-east-2"},
            "must equal the primary",
        ),
        (
            f"- {{objectName: s, objectType: secretsmanager, objectAlias: a, failoverObject: {{objectName: '{ARN}'}}}}\n",  # noqa: E501
            {"region": "us-west-2", "failoverRegion": "us-east-2"},
            "does not match the region 'us-east-2'",
        ),
        (
            "- {objectName: x, objectType: ssmparameter, objectVersion: latest}\n",
            {},
            "version number",
        ),
        (
            "- {objectName: x, objectType: ssmparameter, objectVersionLabel: '7'}\n",
            {},
            "use objectVersion",
        ),
        ("- {objectName: x, objectType: secretsmanager, objectVersion: v1}\n", {}, "VersionId"),
        ("-\n- {objectName: x, objectType: ssmparameter}\n", {}, "empty entry"),
        ("- objectName: x\n  objectType: [a]\n", {}, "must be a string"),
        ("objectName: x\n", {}, "must be a YAML list"),
        ("[]", {}, "empty list"),
        ("- {objectName: '', objectType: ssmparameter}\n", {}, "'objectName' is required"),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"region": "us-east-1; rm"},
            "not an AWS region",
        ),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"region": "us-east-1", "failoverRegion": "us-east-1"},
            "must differ",
        ),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"pathTranslation": "ab"},
            "single character",
        ),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"pathTranslation": "/"},
            "single character",
        ),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"usePodIdentity": "yes"},
            "not a boolean",
        ),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"preferredAddressType": "ipv5"},
            "preferredAddressType",
        ),
        (
            "- {objectName: x, objectType: ssmparameter}\n",
            {"Region": "us-east-1"},
            "did you mean 'region'",
        ),
        (
            "- {objectName: a/b, objectType: ssmparameter}\n- {objectName: a, objectType: ssmparameter}\n",  # noqa: E501
            {"pathTranslation": "False"},
            "needs a directory",
        ),
    ],
)
def test_bad_input_is_invalid_argument(objects: str, params: dict[str, str], needle: str) -> None:
    err = error(objects, **params)
    assert err.code is Code.INVALID_ARGUMENT
    assert needle in err.message


def test_every_failing_object_is_listed() -> None:
    err = error(
        "- {objectName: a, objectType: nope}\n- {objectName: b}\n- {objectName: c, objectType: ssmparameter}\n"  # noqa: E501
    )
    assert "objects[0] (a)" in err.message and "objects[1] (b)" in err.message
    assert "objects[2]" not in err.message


def test_missing_objects_parameter() -> None:
    with pytest.raises(KeyferryError) as info:
        aws.parse(Mount(pod=Pod(), parameters={"region": "us-east-1"}, dialect="aws"))
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "'objects' is missing" in info.value.message


def test_driver_pass_through_keys_are_tolerated() -> None:
    plan = aws.parse(
        Mount(
            pod=Pod(),
            parameters={
                "objects": "- {objectName: x, objectType: ssmparameter}",
                "secretProviderClass": "spc",
                "csi.storage.k8s.io/ephemeral": "true",
            },
            dialect="aws",
        )
    )
    assert len(plan.objects) == 1


# ------------------------------------------------------------------ native hook


def test_native_hook_builds_refs_per_region() -> None:
    from provider import native

    plan = native.parse(
        Mount(
            pod=Pod(),
            parameters={
                "objects": """
- backend: aws
  service: secretsmanager
  name: prod/db
  versionStage: AWSPREVIOUS
  region: eu-west-1
- backend: aws
  name: arn:aws:ssm:us-east-2:123456789012:parameter/app/flag
  label: blue
  path: flag
- backend: aws
  service: ssm
  name: /app/token
  version: 4
  region: us-east-1
  failoverRegion: us-west-2
  auth: podIdentity
"""
            },
        )
    )
    refs = [s.ref for s in plan.objects]
    assert all(isinstance(r, AwsRef) for r in refs)
    assert refs[0] == AwsRef(
        "secretsmanager", AwsTarget("prod/db", version_label="AWSPREVIOUS"), region="eu-west-1"
    )
    assert refs[1].region == "us-east-2" and refs[1].service == "ssm"  # type: ignore[attr-defined]
    assert refs[2].auth == "pod-identity"  # type: ignore[attr-defined]
    assert [s.outputs[0].path for s in plan.objects] == ["prod/db", "flag", "app/token"]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ("{backend: aws, name: x}", "'service' is required"),
        ("{backend: aws, service: secretsmanager, name: x, version: 3}", "for SSM"),
        ("{backend: aws, service: ssm, name: x, versionId: abc}", "for Secrets Manager"),
        ("{backend: aws, service: kms, name: x}", "not an AWS secret store"),
        ("{backend: aws, service: ssm, name: x, auth: node}", "auth 'node'"),
        ("{backend: aws, service: ssm, name: x, region: mars}", "not an AWS region"),
        ("{backend: aws, service: ssm, name: x, failoverName: y}", "needs 'failoverRegion'"),
        ("{backend: aws, service: ssm, name: x, endpoint: 'http://evil'}", "unknown key"),
    ],
)
def test_native_hook_bad_input(obj: str, needle: str) -> None:
    from provider import native

    with pytest.raises(KeyferryError) as info:
        native.parse(Mount(pod=Pod(), parameters={"objects": f"- {obj}"}))
    assert info.value.code is Code.INVALID_ARGUMENT
    assert needle in info.value.message


# --------------------------------------------------------------------- fuzzing

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 99999),
    st.text(min_size=0, max_size=12),
    st.sampled_from(["secretsmanager", "ssmparameter", "0600", "../x", "a/b", ARN, "AWSCURRENT"]),
)
_keys = st.sampled_from(
    [*aws.OBJECT_KEYS, "objectname", "jmespath", "bogus", "path", "objectAlias"]
)
_obj = st.dictionaries(
    _keys,
    st.one_of(
        _scalar, st.lists(st.dictionaries(st.sampled_from(aws.JMES_KEYS), _scalar), max_size=2)
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_obj, min_size=1, max_size=4), st.sampled_from(["", "False", "-"]))
def test_parser_never_crashes_and_outputs_are_safe(items: list[dict[str, object]], tr: str) -> None:
    import yaml

    params = {"objects": yaml.safe_dump(items), "region": "us-east-1"}
    if tr:
        params["pathTranslation"] = tr
    try:
        plan = aws.parse(Mount(pod=Pod(), parameters=params, dialect="aws"))
    except KeyferryError as exc:
        assert exc.code is Code.INVALID_ARGUMENT
        return
    seen: set[str] = set()
    for spec in plan.objects:
        for out in spec.outputs:
            assert out.path not in seen
            seen.add(out.path)
            assert ".." not in out.path.split("/")
            assert not out.path.startswith("/")
            assert out.mode is None or 0 <= out.mode <= 0o777
