"""Version history on AWS (``versionHistory: N``, ``previous: true``) in the native dialect,
against moto behind the strict proxy: which versions, in which files, at what cost."""

from __future__ import annotations

import uuid

import pytest

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.aws_stack import ROLE, files, versions
from provider.errors import Code, KeyferryError
from tests.clouds.aws.conftest import MakeStack


def uid() -> str:
    return uuid.uuid4().hex[:10]


def native(name: str, service: str = "secretsmanager", **extra: str) -> dict[str, str]:
    lines = ["- backend: aws", f"  service: {service}", f"  name: {name}", "  path: db"]
    lines += [f"  {k}: {v!r}" for k, v in extra.items()]
    return {"objects": "\n".join(lines)}


def secret_with_versions(*values: str) -> tuple[str, list[str]]:
    sm, _ = seed_clients()
    name = f"hist/{uid()}"
    ids = [sm.create_secret(Name=name, SecretString=values[0])["VersionId"]]
    for value in values[1:]:
        ids.append(sm.put_secret_value(SecretId=name, SecretString=value)["VersionId"])
    return name, ids


def test_secrets_manager_history_newest_first_and_rotation_reads_only_the_new_version(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name, ids = secret_with_versions("canary-h1", "canary-h2", "canary-h3")
    stack = make_stack()
    params = native(name, versionHistory="3")
    result = stack.mount(params, dialect="native")
    assert files(result) == {"db/0": b"canary-h3", "db/1": b"canary-h2", "db/2": b"canary-h1"}
    assert versions(result) == {"db/0": ids[2], "db/1": ids[1], "db/2": ids[0]}
    assert proxy.count("ListSecretVersionIds") == 1 and proxy.count("GetSecretValue") == 3
    sm, _ = seed_clients()
    new = sm.put_secret_value(SecretId=name, SecretString="canary-h4")["VersionId"]
    proxy.clear()
    rotated = stack.mount(params, dialect="native")
    assert files(rotated) == {"db/0": b"canary-h4", "db/1": b"canary-h3", "db/2": b"canary-h2"}
    assert versions(rotated)["db/0"] == new  # the driver sees the change and rewrites
    # Rotation: one listing; only the new version is read (the others are pinned, cached).
    assert proxy.count("ListSecretVersionIds") == 1 and proxy.count("GetSecretValue") == 1
    metrics = stack.metrics_text()
    assert (
        'keyferry_backend_requests_total{backend="aws",operation="ListSecretVersionIds",'
        'outcome="ok"} 2.0' in metrics
    )
    assert "canary-h" not in metrics


def test_history_deeper_than_the_versions_writes_what_exists(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name, _ = secret_with_versions("one", "two")
    result = make_stack().mount(native(name, versionHistory="5"), dialect="native")
    assert files(result) == {"db/0": b"two", "db/1": b"one"}
    assert set(versions(result)) == {"db/0", "db/1"}  # a third version adds db/2: a change


def test_pending_rotation_is_not_part_of_the_history(make_stack: MakeStack) -> None:
    name, _ = secret_with_versions("live-1", "live-2")
    sm, _ = seed_clients()
    sm.put_secret_value(SecretId=name, SecretString="pending", VersionStages=["AWSPENDING"])
    result = make_stack().mount(native(name, versionHistory="3"), dialect="native")
    assert files(result) == {"db/0": b"live-2", "db/1": b"live-1"}


def test_previous_reads_awsprevious(make_stack: MakeStack, proxy: AwsFaults) -> None:
    name, ids = secret_with_versions("old-value", "new-value")
    result = make_stack().mount(native(name, previous="true"), dialect="native")
    assert files(result) == {"db": b"old-value"} and versions(result) == {"db": ids[0]}
    assert proxy.count("ListSecretVersionIds") == 0  # the AWSPREVIOUS stage, one call


def test_previous_without_a_previous_version_is_not_found_unless_optional(
    make_stack: MakeStack,
) -> None:
    name, _ = secret_with_versions("only")
    stack = make_stack()
    with pytest.raises(KeyferryError) as exc:
        stack.mount(native(name, previous="true"), dialect="native")
    assert exc.value.code is Code.NOT_FOUND and "objects[0]" in exc.value.message
    params = native(name, previous="true")
    params["objects"] += f"\n- {{backend: aws, service: secretsmanager, name: {name}, path: c}}"
    params["objects"] = params["objects"].replace("  path: db", "  path: db\n  optional: true")
    assert files(stack.mount(params, dialect="native")) == {"c": b"only"}


def test_ssm_history_and_previous(make_stack: MakeStack, proxy: AwsFaults) -> None:
    _, ssm = seed_clients()
    name = f"/hist/{uid()}"
    for value in ("p1", "p2", "p3"):
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    stack = make_stack()
    result = stack.mount(native(name, "ssm", versionHistory="2"), dialect="native")
    assert files(result) == {"db/0": b"p3", "db/1": b"p2"}
    assert versions(result) == {"db/0": "3", "db/1": "2"}
    assert proxy.count("GetParameterHistory") == 1
    previous = stack.mount(native(name, "ssm", previous="true"), dialect="native")
    assert files(previous) == {"db": b"p2"}


def test_ssm_previous_of_a_single_version_is_not_found(make_stack: MakeStack) -> None:
    _, ssm = seed_clients()
    name = f"/hist/{uid()}"
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    with pytest.raises(KeyferryError) as exc:
        make_stack().mount(native(name, "ssm", previous="true"), dialect="native")
    assert exc.value.code is Code.NOT_FOUND
    assert "no version before the current one" in exc.value.message


def test_listing_denied_names_the_permission_to_grant(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name, _ = secret_with_versions("canary-denied-list")
    proxy.iam.allow(ROLE, "secretsmanager:GetSecretValue", "hist/*")
    with pytest.raises(KeyferryError) as exc:
        make_stack().mount(native(name, versionHistory="2"), dialect="native")
    assert exc.value.code is Code.PERMISSION_DENIED
    assert "needs secretsmanager:ListSecretVersionIds" in exc.value.message
    assert "canary-denied-list" not in exc.value.message
    assert [r.code for r in proxy.refusals] == ["AccessDeniedException"]  # one listing


def test_missing_secret_with_history_is_not_found(make_stack: MakeStack) -> None:
    with pytest.raises(KeyferryError) as exc:
        make_stack().mount(native(f"hist/{uid()}", versionHistory="2"), dialect="native")
    assert exc.value.code is Code.NOT_FOUND


def test_missing_parameter_with_history_is_not_found(make_stack: MakeStack) -> None:
    with pytest.raises(KeyferryError) as exc:
        make_stack().mount(native(f"/hist/{uid()}", "ssm", versionHistory="2"), dialect="native")
    assert exc.value.code is Code.NOT_FOUND and "GetParameterHistory" in exc.value.message
