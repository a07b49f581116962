"""The ``aws`` backend against moto (server mode) through a fault-injecting proxy:
real boto3 clients, real wire protocol, everything on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from keyferry_fakes.aws_agent import (
    PodIdentityAgent,
    closed_port_url,
    ipv6_loopback_available,
)
from keyferry_fakes.aws_faults import AwsFaults, seed_clients
from keyferry_fakes.aws_stack import (
    IRSA,
    POD,
    POD_IDENTITY,
    ROLE,
    files,
    modes,
    pod_token,
    versions,
)
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import Issuer
from provider.errors import Code, KeyferryError
from tests.clouds.aws.conftest import MakeStack


def uid() -> str:
    return uuid.uuid4().hex[:10]


def objects(*items: dict[str, Any]) -> str:
    return json.dumps(list(items))


def sm_obj(name: str, **extra: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", **extra}


def ssm_obj(name: str, **extra: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "ssmparameter", **extra}


def code_of(exc: pytest.ExceptionInfo[KeyferryError]) -> Code:
    return exc.value.code


# ------------------------------------------------------------ Secrets Manager


def test_secrets_manager_by_name_arn_version_id_stage_and_binary(make_stack: MakeStack) -> None:
    sm, _ = seed_clients()
    p = uid()
    first = sm.create_secret(Name=f"{p}/db", SecretString='{"user": "admin", "pass": "s3cret"}')
    second = sm.put_secret_value(
        SecretId=f"{p}/db", SecretString='{"user": "admin", "pass": "n3w"}'
    )
    binary = sm.create_secret(Name=f"{p}-bin", SecretBinary=b"\x00\xffraw")
    stack = make_stack()
    result = stack.mount(
        {
            "objects": objects(
                sm_obj(f"{p}/db", jmesPath=[{"path": "pass", "objectAlias": "pass"}]),
                sm_obj(first["ARN"], objectAlias="by-arn"),
                sm_obj(f"{p}/db", objectAlias="pinned", objectVersion=first["VersionId"]),
                sm_obj(f"{p}/db", objectAlias="previous", objectVersionLabel="AWSPREVIOUS"),
                sm_obj(f"{p}-bin", filePermission="0600"),
            )
        }
    )
    got = files(result)
    assert got[f"{p}_db"] == b'{"user": "admin", "pass": "n3w"}'
    assert got["pass"] == b"n3w"
    assert got["by-arn"] == got[f"{p}_db"]
    assert got["pinned"] == got["previous"] == b'{"user": "admin", "pass": "s3cret"}'
    assert got[f"{p}-bin"] == b"\x00\xffraw"
    assert modes(result)[f"{p}-bin"] == 0o600
    assert modes(result)["pass"] == 0o644
    v = versions(result)
    assert v[f"{p}_db"] == v["pass"] == v["by-arn"] == second["VersionId"]
    assert v["pinned"] == v["previous"] == first["VersionId"]
    assert v[f"{p}-bin"] == binary["VersionId"]


def test_batch_get_secret_value_for_current_secrets(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients()
    p = uid()
    for i in range(25):
        sm.create_secret(Name=f"{p}-{i}", SecretString=f"value-{i}")
    batched = make_stack()
    result = batched.mount({"objects": objects(*(sm_obj(f"{p}-{i}") for i in range(25)))})
    assert files(result)[f"{p}-7"] == b"value-7"
    assert proxy.count("BatchGetSecretValue") == 2
    assert proxy.count("GetSecretValue") == 0

    proxy.clear()
    single = make_stack(settings={"batch_get_secret_value": False})
    assert files(single.mount({"objects": objects(*(sm_obj(f"{p}-{i}") for i in range(25)))})) == (
        files(result)
    )
    assert proxy.count("BatchGetSecretValue") == 0
    assert proxy.count("GetSecretValue") == 25


def test_batch_denied_falls_back_and_is_remembered(make_stack: MakeStack, proxy: AwsFaults) -> None:
    sm, _ = seed_clients()
    p = uid()
    for i in range(3):
        sm.create_secret(Name=f"{p}-{i}", SecretString=f"v{i}")
    proxy.fail("BatchGetSecretValue", "AccessDeniedException", 400)
    stack = make_stack()
    params = {"objects": objects(*(sm_obj(f"{p}-{i}") for i in range(3)))}
    assert files(stack.mount(params))[f"{p}-2"] == b"v2"
    assert proxy.count("BatchGetSecretValue") == 1
    assert proxy.count("GetSecretValue") == 3
    stack.mount(params)
    assert proxy.count("BatchGetSecretValue") == 1  # not asked again for this identity
    assert proxy.count("GetSecretValue") == 6
    assert 'operation="BatchGetSecretValue",outcome="denied"' in stack.metrics_text()


def test_batch_reports_each_missing_secret(make_stack: MakeStack) -> None:
    sm, _ = seed_clients()
    p = uid()
    sm.create_secret(Name=f"{p}-ok", SecretString="v")
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj(f"{p}-ok"), sm_obj(f"{p}-gone"))})
    assert info.value.code is Code.NOT_FOUND
    assert f"{p}-gone" in info.value.message and "ResourceNotFoundException" in info.value.message
    assert f"objects[0] ({p}-ok)" not in info.value.message


# ----------------------------------------------------------------------- SSM


def test_ssm_many_parameters_versions_labels_and_types(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    _, ssm = seed_clients()
    p = uid()
    for i in range(12):
        ssm.put_parameter(Name=f"/{p}/p{i}", Value=f"v{i}", Type="String")
    ssm.put_parameter(Name=f"/{p}/multi", Value="one", Type="SecureString")
    ssm.put_parameter(Name=f"/{p}/multi", Value="two", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name=f"/{p}/multi", Value="three", Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name=f"/{p}/multi", ParameterVersion=2, Labels=["blue"])
    ssm.put_parameter(Name=f"/{p}/list", Value="a,b,c", Type="StringList")
    stack = make_stack()
    result = stack.mount(
        {
            "objects": objects(
                *(ssm_obj(f"/{p}/p{i}") for i in range(12)),
                ssm_obj(f"/{p}/multi", objectAlias="latest"),
                ssm_obj(f"/{p}/multi", objectAlias="v1", objectVersion="1"),
                ssm_obj(f"/{p}/multi", objectAlias="blue", objectVersionLabel="blue"),
                ssm_obj(f"/{p}/list", objectAlias="list"),
            )
        }
    )
    got, ver = files(result), versions(result)
    assert got[f"_{p}_p11"] == b"v11"
    assert (got["latest"], ver["latest"]) == (b"three", "3")
    assert (got["v1"], ver["v1"]) == (b"one", "1")
    assert (got["blue"], ver["blue"]) == (b"two", "2")
    assert got["list"] == b"a,b,c"
    # 16 selectors, three of one name: at least 2 calls, and never two selectors of
    # one parameter in a call.
    assert 2 <= proxy.count("GetParameters") <= 3
    for rec in proxy.requests:
        if rec.operation == "GetParameters":
            names = [n.split(":")[0] for n in json.loads(rec.body)["Names"]]
            assert len(names) == len(set(names)) and len(names) <= 10
            assert json.loads(rec.body)["WithDecryption"] is True


def test_ssm_missing_parameter_and_version(make_stack: MakeStack) -> None:
    _, ssm = seed_clients()
    p = uid()
    ssm.put_parameter(Name=f"/{p}/x", Value="v", Type="String")
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount(
            {
                "objects": objects(
                    ssm_obj(f"/{p}/x"),
                    ssm_obj(f"/{p}/x", objectVersion="9", objectAlias="nine"),
                    ssm_obj(f"/{p}/nope"),
                )
            }
        )
    assert info.value.code is Code.NOT_FOUND
    assert "version 9" in info.value.message and f"/{p}/nope" in info.value.message


# ---------------------------------------------------------------------- IRSA


def test_irsa_uses_the_pod_token_and_annotation_and_caches_credentials(
    make_stack: MakeStack, proxy: AwsFaults, kube: FakeKube
) -> None:
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="v")
    stack = make_stack()
    token = pod_token(IRSA)
    stack.mount({"objects": objects(sm_obj(name))}, tokens={IRSA: token})
    (call,) = proxy.sts_calls()
    assert call["WebIdentityToken"] == token
    assert call["RoleArn"] == ROLE
    assert call["RoleSessionName"] == "team-a.web-0"
    sm_call = next(r for r in proxy.requests if r.operation == "GetSecretValue")
    key = sm_call.headers["Authorization"].split("Credential=")[1].split("/")[0]
    assert proxy.issued[key].source == "AssumeRoleWithWebIdentity"  # the pod's STS keys
    assert proxy.role_of(key) == ROLE
    assert "app/keyferry" in sm_call.headers["User-Agent"]

    # another pod of the same service account: credentials are reused
    other = type(POD)("team-a", "web-1", "uid-1", "web")
    stack.mount(
        {"objects": objects(sm_obj(name))}, tokens={IRSA: pod_token(IRSA, other)}, pod=other
    )
    assert len(proxy.sts_calls()) == 1

    # another service account: its own role, its own STS call, its own values
    role_b = "arn:aws:iam::123456789012:role/b"
    kube.add_service_account("team-a", "batch", {"eks.amazonaws.com/role-arn": role_b})
    proxy.trust(role_b, "team-a", "batch")
    batch = type(POD)("team-a", "job-0", "uid-2", "batch")
    batch_token = pod_token(IRSA, batch)
    stack.mount({"objects": objects(sm_obj(name))}, tokens={IRSA: batch_token}, pod=batch)
    calls = proxy.sts_calls()
    assert len(calls) == 2 and calls[1]["RoleArn"].endswith("role/b")
    assert calls[1]["WebIdentityToken"] == batch_token
    assert proxy.refusals == []


def test_fresh_irsa_credentials_are_used_without_a_trip_through_the_call_gate(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    """Credentials far from expiry are what botocore would hand back without calling STS:
    a Mount takes them without a thread hop, and the STS metric counts only real calls."""
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="v")
    stack = make_stack()
    for _ in range(3):
        stack.mount({"objects": objects(sm_obj(name))}, tokens={IRSA: pod_token(IRSA)})
    assert len(proxy.sts_calls()) == 1
    sts = 'operation="AssumeRoleWithWebIdentity",outcome="ok"} 1.0'
    assert 'keyferry_backend_requests_total{backend="aws",' + sts in stack.metrics_text()


def test_values_are_cached_per_identity_only(
    make_stack: MakeStack, proxy: AwsFaults, kube: FakeKube
) -> None:
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="v")
    stack = make_stack(cache_ttl=60)
    params = {"objects": objects(sm_obj(name))}
    stack.mount(params)
    stack.mount(params)
    assert proxy.count("GetSecretValue") == 1
    kube.add_service_account(
        "team-a", "other", {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/o"}
    )
    proxy.trust("arn:aws:iam::123456789012:role/o", "team-a", "other")
    stack.mount(params, pod=type(POD)("team-a", "o-0", "u", "other"))
    assert proxy.count("GetSecretValue") == 2


def test_pinned_versions_are_not_read_again(make_stack: MakeStack, proxy: AwsFaults) -> None:
    sm, _ = seed_clients()
    name = uid()
    created = sm.create_secret(Name=name, SecretString="v")
    stack = make_stack(cache_ttl=0)
    params = {"objects": objects(sm_obj(name, objectVersion=created["VersionId"]))}
    first = stack.mount(params)
    second = stack.mount(params, current=versions(first))
    assert files(first) == files(second)
    assert proxy.count("GetSecretValue") == 1


@pytest.mark.parametrize(
    ("tokens", "needle"),
    [
        ({}, "Add '- audience: sts.amazonaws.com' to spec.tokenRequests"),
        ({POD_IDENTITY: pod_token(POD_IDENTITY)}, 'usePodIdentity: "true"'),
        ({IRSA: ""}, "is empty"),
    ],
)
def test_irsa_token_problems_name_the_fix(
    make_stack: MakeStack, proxy: AwsFaults, tokens: dict[str, str], needle: str
) -> None:
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj("x"))}, tokens=tokens)
    assert info.value.code is Code.FAILED_PRECONDITION
    assert needle in info.value.message
    assert proxy.requests == []


def test_irsa_without_role_annotation(
    make_stack: MakeStack, proxy: AwsFaults, kube: FakeKube
) -> None:
    kube.add_service_account("team-a", "plain", {})
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj("x"))}, pod=type(POD)("team-a", "p", "u", "plain"))
    assert info.value.code is Code.FAILED_PRECONDITION
    assert "eks.amazonaws.com/role-arn" in info.value.message
    assert "kubectl annotate serviceaccount -n team-a plain" in info.value.message
    assert proxy.requests == []


def test_role_whose_trust_policy_names_another_service_account_is_permission_denied(
    make_stack: MakeStack, proxy: AwsFaults, kube: FakeKube
) -> None:
    # service account api is annotated with role/web, whose trust policy names only web
    kube.add_service_account("team-a", "api", {"eks.amazonaws.com/role-arn": ROLE})
    api = type(POD)("team-a", "api-0", "uid-3", "api")
    token = pod_token(IRSA, api)
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj("x"))}, tokens={IRSA: token}, pod=api)
    assert info.value.code is Code.PERMISSION_DENIED
    message = info.value.message
    assert ROLE in message and "AccessDenied" in message
    assert "trust policy" in message and "system:serviceaccount:team-a:api" in message
    assert token not in message
    assert [r.code for r in proxy.refusals] == ["AccessDenied"]
    assert proxy.count("GetSecretValue") == proxy.count("BatchGetSecretValue") == 0


def test_token_of_another_service_account_than_the_pod_is_permission_denied(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    # the driver says the pod runs as web, but the token is api's: STS goes by the token
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount(
            {"objects": objects(sm_obj("x"))},
            tokens={IRSA: pod_token(IRSA, type(POD)("team-a", "web-0", "u", "api"))},
        )
    assert info.value.code is Code.PERMISSION_DENIED
    assert ROLE in info.value.message and "trust policy" in info.value.message


def test_expired_token_names_the_token_and_token_requests(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    stack = make_stack()
    token = pod_token(IRSA, lifetime=-30)
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj("x"))}, tokens={IRSA: token})
    assert info.value.code is Code.UNAUTHENTICATED
    message = info.value.message
    assert "ExpiredTokenException" in message and ROLE in message
    assert "sts.amazonaws.com" in message and "tokenRequests" in message
    assert "trust policy" not in message  # not the trust policy's fault
    assert token not in message
    assert [r.code for r in proxy.refusals] == ["ExpiredTokenException"]


def test_forged_token_is_unauthenticated(make_stack: MakeStack, proxy: AwsFaults) -> None:
    stack = make_stack()
    forged = Issuer().pod_token(IRSA, "team-a", "web")  # right claims, another cluster's key
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj("x"))}, tokens={IRSA: forged})
    assert info.value.code is Code.UNAUTHENTICATED
    assert "InvalidIdentityToken" in info.value.message
    assert "IAM OIDC provider" in info.value.message and "sts.amazonaws.com" in info.value.message
    assert "trust policy" not in info.value.message
    assert [r.code for r in proxy.refusals] == ["InvalidIdentityToken"]


def test_injected_sts_refusal_is_permission_denied(make_stack: MakeStack, proxy: AwsFaults) -> None:
    proxy.fail("AssumeRoleWithWebIdentity", "AccessDenied", 403)
    stack = make_stack()
    token = pod_token(IRSA)
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(sm_obj("x"))}, tokens={IRSA: token})
    assert info.value.code is Code.PERMISSION_DENIED
    assert "trust policy" in info.value.message
    assert token not in info.value.message


def test_node_identity_needs_credentials_aws_issued(
    make_stack: MakeStack, proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="via-node-role")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANODEROLE0000TEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "node-role-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    params = {"objects": objects(sm_obj(name))}
    unknown = make_stack(settings={"allow_node_identity": True})
    with pytest.raises(KeyferryError) as info:
        unknown.mount(params, tokens={})
    assert info.value.code is Code.UNAUTHENTICATED
    assert "UnrecognizedClientException" in info.value.message

    proxy.register_static("AKIANODEROLE0000TEST", "node-role-secret")
    node = make_stack(settings={"allow_node_identity": True})
    assert files(node.mount(params, tokens={}))[name] == b"via-node-role"
    assert proxy.sts_calls() == []


# -------------------------------------------------------------- Pod Identity


def test_pod_identity_presents_the_pod_token_to_the_agent(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="via-pod-identity")
    agent = PodIdentityAgent(proxy)
    agent.associate("team-a", "web", ROLE)
    token = pod_token(POD_IDENTITY)
    try:
        stack = make_stack(settings={"pod_identity": {"ipv4_url": agent.url}})
        result = stack.mount(
            {"objects": objects(sm_obj(name)), "usePodIdentity": "true"},
            tokens={POD_IDENTITY: token, IRSA: pod_token(IRSA)},
        )
        assert files(result)[name] == b"via-pod-identity"
        assert agent.seen == [token]
        assert proxy.sts_calls() == []
        call = next(r for r in proxy.requests if r.operation == "GetSecretValue")
        (issued,) = agent.issued
        assert f"Credential={issued.access_key}/" in call.headers["Authorization"]
        assert call.headers["X-Amz-Security-Token"] == issued.session_token
        stack.mount(
            {"objects": objects(sm_obj(name)), "usePodIdentity": "true"},
            tokens={POD_IDENTITY: pod_token(POD_IDENTITY)},
        )
        assert len(agent.seen) == 1  # credentials reused until near expiry
    finally:
        agent.close()


def test_pod_identity_falls_back_from_ipv4_to_ipv6(make_stack: MakeStack, proxy: AwsFaults) -> None:
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="v6")
    host = "::1" if ipv6_loopback_available() else "127.0.0.1"
    agent = PodIdentityAgent(proxy, host=host)
    agent.associate("team-a", "web", ROLE)
    token = pod_token(POD_IDENTITY)
    try:
        stack = make_stack(
            settings={"pod_identity": {"ipv4_url": closed_port_url(), "ipv6_url": agent.url}}
        )
        params = {"objects": objects(sm_obj(name)), "usePodIdentity": "t"}
        assert files(stack.mount(params, tokens={POD_IDENTITY: token}))[name] == b"v6"
        assert agent.seen == [token]
        other = type(POD)("team-a", "p2", "u", "other-sa")
        with pytest.raises(KeyferryError) as info:
            stack.mount(
                {**params, "preferredAddressType": "ipv4"},
                tokens={POD_IDENTITY: pod_token(POD_IDENTITY, other)},
                pod=other,
            )
        # retried (3 attempts) by keyferry: not left to the driver to retry on top
        assert info.value.code is Code.DEADLINE_EXCEEDED
        assert "cannot reach the Pod Identity agent" in info.value.message
        assert "3 attempts, the most allowed" in info.value.message
    finally:
        agent.close()


@pytest.mark.parametrize(
    ("token", "needle"),
    [
        (Issuer().pod_token(POD_IDENTITY, "team-a", "web"), "HTTP 400"),  # another key
        (pod_token(IRSA), "HTTP 400"),  # the IRSA audience
        (pod_token(POD_IDENTITY, lifetime=-30), "HTTP 400"),  # expired
    ],
    ids=["forged", "wrong-audience", "expired"],
)
def test_pod_identity_wrong_token_is_refused(
    make_stack: MakeStack, proxy: AwsFaults, token: str, needle: str
) -> None:
    agent = PodIdentityAgent(proxy)
    agent.associate("team-a", "web", ROLE)
    try:
        stack = make_stack(settings={"pod_identity": {"ipv4_url": agent.url}})
        with pytest.raises(KeyferryError) as info:
            stack.mount(
                {"objects": objects(sm_obj("x")), "usePodIdentity": "true"},
                tokens={POD_IDENTITY: token},
            )
        assert info.value.code is Code.PERMISSION_DENIED
        assert needle in info.value.message and "team-a/web" in info.value.message
        assert "Pod Identity association" in info.value.message
        assert "pods.eks.amazonaws.com" in info.value.message
        assert token not in info.value.message
        assert agent.issued == [] and proxy.requests == []
        with pytest.raises(KeyferryError) as missing:
            stack.mount(
                {"objects": objects(sm_obj("x")), "usePodIdentity": "true"},
                tokens={IRSA: pod_token(IRSA)},
            )
        assert "pods.eks.amazonaws.com" in missing.value.message
        assert 'usePodIdentity: "false"' in missing.value.message
    finally:
        agent.close()


def test_pod_identity_without_association_is_not_found(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    agent = PodIdentityAgent(proxy)
    agent.associate("team-a", "web", ROLE)  # web only; the pod runs as api
    api = type(POD)("team-a", "api-0", "uid-4", "api")
    try:
        stack = make_stack(settings={"pod_identity": {"ipv4_url": agent.url}})
        with pytest.raises(KeyferryError) as info:
            stack.mount(
                {"objects": objects(sm_obj("x")), "usePodIdentity": "true"},
                tokens={POD_IDENTITY: pod_token(POD_IDENTITY, api)},
                pod=api,
            )
        assert info.value.code is Code.NOT_FOUND
        assert "team-a/api" in info.value.message
        assert "create-pod-identity-association" in info.value.message
        assert agent.issued == [] and proxy.requests == []
    finally:
        agent.close()


# ---------------------------------------------------------------- failover


def _two_regions(p: str) -> tuple[str, str]:
    east, _ = seed_clients("us-east-1")
    west, _ = seed_clients("us-west-2")
    east.create_secret(Name=p, SecretString="from-east")
    made = west.create_secret(Name=p, SecretString="from-west")
    return "from-west", made["VersionId"]


@pytest.mark.parametrize(
    ("code", "status"),
    [("InternalServiceError", 500), ("ThrottlingException", 400), ("ServiceUnavailable", 503)],
)
def test_failover_on_transient_errors_reports_the_served_version(
    make_stack: MakeStack, proxy: AwsFaults, code: str, status: int
) -> None:
    p = uid()
    _, west_version = _two_regions(p)
    proxy.fail("GetSecretValue", code, status, region="us-east-1")
    stack = make_stack(settings={"max_attempts": 2})
    result = stack.mount(
        {
            "objects": objects(sm_obj(p)),
            "region": "us-east-1",
            "failoverRegion": "us-west-2",
        }
    )
    assert files(result)[p] == b"from-west"
    assert versions(result)[p] == west_version
    assert proxy.count("GetSecretValue", "us-west-2") == 1
    assert 'operation="failover",outcome="ok"' in stack.metrics_text()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDeniedException", 400, Code.PERMISSION_DENIED),
        ("ResourceNotFoundException", 400, Code.NOT_FOUND),
    ],
)
def test_no_failover_on_client_errors(
    make_stack: MakeStack, proxy: AwsFaults, code: str, status: int, expected: Code
) -> None:
    p = uid()
    _two_regions(p)
    proxy.fail("GetSecretValue", code, status, region="us-east-1")
    stack = make_stack()
    with pytest.raises(KeyferryError) as info:
        stack.mount(
            {"objects": objects(sm_obj(p)), "region": "us-east-1", "failoverRegion": "us-west-2"}
        )
    assert info.value.code is expected
    assert code in info.value.message and "us-east-1" in info.value.message
    assert proxy.count(region="us-west-2") == 0


def test_ssm_failover_uses_the_failover_object(make_stack: MakeStack, proxy: AwsFaults) -> None:
    p = uid()
    _, ssm_west = seed_clients("us-west-2")
    ssm_west.put_parameter(Name=f"/{p}/replica", Value="west-value", Type="SecureString")
    proxy.fail("GetParameters", "InternalServerError", 500, region="us-east-1")
    stack = make_stack(settings={"max_attempts": 1})
    result = stack.mount(
        {
            "objects": objects(
                ssm_obj(
                    f"/{p}/main", objectAlias="db", failoverObject={"objectName": f"/{p}/replica"}
                )
            ),
            "region": "us-east-1",
            "failoverRegion": "us-west-2",
        }
    )
    assert files(result)["db"] == b"west-value"
    assert versions(result)["db"] == "1"


def test_throttling_is_absorbed_by_retries_and_counted(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    sm, _ = seed_clients()
    name = uid()
    sm.create_secret(Name=name, SecretString="patience")
    proxy.fail("GetSecretValue", "ThrottlingException", 400, times=1)
    stack = make_stack(settings={"max_attempts": 3})
    result = stack.mount({"objects": objects(sm_obj(name)), "failoverRegion": "us-west-2"})
    assert files(result)[name] == b"patience"
    assert proxy.count(region="us-west-2") == 0
    text = stack.metrics_text()
    attempts = 'keyferry_backend_attempts_total{backend="aws",operation="GetSecretValue"'
    assert f'{attempts},outcome="throttled"}} 1.0' in text


def test_failover_failing_too_names_both_regions(make_stack: MakeStack, proxy: AwsFaults) -> None:
    proxy.fail("GetSecretValue", "InternalServiceError", 500, region="us-east-1")
    stack = make_stack(settings={"max_attempts": 1})
    with pytest.raises(KeyferryError) as info:
        stack.mount(
            {
                "objects": objects(sm_obj(f"{uid()}-nowhere")),
                "region": "us-east-1",
                "failoverRegion": "us-west-2",
            }
        )
    assert info.value.code is Code.NOT_FOUND
    assert "primary region us-east-1" in info.value.message
    assert "failover region us-west-2" in info.value.message


# ------------------------------------------------------------------ regions


def test_region_from_the_node_label_is_looked_up_once(
    make_stack: MakeStack, kube: FakeKube, proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    _, ssm = seed_clients("eu-west-3")
    p = uid()
    ssm.put_parameter(Name=f"/{p}", Value="paris", Type="String")
    kube.add_pod("team-a", "web-0", "node-1", "web")
    kube.add_node("node-1", {"topology.kubernetes.io/region": "eu-west-3"})
    stack = make_stack(settings={"region": None})
    params = {"objects": objects(ssm_obj(f"/{p}", objectAlias="v"))}
    assert files(stack.mount(params))["v"] == b"paris"
    assert proxy.count("GetParameters", "eu-west-3") == 1
    stack.mount(params)
    assert kube.requests["/api/v1/nodes/node-1"] == 1


def test_no_region_anywhere_is_a_clear_error(
    make_stack: MakeStack, kube: FakeKube, proxy: AwsFaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    kube.add_pod("team-a", "web-0", "node-2", "web")
    kube.add_node("node-2", {})
    stack = make_stack(settings={"region": None})
    with pytest.raises(KeyferryError) as info:
        stack.mount({"objects": objects(ssm_obj("/x"))})
    assert info.value.code is Code.FAILED_PRECONDITION
    assert "topology.kubernetes.io/region" in info.value.message
    assert "set 'region' in the SecretProviderClass" in info.value.message
    assert proxy.requests == []


def test_arn_region_checked_against_the_resolved_region(
    make_stack: MakeStack, proxy: AwsFaults
) -> None:
    stack = make_stack()  # server default region us-east-1
    with pytest.raises(KeyferryError) as info:
        stack.mount(
            {"objects": objects({"objectName": "arn:aws:secretsmanager:eu-west-1:1:secret:x"})}
        )
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "does not match the region 'us-east-1'" in info.value.message
    assert proxy.requests == []


# ------------------------------------------------------------- native dialect


def test_native_objects_from_two_regions_mixed_with_local(
    make_stack: MakeStack, tmp_path: Any
) -> None:
    p = uid()
    east, _ = seed_clients("us-east-1")
    _, ssm_west = seed_clients("us-west-2")
    east.create_secret(Name=f"{p}/db", SecretString='{"password": "pw"}')
    ssm_west.put_parameter(Name=f"/{p}/flag", Value="on", Type="String")
    (tmp_path / "local.txt").write_text("local-value")
    stack = make_stack(local_root=str(tmp_path))
    native = f"""
- backend: aws
  service: secretsmanager
  name: {p}/db
  extract:
    - path: db-password
      jmesPath: password
      mode: "0400"
- backend: aws
  name: arn:aws:ssm:us-west-2:123456789012:parameter/{p}/flag
  path: flag
- backend: local
  name: local.txt
"""
    result = stack.mount({"objects": native}, dialect="native")
    got = files(result)
    assert got["db-password"] == b"pw" and modes(result)["db-password"] == 0o400
    assert got["flag"] == b"on"
    assert got["local.txt"] == b"local-value"
