"""Parsing of the native keys for role chaining (``assumeRoleArn``, ``externalId``,
``durationSeconds``) and version history (``versionHistory``, ``previous``) on every cloud
that has them, hostile values included. Pure parsing: no network."""

from __future__ import annotations

import pytest

from provider import native
from provider.clouds.aws.ref import AssumeRole, AwsRef, AwsSelection
from provider.errors import Code, KeyferryError
from provider.model import Mount, Plan, Pod

TARGET = "arn:aws:iam::210987654321:role/reader"
SM = "backend: aws\n  service: secretsmanager\n  name: app/db\n  path: db"


def parse(obj: str) -> Plan:
    return native.parse(
        Mount(pod=Pod("ns", "pod", "uid", "sa"), parameters={"objects": f"- {obj}"})
    )


def refused(obj: str) -> KeyferryError:
    with pytest.raises(KeyferryError) as info:
        parse(obj)
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value


def test_assume_role_keys_become_the_refs_role() -> None:
    plan = parse(f"{SM}\n  assumeRoleArn: {TARGET}\n  externalId: ext-1\n  durationSeconds: 900")
    ref = plan.objects[0].ref
    assert isinstance(ref, AwsRef)
    assert ref.assume == AssumeRole(TARGET, "ext-1", 900)
    assert "ext-1" not in repr(ref)  # an external id is kept out of logs


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("assumeRoleArn: arn:aws:iam::21098765432:role/x", "not an IAM role ARN"),
        ("assumeRoleArn: arn:aws:s3:::bucket", "not an IAM role ARN"),
        ("assumeRoleArn: arn:aws:iam::210987654321:user/bob", "not an IAM role ARN"),
        ("assumeRoleArn: arn:aws:iam:us-east-1:210987654321:role/x", "not an IAM role ARN"),
        ("assumeRoleArn: reader", "not an IAM role ARN"),
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: 7200", "chained session at one hour"),
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: 60", "below STS's minimum of 900"),
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: 1h", "whole number of seconds"),
        # str.isdigit() accepts superscripts that int() refuses: never an INTERNAL
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: \u00b9\u00b2\u00b3\u2074", "whole number"),
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: \u0669\u0660\u0660", "whole number"),
        (f"assumeRoleArn: {TARGET}\n  externalId: 'a b'", "externalId must be"),
        ("externalId: ext-1", "'externalId' needs 'assumeRoleArn'"),
        ("durationSeconds: 900", "'durationSeconds' needs 'assumeRoleArn'"),
    ],
)
def test_bad_role_chaining_keys_name_the_field(extra: str, needle: str) -> None:
    assert needle in refused(f"{SM}\n  {extra}").message


def test_version_history_expands_to_one_object_per_slot() -> None:
    plan = parse(f"{SM}\n  versionHistory: 3\n  extract:\n    - {{path: pw, jsonKey: pw}}")
    assert [s.ids for s in plan.objects] == [("db/0",), ("db/1",), ("db/2",)]
    assert [[o.path for o in s.outputs] for s in plan.objects] == [
        ["db/0", "pw/0"],
        ["db/1", "pw/1"],
        ["db/2", "pw/2"],
    ]
    assert [s.optional for s in plan.objects] == [False, True, True]
    assert [(s.ref.history, s.ref.index) for s in plan.objects] == [(3, 0), (3, 1), (3, 2)]  # type: ignore[attr-defined]


def test_previous_is_awsprevious_for_secrets_manager_and_a_slot_for_ssm() -> None:
    (sm,) = parse(f"{SM}\n  previous: true").objects
    assert isinstance(sm.ref, AwsRef) and sm.ref.target.version_label == "AWSPREVIOUS"
    assert not sm.optional and sm.ids == ("db",)
    (ssm,) = parse("backend: aws\n  service: ssm\n  name: /app/x\n  previous: true").objects
    assert isinstance(ssm.ref, AwsRef) and (ssm.ref.history, ssm.ref.index) == (2, 1)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("versionHistory: 0", "from 1 to 50"),
        ("versionHistory: -2", "from 1 to 50"),
        ("versionHistory: 1.5", "from 1 to 50"),
        ("versionHistory: many", "from 1 to 50"),
        ("versionHistory: true", "from 1 to 50"),
        ("versionHistory: 51", "from 1 to 50"),
        ("versionHistory: 99999999999", "from 1 to 50"),
        ("versionHistory: [1]", "from 1 to 50"),
        ("versionHistory: 2\n  previous: true", "not both"),
        ("previous: maybe", "previous"),
        ("versionHistory: 2\n  versionId: " + "a" * 32, "remove the version selector"),
        ("previous: true\n  versionStage: AWSCURRENT", "remove the version selector"),
        ("versionHistory: 2\n  failoverRegion: us-west-2", "failoverRegion"),
    ],
)
def test_bad_history_keys_name_the_field(extra: str, needle: str) -> None:
    assert needle in refused(f"{SM}\n  {extra}").message


GCP = "backend: gcp\n  name: projects/p1/secrets/db/versions/latest\n  path: db"
AZURE = "backend: azure\n  vault: kv1\n  name: db\n  path: db"


