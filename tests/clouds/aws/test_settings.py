"""Server configuration of the aws backend: typed, strict, endpoints only from here."""

from __future__ import annotations

import pytest

from provider.clouds.aws.errors import classify, from_code
from provider.clouds.aws.settings import AwsSettings, parse
from provider.errors import Code, ConfigError


def test_defaults_and_aws_region_from_the_environment() -> None:
    s = parse({}, env={"AWS_REGION": "eu-central-1"})
    assert s.region == "eu-central-1"
    assert s.retry_mode == "standard" and s.max_attempts == 3
    assert s.pod_identity_ipv4_url == "http://169.254.170.23/v1/credentials"
    assert s.pod_identity_ipv6_url == "http://[fd00:ec2::23]/v1/credentials"
    assert not s.allow_node_identity


def test_endpoints_per_service_with_region_placeholder() -> None:
    s = parse(
        {
            "endpoint_url": "http://127.0.0.1:5000",
            "endpoints": {"sts": "https://sts-fips.{region}.amazonaws.com"},
            "pod_identity": {"ipv4_url": "http://127.0.0.1:1/v1/credentials", "timeout_seconds": 1},
            "retry_mode": "adaptive",
            "allow-node-identity": "true",
        },
        env={},
    )
    assert s.endpoint("sts", "us-west-2") == "https://sts-fips.us-west-2.amazonaws.com"
    assert s.endpoint("ssm", "us-west-2") == "http://127.0.0.1:5000"
    assert s.pod_identity_timeout_seconds == 1.0
    assert s.allow_node_identity and s.retry_mode == "adaptive"
    assert AwsSettings().endpoint("ssm", "us-east-1") is None


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"regoin": "us-east-1"}, "did you mean 'region'"),
        ({"retry_mode": "legacy"}, "standard or adaptive"),
        ({"max_attempts": 0}, "greater than 0"),
        ({"max_attempts": 50}, "at most 10"),
        ({"region": "moon-1"}, "not an AWS region"),
        ({"endpoints": {"kms": "http://x"}}, "unknown service"),
        ({"endpoints": {"sts": "ftp://x"}}, "not an http(s) URL"),
        ({"pod_identity": {"url": "http://x"}}, "unknown setting"),
        ({"allow_node_identity": "maybe"}, "not a boolean"),
    ],
)
def test_bad_settings_fail_at_start(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(raw, env={})
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("code", "status", "expected", "transient"),
    [
        ("ThrottlingException", 400, Code.UNAVAILABLE, True),
        ("InternalServiceError", 500, Code.UNAVAILABLE, True),
        ("ResourceNotFoundException", 400, Code.NOT_FOUND, False),
        ("AccessDeniedException", 400, Code.PERMISSION_DENIED, False),
        ("DecryptionFailure", 400, Code.PERMISSION_DENIED, False),
        ("ExpiredTokenException", 400, Code.UNAUTHENTICATED, False),
        ("InvalidRequestException", 400, Code.FAILED_PRECONDITION, False),
    ],
)
def test_error_classes_and_failover_eligibility(
    code: str, status: int, expected: Code, transient: bool
) -> None:
    failure = from_code(code, status, "msg", "secret 'x' in us-east-1")
    assert failure.error.code is expected
    assert failure.transient is transient
    assert "secret 'x' in us-east-1" in failure.error.message


def test_network_errors_may_fail_over() -> None:
    from botocore.exceptions import EndpointConnectionError

    failure = classify(EndpointConnectionError(endpoint_url="http://x"), "what")
    assert failure.transient and failure.error.code is Code.UNAVAILABLE


@pytest.mark.parametrize(
    ("patterns", "role", "allowed"),
    [
        ("*", "arn:aws:iam::210987654321:role/any", True),
        ("arn:aws:iam::210987654321:role/*", "arn:aws:iam::210987654321:role/reader", True),
        ("arn:aws:iam::210987654321:role/*", "arn:aws:iam::111111111111:role/reader", False),
        # as in IAM policies, '*' spans '/': a path is part of the role's name
        ("arn:aws:iam::210987654321:role/app-*", "arn:aws:iam::210987654321:role/app-x/y", True),
        ("arn:aws:iam::210987654321:role/app-?", "arn:aws:iam::210987654321:role/app-1", True),
        ("arn:aws:iam::210987654321:role/app-?", "arn:aws:iam::210987654321:role/app-12", False),
        # IAM has no character classes: '[' is itself (fnmatch would read a class)
        ("arn:aws:iam::210987654321:role/[ab]", "arn:aws:iam::210987654321:role/a", False),
        ("arn:aws:iam::210987654321:role/[ab]", "arn:aws:iam::210987654321:role/[ab]", True),
        # case matters, as it does in an ARN
        ("arn:aws:iam::210987654321:role/Reader", "arn:aws:iam::210987654321:role/reader", False),
        (" arn:aws:iam::1:role/a , arn:aws:iam::2:role/b ", "arn:aws:iam::2:role/b", True),
    ],
)
def test_role_chaining_roles_match_as_iam_wildcards(
    patterns: str, role: str, allowed: bool
) -> None:
    assert AwsSettings(role_chaining_roles=patterns).may_assume(role) is allowed
