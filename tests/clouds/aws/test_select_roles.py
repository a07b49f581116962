"""``select`` with ``assumeRoleArn`` on the native socket: the pod's IRSA credentials assume
a role in another account, and the listing (ListSecrets, GetParametersByPath) and every
member's read run as that role — through a real keyferry server, boto3, the strict
SigV4/IAM proxy and moto, whose IAM (keyferry_fakes/aws_iam.py) lets the pod's role do
nothing but assume the target role, and grants the list actions to the target role only."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import grpc
import pytest

from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.harness import running_server
from keyferry_fakes.kube import FakeKube
from tests.clouds.aws.test_e2e import ROLE, files, versions
from tests.clouds.aws.test_roles import OTHER_ACCOUNT, TARGET
from tests.clouds.aws.test_select import BY_PATH, LIST_SECRETS, failure, mount, native

CANARY = "CANARY-aws-chained-select-4e1d"
CHAINING = {"allow_role_chaining": True}
LISTINGS = 'keyferry_cache_events_total{cache="aws-listings",result="%s"}'


def server(tmp_path: Path, proxy: AwsFaults, kube: FakeKube, **aws: Any) -> Any:
    return running_server(
        tmp_path,
        providers="keyferry",
        backends={"aws": {"endpoint_url": proxy.url, "region": "us-east-1", **aws}},
        kubernetes=kube.settings(),
        cache_ttl_seconds=300,
    )


def signers(proxy: AwsFaults, operation: str) -> list[str | None]:
    """The role whose credentials signed each ``operation`` request."""
    return [
        proxy.role_of(r.headers["Authorization"].split("Credential=")[1].split("/")[0])
        for r in proxy.requests
        if r.operation == operation
    ]


def assume_calls(proxy: AwsFaults) -> list[dict[str, str]]:
    return [
        {k: v[0] for k, v in parse_qs(r.body.decode()).items()}
        for r in proxy.requests
        if r.operation == "AssumeRole"
    ]


@pytest.fixture
def prefix() -> str:
    return f"xsel-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def chain(proxy: AwsFaults) -> AwsFaults:
    """TARGET trusts the pod's role (with an ExternalId); the pod's role may do nothing but
    assume TARGET (no list action, no read)."""
    proxy.iam.trust_role(TARGET, ROLE, "ext-77")
    proxy.iam.allow(ROLE, "sts:AssumeRole", TARGET)
    return proxy


def target_reads(proxy: AwsFaults, resource: str) -> None:
    """TARGET's identity policy: read below ``resource`` and the list calls."""
    for action in ("secretsmanager:*GetSecretValue", "ssm:GetParameter*"):
        proxy.iam.allow(TARGET, action, resource)
    proxy.iam.allow(TARGET, LIST_SECRETS, "*")  # ListSecrets names no resource


def other_account_secrets(prefix: str, *names: str) -> None:
    sm, _ = seed_clients(account=OTHER_ACCOUNT)
    for rel in names:
        sm.create_secret(Name=prefix + rel, SecretString=f"{CANARY}-{rel}")


def chained(select: dict[str, Any], path: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "backend": "aws",
        "select": select,
        "path": path,
        "assumeRoleArn": TARGET,
        "externalId": "ext-77",
        **extra,
    }


