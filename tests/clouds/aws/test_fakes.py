"""The AWS fakes are as strict as AWS: STS (AssumeRoleWithWebIdentity), the EKS Pod
Identity agent, Secrets Manager and SSM refuse what the real services refuse.
Driven directly with boto3 (and raw HTTP for the agent), not through keyferry."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from keyferry_fakes.aws_agent import PodIdentityAgent
from keyferry_fakes.aws_faults import AwsFaults, Issued, seed_clients, sigv4_signature
from keyferry_fakes.oidc import ISSUER, Issuer

ROLE = "arn:aws:iam::123456789012:role/web"
IRSA = "sts.amazonaws.com"
POD_IDENTITY = "pods.eks.amazonaws.com"


def sts(proxy: AwsFaults) -> Any:
    return boto3.client(
        "sts",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )


def client(proxy: AwsFaults, service: str, creds: Issued | None, **override: str) -> Any:
    kwargs: dict[str, Any] = {
        "endpoint_url": proxy.url,
        "region_name": "us-east-1",
        "config": Config(retries={"total_max_attempts": 1}),
    }
    if creds is None:
        kwargs["config"] = Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1})
    else:
        kwargs["aws_access_key_id"] = override.get("access_key", creds.access_key)
        kwargs["aws_secret_access_key"] = override.get("secret_key", creds.secret_key)
        kwargs["aws_session_token"] = override.get("session_token", creds.session_token) or None
    return boto3.client(service, **kwargs)


def error(call: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call()
    resp = info.value.response
    return (
        resp["ResponseMetadata"]["HTTPStatusCode"],
        resp["Error"]["Code"],
        resp["Error"].get("Message", ""),
    )


def assume(proxy: AwsFaults, token: str, role: str = ROLE) -> Any:
    return sts(proxy).assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="team-a.web-0", WebIdentityToken=token
    )


def irsa_credentials(proxy: AwsFaults) -> Issued:
    creds = assume(proxy, ISSUER.pod_token(IRSA))["Credentials"]
    return proxy.issued[creds["AccessKeyId"]]


# ------------------------------------------------------------------------ STS


@pytest.mark.parametrize(
    ("token", "status", "code", "reason"),
    [
        ("not-a-jwt", 400, "InvalidIdentityToken", "not a JWT"),
        (Issuer().pod_token(IRSA), 400, "InvalidIdentityToken", "not signed with a key"),
        (ISSUER.pod_token(POD_IDENTITY), 400, "InvalidIdentityToken", "audience"),
        (
            ISSUER.pod_token(IRSA, issuer="https://oidc.other.test/id/X"),
            400,
            "InvalidIdentityToken",
            "issuer",
        ),
        (ISSUER.pod_token(IRSA, lifetime=-30), 400, "ExpiredTokenException", "Token expired"),
        (
            ISSUER.pod_token(IRSA, service_account="api"),
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        ),
        (
            ISSUER.pod_token(IRSA, namespace="team-b"),
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        ),
    ],
    ids=["not-jwt", "forged", "wrong-audience", "wrong-issuer", "expired", "other-sa", "other-ns"],
)
def test_sts_refuses_tokens_aws_would_refuse(
    proxy: AwsFaults, token: str, status: int, code: str, reason: str
) -> None:
    got_status, got_code, message = error(lambda: assume(proxy, token))
    assert (got_status, got_code) == (status, code)
    assert reason in message
    assert proxy.issued == {}
    assert proxy.count("AssumeRoleWithWebIdentity") == 1


def test_sts_role_without_a_trust_policy_for_the_cluster_is_access_denied(
    proxy: AwsFaults,
) -> None:
    other_role = "arn:aws:iam::123456789012:role/untrusted"
    status, code, _ = error(lambda: assume(proxy, ISSUER.pod_token(IRSA), other_role))
    assert (status, code) == (403, "AccessDenied")


def test_sts_issues_recorded_credentials_for_a_trusted_subject(proxy: AwsFaults) -> None:
    proxy.trust("arn:aws:iam::123456789012:role/jobs", "team-a", "job-*")  # StringLike
    resp = assume(
        proxy,
        ISSUER.pod_token(IRSA, service_account="job-7"),
        "arn:aws:iam::123456789012:role/jobs",
    )
    key = resp["Credentials"]["AccessKeyId"]
    assert proxy.role_of(key) == "arn:aws:iam::123456789012:role/jobs"
    assert proxy.issued[key].session_token == resp["Credentials"]["SessionToken"]
    assert proxy.refusals == []


# ------------------------------------------------------ Secrets Manager, SSM


@pytest.fixture
def secret() -> str:
    sm, _ = seed_clients()
    name = f"strict-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="only-for-issued-credentials")
    return name


@pytest.fixture
def parameter() -> str:
    _, ssm = seed_clients()
    name = f"/strict/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=name, Value="only-for-issued-credentials", Type="SecureString")
    return name


INVALID = "The security token included in the request is invalid."


def _reads(service: str, name: str) -> Any:
    if service == "secretsmanager":
        return lambda c: c.get_secret_value(SecretId=name)["SecretString"]
    return lambda c: c.get_parameters(Names=[name], WithDecryption=True)["Parameters"][0]["Value"]


@pytest.mark.parametrize("service", ["secretsmanager", "ssm"])
def test_secret_stores_accept_only_credentials_the_fake_identity_issued(
    proxy: AwsFaults, secret: str, parameter: str, service: str
) -> None:
    read = _reads(service, secret if service == "secretsmanager" else parameter)
    creds = irsa_credentials(proxy)
    assert read(client(proxy, service, creds)) == "only-for-issued-credentials"

    # unsigned
    status, code, _ = error(lambda: read(client(proxy, service, None)))
    assert (status, code) == (400, "MissingAuthenticationTokenException")
    # keys nobody issued (what moto alone accepts)
    static = Issued("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "", "", 0, "static")
    assert error(lambda: read(client(proxy, service, static))) == (
        400,
        "UnrecognizedClientException",
        INVALID,
    )
    # issued key, another session token / none
    for token in ("forged-session-token", ""):
        assert error(lambda t=token: read(client(proxy, service, creds, session_token=t))) == (
            400,
            "UnrecognizedClientException",
            INVALID,
        )
    # issued key and token, wrong secret key: the SigV4 signature does not match
    status, code, message = error(
        lambda: read(client(proxy, service, creds, secret_key="not-the-secret"))
    )
    assert (status, code) == (400, "InvalidSignatureException")
    assert "signature we calculated does not match" in message
    assert [r.operation for r in proxy.refusals] == [
        "GetSecretValue" if service == "secretsmanager" else "GetParameters"
    ] * 5


@pytest.mark.parametrize("service", ["secretsmanager", "ssm"])
def test_secret_stores_refuse_expired_issued_credentials(
    proxy: AwsFaults, secret: str, parameter: str, service: str
) -> None:
    read = _reads(service, secret if service == "secretsmanager" else parameter)
    creds = irsa_credentials(proxy)
    proxy.issued[creds.access_key] = Issued(
        creds.access_key, creds.secret_key, creds.session_token, ROLE, time.time() - 1, "test"
    )
    assert error(lambda: read(client(proxy, service, creds))) == (
        400,
        "ExpiredTokenException",
        "The security token included in the request is expired",
    )


_LISTS: dict[str, tuple[str, Callable[[Any, str], list[str]]]] = {
    "secretsmanager:ListSecrets": (
        "secretsmanager",
        lambda c, name: [
            s["Name"]
            for s in c.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]
        ],
    ),
    "secretsmanager:ListSecrets (BatchGetSecretValue with Filters)": (
        "secretsmanager",
        lambda c, name: [
            s["Name"]
            for s in c.batch_get_secret_value(Filters=[{"Key": "name", "Values": [name]}])[
                "SecretValues"
            ]
        ],
    ),
    "ssm:GetParametersByPath": (
        "ssm",
        lambda c, name: [
            p["Name"] for p in c.get_parameters_by_path(Path=name.rsplit("/", 1)[0])["Parameters"]
        ],
    ),
}


@pytest.mark.parametrize("action", list(_LISTS))
def test_list_actions_are_denied_until_the_role_is_granted_them(
    proxy: AwsFaults, secret: str, parameter: str, action: str
) -> None:
    service, listing = _LISTS[action]
    name = secret if service == "secretsmanager" else parameter
    creds = irsa_credentials(proxy)
    c = client(proxy, service, creds)
    needed = action.split(" ")[0]
    status, code, message = error(lambda: listing(c, name))
    assert (status, code) == (400, "AccessDeniedException")
    assert message == (
        "User: arn:aws:sts::123456789012:assumed-role/web/keyferry is not authorized to "
        f"perform: {needed} because no identity-based policy allows the {needed} action"
    )
    proxy.grant("arn:aws:iam::123456789012:role/other", needed)  # another role's grant
    assert error(lambda: listing(c, name))[1] == "AccessDeniedException"
    proxy.grant(ROLE, needed)
    assert name in listing(c, name)
    proxy.reset()  # a reset forgets grants
    assert proxy.iam.grants == {}


def test_secrets_manager_refuses_a_stale_signature(proxy: AwsFaults, secret: str) -> None:
    creds = irsa_credentials(proxy)
    host = proxy.url.removeprefix("http://")
    body = json.dumps({"SecretId": secret}).encode()

    def signed_at(amz_date: str) -> urllib.request.Request:
        """GetSecretValue signed with the issued credentials as of ``amz_date``."""
        headers = {
            "Host": host,
            "X-Amz-Target": "secretsmanager.GetSecretValue",
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Date": amz_date,
            "X-Amz-Security-Token": creds.session_token,
        }
        signed = sorted(h.lower() for h in headers)
        signature = sigv4_signature(
            "POST",
            "/",
            headers,
            body,
            signed_headers=signed,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.session_token,
            region="us-east-1",
            service="secretsmanager",
            amz_date=amz_date,
        )
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{amz_date[:8]}/us-east-1/"
            f"secretsmanager/aws4_request, SignedHeaders={';'.join(signed)}, "
            f"Signature={signature}"
        )
        return urllib.request.Request(proxy.url + "/", data=body, headers=headers, method="POST")

    stale = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 20 * 60))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(signed_at(stale), timeout=10)
    assert info.value.code == 400
    assert json.loads(info.value.read())["__type"] == "InvalidSignatureException"
    # the same request signed now goes through: the refusal was the clock, not the signer
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with urllib.request.urlopen(signed_at(now), timeout=10) as resp:
        assert json.loads(resp.read())["SecretString"] == "only-for-issued-credentials"


def test_registered_node_keys_are_accepted_and_others_are_not(
    proxy: AwsFaults, secret: str
) -> None:
    node = proxy.register_static("AKIANODEROLE0000TEST", "node-secret")
    read = _reads("secretsmanager", secret)
    assert read(client(proxy, "secretsmanager", node)) == "only-for-issued-credentials"
    status, code, _ = error(
        lambda: read(client(proxy, "secretsmanager", node, access_key="AKIANODEROLE0000FAKE"))
    )
    assert (status, code) == (400, "UnrecognizedClientException")


# -------------------------------------------------------------- Pod Identity


@pytest.fixture
def agent(proxy: AwsFaults) -> Iterator[PodIdentityAgent]:
    fake = PodIdentityAgent(proxy)
    fake.associate("team-a", "web", ROLE)
    yield fake
    fake.close()


def agent_get(agent: PodIdentityAgent, token: str | None) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": token}
    request = urllib.request.Request(agent.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize(
    ("token", "status", "needle"),
    [
        (None, 400, "Service account token cannot be empty"),
        ("not-a-jwt", 400, "cannot be parsed"),
        (Issuer().pod_token(POD_IDENTITY), 400, "(InvalidTokenException)"),
        (ISSUER.pod_token(IRSA), 400, "(InvalidTokenException)"),
        (ISSUER.pod_token(POD_IDENTITY, lifetime=-30), 400, "token is expired"),
        (ISSUER.pod_token(POD_IDENTITY, service_account="api"), 404, "ResourceNotFoundException"),
    ],
    ids=["no-token", "not-jwt", "forged", "wrong-audience", "expired", "no-association"],
)
def test_agent_refuses_what_the_eks_pod_identity_agent_refuses(
    proxy: AwsFaults, agent: PodIdentityAgent, token: str | None, status: int, needle: str
) -> None:
    got_status, body = agent_get(agent, token)
    assert (got_status, needle in body) == (status, True)
    assert agent.issued == [] and proxy.issued == {}


def test_agent_credentials_are_the_associated_roles_and_accepted(
    proxy: AwsFaults, agent: PodIdentityAgent, secret: str
) -> None:
    status, body = agent_get(agent, ISSUER.pod_token(POD_IDENTITY))
    assert status == 200
    doc = json.loads(body)
    (issued,) = agent.issued
    assert doc["AccessKeyId"] == issued.access_key and proxy.role_of(issued.access_key) == ROLE
    sm = boto3.client(
        "secretsmanager",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id=doc["AccessKeyId"],
        aws_secret_access_key=doc["SecretAccessKey"],
        aws_session_token=doc["Token"],
    )
    assert sm.get_secret_value(SecretId=secret)["SecretString"] == "only-for-issued-credentials"
    assert proxy.requests[-1].operation == "GetSecretValue"
    assert proxy.sts_calls() == []  # EKS Auth is not a request through the proxy