@pytest.mark.parametrize(("base", "previous"), [(GCP, (2, 1)), (AZURE, (2, 1))])
def test_gcp_and_azure_read_the_same_keys(base: str, previous: tuple[int, int]) -> None:
    plan = parse(f"{base}\n  versionHistory: 2")
    assert [s.ids for s in plan.objects] == [("db/0",), ("db/1",)]
    (one,) = parse(f"{base}\n  previous: true").objects
    assert (one.ref.history, one.ref.index) == previous  # type: ignore[attr-defined]
    assert one.ids == ("db",) and not one.optional


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (
            GCP.replace("latest", "3") + "\n  versionHistory: 2",
            "end the name with '/versions/latest'",
        ),
        (
            "backend: gcp\n  name: projects/p1/locations/global/parameters/app/versions/v1\n"
            "  previous: true",
            "for Secret Manager secrets",
        ),
        (GCP + "\n  versionHistory: 0", "from 1 to 50"),
        (AZURE + "\n  versionHistory: 51", "from 1 to 50"),
        (AZURE + "\n  versionHistory: 2\n  previous: true", "not both"),
    ],
)
def test_gcp_and_azure_bad_history_keys(obj: str, needle: str) -> None:
    assert needle in refused(obj).message


@pytest.mark.parametrize("key", ["assumeRoleArn", "versionHistory", "previous"])
def test_the_drop_in_aws_dialect_does_not_take_the_native_keys(key: str) -> None:
    """The official provider has none of them (assumeRoleArn only in an open pull request):
    a drop-in class must keep working there, so they are unknown keys, not ignored ones."""
    from provider.clouds.aws import dialect as aws

    objects = f"- {{objectName: db, objectType: secretsmanager, {key}: x}}"
    mount = Mount(
        pod=Pod("ns", "pod", "uid", "sa"),
        parameters={"objects": objects, "region": "us-east-1"},
        dialect="aws",
        provider_name="aws",
    )
    with pytest.raises(KeyferryError) as info:
        aws.parse(mount)
    assert info.value.code is Code.INVALID_ARGUMENT and key in info.value.message


_SELECTIONS = {
    "aws": "backend: aws\n  select: {namePrefix: app/}\n  path: app",
    "gcp": "backend: gcp\n  select: {project: my-project, labels: {app: web}}\n  path: web",
    "azure": "backend: azure\n  vault: kv1\n  select: {namePrefix: app-}\n  path: app",
}


@pytest.mark.parametrize(
    ("cloud", "extra"),
    [(cloud, key) for cloud in _SELECTIONS for key in ("versionHistory: 2", "previous: true")],
)
def test_history_keys_beside_select_are_refused_not_ignored(cloud: str, extra: str) -> None:
    """A selection reads each match at its current version: the history keys cannot apply
    to it, and saying so beats ignoring them."""
    err = refused(f"{_SELECTIONS[cloud]}\n  {extra}")
    assert extra.split(":")[0] in err.message
    assert "select" in err.message


@pytest.mark.parametrize(
    "select", ["select: {namePrefix: app/}", "select: {path: /app, recursive: 'true'}"]
)
def test_role_keys_beside_an_aws_select_become_the_selections_role_and_its_members(
    select: str,
) -> None:
    """A selection lists and reads as the role it names, as one object does (the backend
    checks that the server allows the chain)."""
    obj = (
        f"backend: aws\n  {select}\n  path: app\n  assumeRoleArn: {TARGET}\n"
        "  externalId: ext-1\n  durationSeconds: 900"
    )
    query = parse(obj).objects[0].ref
    assert isinstance(query, AwsSelection)
    assert query.assume == AssumeRole(TARGET, "ext-1", 900)
    assert query.member("/app/x").assume == query.assume
    assert "ext-1" not in repr(query)
    plain = parse("backend: aws\n  select: {namePrefix: app/}\n  path: app").objects[0].ref
    assert isinstance(plain, AwsSelection) and plain.assume is None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("assumeRoleArn: arn:aws:iam::12:role/r", "is not an IAM role ARN"),
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: 7200", "above 3600"),
        (f"assumeRoleArn: {TARGET}\n  durationSeconds: 60", "below STS's minimum"),
        (f"assumeRoleArn: {TARGET}\n  externalId: 'a b'", "externalId must be"),
        ("externalId: ext-1", "'externalId' needs 'assumeRoleArn'"),
        ("durationSeconds: 900", "'durationSeconds' needs 'assumeRoleArn'"),
    ],
)
def test_bad_role_keys_beside_select_are_refused_as_for_one_object(extra: str, needle: str) -> None:
    err = refused(f"{_SELECTIONS['aws']}\n  {extra}")
    assert needle in err.message
    assert needle in refused(f"{SM}\n  {extra}").message  # the same parse, the same error


def test_a_version_slot_id_that_another_object_uses_is_refused_when_parsed() -> None:
    # Slot db/1 is skipped while the secret has one version, so the clash with the other
    # object's id would only fail the Mount at the rotation that adds a version.
    other = "backend: aws\n  service: secretsmanager\n  name: app/other\n  path: o\n  id: db/1"
    err = refused(f"{SM}\n  versionHistory: 2\n- {other}")
    assert "objects[1] (aws: app/other)" in err.message
    assert "id 'db/1' is also the id of objects[0] (aws: app/db) version history [1]" in err.message
    assert len(parse(f"{SM}\n  versionHistory: 2\n- {other.replace('db/1', 'db-1')}").objects) == 3
