"""Role chaining (``assumeRoleArn``): the pod's IRSA or Pod Identity credentials assume a
role in another account, and the secret is read as that role — against moto behind the
strict proxy, whose IAM (keyferry_fakes/aws_iam.py) lets only the target role read it."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

import pytest

from keyferry_fakes.aws_agent import PodIdentityAgent
from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.aws_stack import IRSA, POD_IDENTITY, ROLE, files, pod_token
from provider.errors import Code, KeyferryError
from tests.clouds.aws.conftest import MakeStack

OTHER_ACCOUNT = "210987654321"
TARGET = f"arn:aws:iam::{OTHER_ACCOUNT}:role/secrets-reader"
CHAINING = {"allow_role_chaining": True}


def uid() -> str:
    return uuid.uuid4().hex[:10]


def cross_account_secret(proxy: AwsFaults, value: str, external_id: str = "") -> str:
    """A secret in the other account that only TARGET may read; TARGET trusts ROLE."""
    sm, _ = seed_clients(account=OTHER_ACCOUNT)
    name = f"shared/{uid()}"
    sm.create_secret(Name=name, SecretString=value)
    proxy.iam.trust_role(TARGET, ROLE, external_id)
    proxy.iam.allow(TARGET, "secretsmanager:GetSecretValue", f"{name}*")
    proxy.iam.allow(ROLE, "sts:AssumeRole", TARGET)  # role/web may do nothing else
    return name


def native(name: str, **extra: str) -> dict[str, str]:
    lines = ["- backend: aws", "  service: secretsmanager", f"  name: {name}", "  path: value"]
    lines += [f"  {k}: {v!r}" for k, v in extra.items()]
    return {"objects": "\n".join(lines)}


def assume_calls(proxy: AwsFaults) -> list[dict[str, str]]:
    return [
        {k: v[0] for k, v in parse_qs(r.body.decode()).items()}
        for r in proxy.requests
        if r.operation == "AssumeRole"
    ]


def test_irsa_credentials_assume_the_target_role_and_read_as_it(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-cross-account-7Q", external_id="ext-1234")
    stack = make_stack(settings=CHAINING)
    params = native(name, assumeRoleArn=TARGET, externalId="ext-1234")
    result = stack.mount(params, dialect="native")
    assert files(result)["value"] == b"canary-cross-account-7Q"
    (call,) = assume_calls(proxy)
    assert call["RoleArn"] == TARGET and call["ExternalId"] == "ext-1234"
    assert call["RoleSessionName"] == "team-a.web-0"  # names the pod, as the first hop does
    assert call["DurationSeconds"] == "3600"
    read = next(r for r in proxy.requests if r.operation == "GetSecretValue")
    key = read.headers["Authorization"].split("Credential=")[1].split("/")[0]
    assert proxy.role_of(key) == TARGET
    stack.mount(params, dialect="native")
    assert len(assume_calls(proxy)) == 1  # chained credentials kept until near expiry
    assert "canary-cross-account-7Q" not in stack.metrics_text()


def test_pod_identity_credentials_assume_the_target_role(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-pod-identity-chain")
    agent = PodIdentityAgent(proxy)
    agent.associate("team-a", "web", ROLE)
    try:
        stack = make_stack(settings={**CHAINING, "pod_identity": {"ipv4_url": agent.url}})
        params = native(name, assumeRoleArn=TARGET, auth="podIdentity")
        result = stack.mount(
            params, dialect="native", tokens={POD_IDENTITY: pod_token(POD_IDENTITY)}
        )
        assert files(result)["value"] == b"canary-pod-identity-chain"
        assert proxy.sts_calls() == []  # no IRSA hop
        assert [c["RoleArn"] for c in assume_calls(proxy)] == [TARGET]
    finally:
        agent.close()


def test_without_the_chain_the_pod_role_cannot_read_the_secret(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-not-for-web")
    arn = f"arn:aws:secretsmanager:us-east-1:{OTHER_ACCOUNT}:secret:{name}"
    stack = make_stack(settings=CHAINING)
    with pytest.raises(KeyferryError) as exc:
        stack.mount(native(arn), dialect="native")
    assert exc.value.code is Code.PERMISSION_DENIED
    assert "secretsmanager:GetSecretValue" in exc.value.message


def test_server_that_forbids_chaining_fails_before_any_call(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-forbidden")
    stack = make_stack()
    with pytest.raises(KeyferryError) as exc:
        stack.mount(native(name, assumeRoleArn=TARGET), dialect="native")
    assert exc.value.code is Code.FAILED_PRECONDITION
    assert "backends.aws.allow_role_chaining" in exc.value.message
    assert proxy.operations() == []


def test_role_outside_the_allowed_roles_is_refused(make_stack: MakeStack, proxy: AwsFaults) -> None:
    name = cross_account_secret(proxy, "canary-not-listed")
    stack = make_stack(
        settings={**CHAINING, "role_chaining_roles": "arn:aws:iam::111111111111:role/*"}
    )
    with pytest.raises(KeyferryError) as exc:
        stack.mount(native(name, assumeRoleArn=TARGET), dialect="native")
    assert exc.value.code is Code.FAILED_PRECONDITION
    assert "role_chaining_roles" in exc.value.message
    assert proxy.operations() == []


def test_trust_policy_not_naming_the_pod_role_is_permission_denied_with_the_fix(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-untrusted")
    proxy.iam.role_trusts[TARGET].clear()
    stack = make_stack(settings=CHAINING)
    with pytest.raises(KeyferryError) as exc:
        stack.mount(native(name, assumeRoleArn=TARGET), dialect="native")
    assert exc.value.code is Code.PERMISSION_DENIED
    message = exc.value.message
    assert TARGET in message and f'{{"AWS": "{ROLE}"}}' in message
    assert "trust policy" in message
    assert [r.code for r in proxy.refusals] == ["AccessDenied"]


def test_wrong_external_id_is_permission_denied(make_stack: MakeStack, proxy: AwsFaults) -> None:
    name = cross_account_secret(proxy, "canary-external-id", external_id="right-id")
    stack = make_stack(settings=CHAINING)
    with pytest.raises(KeyferryError) as exc:
        stack.mount(native(name, assumeRoleArn=TARGET, externalId="wrong-id"), dialect="native")
    assert exc.value.code is Code.PERMISSION_DENIED
    assert "sts:ExternalId" in exc.value.message
    assert "wrong-id" not in exc.value.message and "right-id" not in exc.value.message


def test_chained_credentials_are_kept_per_target_role(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-a")
    other = f"arn:aws:iam::{OTHER_ACCOUNT}:role/other-reader"
    proxy.iam.trust_role(other, ROLE)
    proxy.iam.allow(ROLE, "sts:AssumeRole", other)
    proxy.iam.allow(other, "secretsmanager:GetSecretValue", f"{name}*")
    stack = make_stack(settings=CHAINING)
    objects = (
        f"- {{backend: aws, service: secretsmanager, name: {name}, path: a, "
        f"assumeRoleArn: '{TARGET}'}}\n"
        f"- {{backend: aws, service: secretsmanager, name: {name}, path: b, "
        f"assumeRoleArn: '{other}'}}\n"
    )
    result = stack.mount({"objects": objects}, dialect="native", tokens={IRSA: pod_token(IRSA)})
    assert files(result) == {"a": b"canary-a", "b": b"canary-a"}
    assert sorted(c["RoleArn"] for c in assume_calls(proxy)) == sorted([TARGET, other])


def test_chain_follows_a_remade_pod_identity(make_stack: MakeStack, proxy: AwsFaults) -> None:
    """When the pod's own entry is evicted and made anew, the chain starts from the new one
    (the old one no longer receives the pod's newest token for its refreshes)."""
    name = cross_account_secret(proxy, "canary-remade")
    stack = make_stack(settings=CHAINING)
    params = native(name, assumeRoleArn=TARGET)
    stack.mount(params, dialect="native")
    pool = stack.backend.pool
    (pod_key,) = [k for k in pool._entries if k[0] == "irsa"]
    (chain_key,) = [k for k in pool._entries if k[0] == "chained"]
    first = pool._entries[chain_key]
    del pool._entries[pod_key]
    assert files(stack.mount(params, dialect="native"))["value"] == b"canary-remade"
    second = pool._entries[chain_key]
    assert second is not first and second.fetcher.source is pool._entries[pod_key]
    assert len(assume_calls(proxy)) == 2


def test_version_history_is_listed_and_read_as_the_assumed_role(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    name = cross_account_secret(proxy, "canary-chain-v1")
    sm, _ = seed_clients(account=OTHER_ACCOUNT)
    sm.put_secret_value(SecretId=name, SecretString="canary-chain-v2")
    proxy.iam.allow(TARGET, "secretsmanager:ListSecretVersionIds", f"{name}*")
    stack = make_stack(settings=CHAINING)
    result = stack.mount(native(name, assumeRoleArn=TARGET, versionHistory="2"), dialect="native")
    assert files(result) == {"value/0": b"canary-chain-v2", "value/1": b"canary-chain-v1"}
    listing = next(r for r in proxy.requests if r.operation == "ListSecretVersionIds")
    key = listing.headers["Authorization"].split("Credential=")[1].split("/")[0]
    assert proxy.role_of(key) == TARGET
