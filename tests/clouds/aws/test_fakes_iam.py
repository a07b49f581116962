"""The AWS fake's IAM (keyferry_fakes/aws_iam.py) refuses what AWS refuses: sts:AssumeRole
without a trust policy naming the caller, with the wrong ExternalId, a chained session
longer than an hour, an unsigned or forged request; and any call a role's identity policy
does not allow (the list APIs included). Driven directly with boto3, not through keyferry."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from keyferry_fakes.aws_faults import AwsFaults, Issued, seed_clients
from tests.clouds.aws.test_fakes import client, error

SOURCE = "arn:aws:iam::123456789012:role/web"
TARGET = "arn:aws:iam::210987654321:role/reader"


@pytest.fixture
def source(proxy: AwsFaults) -> Issued:
    """Role-session credentials of role/web (as the Pod Identity agent hands them)."""
    return proxy.assume_role(SOURCE, "team-a.web-0")


def assume(proxy: AwsFaults, creds: Issued | None, **extra: Any) -> Any:
    kwargs: dict[str, Any] = {"RoleArn": TARGET, "RoleSessionName": "team-a.web-0", **extra}
    return client(proxy, "sts", creds).assume_role(**kwargs)


def test_assume_role_trusted_caller_gets_credentials_the_fake_accepts(
    proxy: AwsFaults, source: Issued
) -> None:
    proxy.iam.trust_role(TARGET, SOURCE, "ext-42")
    creds = assume(proxy, source, ExternalId="ext-42", DurationSeconds=3600)["Credentials"]
    assert proxy.role_of(creds["AccessKeyId"]) == TARGET
    assert proxy.refusals == []


def test_assume_role_unsigned_is_error(proxy: AwsFaults) -> None:
    proxy.iam.trust_role(TARGET, SOURCE)
    status, code, _ = error(lambda: assume(proxy, None))
    assert (status, code) == (403, "MissingAuthenticationToken")


def test_assume_role_with_keys_the_fake_never_issued_is_error(proxy: AwsFaults) -> None:
    proxy.iam.trust_role(TARGET, SOURCE)
    forged = Issued("ASIAFORGED", "secret", "token", SOURCE, 0, "forged")
    status, code, _ = error(lambda: assume(proxy, forged))
    assert (status, code) == (403, "InvalidClientTokenId")


def test_assume_role_not_in_the_trust_policy_is_access_denied(
    proxy: AwsFaults, source: Issued
) -> None:
    proxy.iam.trust_role(TARGET, "arn:aws:iam::123456789012:role/someone-else")
    status, code, message = error(lambda: assume(proxy, source))
    assert (status, code) == (403, "AccessDenied")
    assert "sts:AssumeRole" in message and TARGET in message


def test_assume_role_external_id_condition(proxy: AwsFaults, source: Issued) -> None:
    proxy.iam.trust_role(TARGET, SOURCE, "expected-id")
    assert error(lambda: assume(proxy, source))[:2] == (403, "AccessDenied")
    assert error(lambda: assume(proxy, source, ExternalId="other-id"))[:2] == (
        403,
        "AccessDenied",
    )


def test_chained_session_longer_than_an_hour_is_a_validation_error(
    proxy: AwsFaults, source: Issued
) -> None:
    proxy.iam.trust_role(TARGET, SOURCE)
    status, code, message = error(lambda: assume(proxy, source, DurationSeconds=7200))
    assert (status, code) == (400, "ValidationError")
    assert "role chaining" in message


def test_identity_policy_limits_the_caller_to_its_statements(
    proxy: AwsFaults, source: Issued
) -> None:
    proxy.iam.trust_role(TARGET, SOURCE)
    proxy.iam.allow(SOURCE, "sts:GetCallerIdentity")  # no sts:AssumeRole
    status, code, message = error(lambda: assume(proxy, source))
    assert (status, code) == (403, "AccessDenied")
    assert "no identity-based policy allows the sts:AssumeRole action" in message


def test_list_secret_version_ids_needs_its_own_permission(proxy: AwsFaults, source: Issued) -> None:
    sm, _ = seed_clients()
    name = f"iam/{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="canary-iam-list")
    proxy.iam.allow(SOURCE, "secretsmanager:GetSecretValue", "iam/*")
    web = client(proxy, "secretsmanager", source)
    assert web.get_secret_value(SecretId=name)["SecretString"] == "canary-iam-list"
    status, code, message = error(lambda: web.list_secret_version_ids(SecretId=name))
    assert (status, code) == (400, "AccessDeniedException")
    assert "secretsmanager:ListSecretVersionIds" in message
    proxy.iam.allow(SOURCE, "secretsmanager:ListSecretVersionIds", "iam/*")
    assert web.list_secret_version_ids(SecretId=name)["Versions"]


def test_get_parameter_history_needs_its_own_permission(proxy: AwsFaults, source: Issued) -> None:
    _, ssm = seed_clients()
    name = f"/iam/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    proxy.iam.allow(SOURCE, "ssm:GetParameters", "*")
    web = client(proxy, "ssm", source)
    status, code, message = error(lambda: web.get_parameter_history(Name=name))
    assert (status, code) == (400, "AccessDeniedException")
    assert "ssm:GetParameterHistory" in message


def test_list_secrets_refuses_filter_values_outside_the_services_pattern(
    proxy: AwsFaults, source: Issued
) -> None:
    # AWS checks each filter value against ^\!?[a-zA-Z0-9 :_@\/\+\=\.\-\!]*$ (botocore's
    # model has the pattern, boto3 does not check it): a tag value "café", valid on a
    # secret, is a ValidationException as a filter value. Moto accepts it; the proxy not.
    proxy.grant(SOURCE, "secretsmanager:ListSecrets")
    web = client(proxy, "secretsmanager", source)
    status, code, message = error(
        lambda: web.list_secrets(Filters=[{"Key": "tag-value", "Values": ["café"]}])
    )
    assert (status, code) == (400, "ValidationException")
    assert "filters.1.member.values" in message and "regular expression pattern" in message
    assert "SecretList" in web.list_secrets(Filters=[{"Key": "tag-value", "Values": ["cafe"]}])