def test_a_prefix_selection_is_listed_and_read_as_the_role_in_the_other_account(
    tmp_path: Path, chain: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    other_account_secrets(prefix, "db-password", "api-key")
    target_reads(chain, f"{prefix}*")
    chain.grant(TARGET, LIST_SECRETS)
    own = {"backend": "aws", "select": {"namePrefix": prefix}, "path": "x"}
    with server(tmp_path, chain, kube, **CHAINING) as srv:
        code, details = failure(srv, native(own))  # the pod's own role may not list
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert f"needs {LIST_SECRETS}" in details and ROLE in details
        chain.clear()
        resp = mount(srv, native(chained({"namePrefix": prefix})))
        haystack = "\n".join(srv.logs) + srv.metrics_text()
    assert files(resp) == {
        "x/db-password": f"{CANARY}-db-password".encode(),
        "x/api-key": f"{CANARY}-api-key".encode(),
    }
    assert set(versions(resp)) == {"x", "x/db-password", "x/api-key"}
    assert CANARY not in haystack and "ext-77" not in haystack
    (call,) = assume_calls(chain)
    assert call["RoleArn"] == TARGET and call["ExternalId"] == "ext-77"
    assert call["RoleSessionName"] == "team-a.web-0"  # still names the pod
    # One listing and one batch of values, both signed by the assumed role.
    assert signers(chain, "ListSecrets") == [TARGET]
    assert signers(chain, "BatchGetSecretValue") == [TARGET]
    assert chain.count("GetSecretValue") == 0


def test_an_ssm_path_selection_is_listed_as_the_role_with_its_values(
    tmp_path: Path, chain: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    _, ssm = seed_clients(account=OTHER_ACCOUNT)
    base = "/" + prefix + "app"
    ssm.put_parameter(Name=f"{base}/url", Value="https://db", Type="String")
    ssm.put_parameter(Name=f"{base}/password", Value=CANARY, Type="SecureString")
    ssm.put_parameter(Name=f"{base}/tls/key", Value="k", Type="SecureString")
    target_reads(chain, f"{base}*")
    chain.iam.allow(TARGET, BY_PATH, f"{base}*")
    chain.grant(TARGET, BY_PATH)
    own = {"backend": "aws", "select": {"path": base}, "path": "own"}
    with server(tmp_path, chain, kube, **CHAINING) as srv:
        code, details = failure(srv, native(own))
        assert code == grpc.StatusCode.PERMISSION_DENIED and f"needs {BY_PATH}" in details
        chain.clear()
        resp = mount(srv, native(chained({"path": base, "recursive": "true"}, "cfg")))
        assert CANARY not in "\n".join(srv.logs) + srv.metrics_text()
    assert files(resp) == {
        "cfg/url": b"https://db",
        "cfg/password": CANARY.encode(),
        "cfg/tls/key": b"k",
    }
    assert signers(chain, "GetParametersByPath") == [TARGET]
    # The values came with the listing, cached under the chained principal's key: the
    # Mount's fetch, as the same principal, reads none of them again.
    assert chain.count("GetParameters") == 0


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({}, "backends.aws.allow_role_chaining"),
        (
            {**CHAINING, "role_chaining_roles": "arn:aws:iam::111111111111:role/*"},
            "backends.aws.role_chaining_roles",
        ),
    ],
)
def test_a_server_that_does_not_allow_the_chain_refuses_the_selection_before_any_call(
    tmp_path: Path,
    chain: AwsFaults,
    kube: FakeKube,
    prefix: str,
    settings: dict[str, Any],
    needle: str,
) -> None:
    other_account_secrets(prefix, "a")
    chain.grant(TARGET, LIST_SECRETS, BY_PATH)
    for select in ({"namePrefix": prefix}, {"path": "/" + prefix.rstrip("/")}):
        with server(tmp_path, chain, kube, **settings) as srv:
            code, details = failure(srv, native(chained(select)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert needle in details and TARGET in details
    assert chain.requests == []  # neither the pod's credentials nor a listing


@pytest.mark.parametrize(
    ("select", "action"),
    [("namePrefix", LIST_SECRETS), ("path", BY_PATH)],
)
def test_a_target_role_without_the_list_grant_is_permission_denied_naming_it(
    tmp_path: Path, chain: AwsFaults, kube: FakeKube, prefix: str, select: str, action: str
) -> None:
    other_account_secrets(prefix, "a")
    target_reads(chain, f"{prefix}*")
    chain.grant(ROLE, LIST_SECRETS, BY_PATH)  # the pod's own role's grant does not help
    value = prefix if select == "namePrefix" else "/" + prefix.rstrip("/")
    with server(tmp_path, chain, kube, **CHAINING) as srv:
        code, details = failure(srv, native(chained({select: value})))
        assert CANARY not in "\n".join(srv.logs)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"role {TARGET} (assumed by role {ROLE}" in details
    assert f"needs {action}" in details and "ext-77" not in details
    operation = action.split(":")[1]
    assert [r.operation for r in chain.refusals] == [operation]
    assert signers(chain, operation) == [TARGET]
    assert chain.count("BatchGetSecretValue") == 0


def test_listings_are_cached_apart_for_the_pod_role_and_each_target_role(
    tmp_path: Path, chain: AwsFaults, kube: FakeKube, prefix: str
) -> None:
    """The same prefix lists different secrets as the pod's role (its own account) and as
    the target role (the other account); a cached listing of one is never served to the
    other, nor to a second target role that may not list."""
    sm, _ = seed_clients()
    sm.create_secret(Name=prefix + "mine", SecretString="mine")
    other_account_secrets(prefix, "theirs")
    second = f"arn:aws:iam::{OTHER_ACCOUNT}:role/no-list"
    chain.iam.trust_role(second, ROLE)
    chain.iam.allow(ROLE, "sts:AssumeRole", second)
    chain.iam.allow(ROLE, LIST_SECRETS, "*")
    chain.iam.allow(ROLE, "secretsmanager:*GetSecretValue", f"{prefix}*")
    target_reads(chain, f"{prefix}*")
    chain.grant(ROLE, LIST_SECRETS)
    chain.grant(TARGET, LIST_SECRETS)
    own = {"backend": "aws", "select": {"namePrefix": prefix}, "path": "own"}
    theirs = chained({"namePrefix": prefix}, "theirs")
    with server(tmp_path, chain, kube, **CHAINING) as srv:
        for _ in range(2):
            assert files(mount(srv, native(own))) == {"own/mine": b"mine"}
            got = files(mount(srv, native(theirs)))
            assert got == {"theirs/theirs": f"{CANARY}-theirs".encode()}
        both = files(mount(srv, native(own, theirs)))
        assert set(both) == {"own/mine", "theirs/theirs"}
        assert signers(chain, "ListSecrets") == [ROLE, TARGET]  # one listing per principal
        assert srv.metric(LISTINGS % "miss") == 2 and srv.metric(LISTINGS % "hit") == 4
        # A second target role asks for the same prefix: listed as itself, and refused.
        code, details = failure(srv, native({**theirs, "assumeRoleArn": second}))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert f"role {second}" in details and f"needs {LIST_SECRETS}" in details
    assert signers(chain, "ListSecrets") == [ROLE, TARGET, second]
