"""The Google fakes refuse what Google refuses.

Each fake is driven directly, with the real client (google-auth for STS and the
OAuth2 token endpoint, the Secret Manager / Parameter Manager clients over gRPC)
or raw HTTP where the exact status and body matter. A positive control in each
group shows the refusals are about the credential, not a broken fake.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.auth import crypt, identity_pool, impersonated_credentials
from google.auth import exceptions as auth_exceptions
from google.auth import jwt as google_jwt
from google.auth.transport.requests import Request
from google.cloud import parametermanager_v1, secretmanager_v1
from google.cloud.parametermanager_v1.services.parameter_manager.transports import (
    ParameterManagerGrpcTransport,
)
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account

from keyferry_fakes.gcp import (
    JWT_TYPE,
    SCOPE,
    SECRET_ACCESSOR,
    SECRET_VIEWER,
    TOKEN_CREATOR,
    GoogleStack,
    pod_token,
    service_account_resource,
)
from keyferry_fakes.oidc import ISSUER, Issuer

GSA = "app@my-project.iam.gserviceaccount.com"
SECRET = "projects/my-project/secrets/db/versions/1"
PARAMETER = "projects/my-project/locations/global/parameters/app/versions/v1"


@pytest.fixture
def stack(google: GoogleStack) -> GoogleStack:
    google.secret_manager.add_version("my-project", "db", b"s3cret")
    google.parameter_manager.add_version("my-project", "app", "v1", b"mode: prod\n")
    return google


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body = urllib.parse.urlencode(form).encode()
    return post(url, body, {"Content-Type": "application/x-www-form-urlencoded"})


# -- STS ------------------------------------------------------------------------------


def sts_form(stack: GoogleStack, subject_token: str, **over: str) -> dict[str, str]:
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token_type": JWT_TYPE,
        "audience": stack.google.audience,
        "scope": SCOPE,
        "subject_token": subject_token,
        **over,
    }


class _Supplier(identity_pool.SubjectTokenSupplier):
    def __init__(self, token: str) -> None:
        self.token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self.token


def sts_credentials(stack: GoogleStack, token: str, audience: str = "") -> Any:
    return identity_pool.Credentials(
        audience=audience or stack.google.audience,
        subject_token_type=JWT_TYPE,
        token_url=stack.identity.sts_url,
        subject_token_supplier=_Supplier(token),
        scopes=[SCOPE],
    )


def test_sts_exchanges_a_pod_token_signed_by_the_cluster(stack: GoogleStack) -> None:
    creds = sts_credentials(stack, pod_token("team-a", "web", stack.google.pool))
    creds.refresh(Request())
    issued = stack.google.caller(f"Bearer {creds.token}")
    assert issued is not None and issued.kind == "federated"
    assert issued.principal == stack.google.federated_principal("team-a", "web")
    assert f"serviceAccount:{stack.google.pool}[team-a/web]" in issued.members


def test_sts_refuses_a_forged_token_through_google_auth(stack: GoogleStack) -> None:
    # Same issuer URL and claims, another signing key: only the signature tells.
    forged = Issuer().pod_token(stack.google.pool, "team-a", "web")
    with pytest.raises(auth_exceptions.OAuthError) as info:
        sts_credentials(stack, forged).refresh(Request())
    assert "invalid_grant" in str(info.value) and "signature" in str(info.value)
    assert not any(t.kind == "federated" for t in stack.google.tokens.values())


@pytest.mark.parametrize(
    ("token", "error", "words"),
    [
        (lambda s: Issuer().pod_token(s.google.pool), "invalid_grant", "signature"),
        (lambda s: pod_token("team-a", "web", "sts.amazonaws.com"), "invalid_grant", "audience"),
        (
            lambda s: pod_token("team-a", "web", s.google.pool, lifetime=-5),
            "invalid_grant",
            "stale",
        ),
        (
            lambda s: pod_token("team-a", "web", s.google.pool, issuer="https://evil.test"),
            "invalid_grant",
            "issuer",
        ),
        (lambda s: "jwt-of-web-0", "invalid_grant", "Unable to parse"),
        (
            lambda s: pod_token("team-a", "web", s.google.pool, subject="admin"),
            "invalid_grant",
            "not a Kubernetes service account",
        ),
    ],
    ids=["forged", "wrong-audience", "expired", "wrong-issuer", "not-a-jwt", "odd-subject"],
)
def test_sts_refuses_bad_subject_tokens(
    stack: GoogleStack, token: Any, error: str, words: str
) -> None:
    status, body = post_form(stack.identity.sts_url, sts_form(stack, token(stack)))
    assert status == 400, body
    assert body["error"] == error
    assert words in body["error_description"]


def test_sts_refuses_tokens_when_the_provider_trusts_another_issuer(stack: GoogleStack) -> None:
    # The cluster is not the one registered with this pool provider.
    stack.google.provider_issuer = "https://container.googleapis.com/v1/projects/x/clusters/other"
    status, body = post_form(
        stack.identity.sts_url, sts_form(stack, pod_token("team-a", "web", stack.google.pool))
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    assert ISSUER.url in body["error_description"] and "expected" in body["error_description"]


@pytest.mark.parametrize(
    ("audience", "error"),
    [
        ("identitynamespace:my-project.svc.id.goog:https://other-provider", "invalid_target"),
        ("my-project.svc.id.goog", "invalid_request"),
    ],
    ids=["unknown-provider", "malformed"],
)
def test_sts_refuses_an_audience_that_is_not_the_pool_provider(
    stack: GoogleStack, audience: str, error: str
) -> None:
    token = pod_token("team-a", "web", stack.google.pool)
    status, body = post_form(stack.identity.sts_url, sts_form(stack, token, audience=audience))
    assert (status, body["error"]) == (400, error)
    assert "audience" in body["error_description"]


# -- IAM Credentials ----------------------------------------------------------------------


def generate(
    stack: GoogleStack, gsa: str, token: str | None, **body: Any
) -> tuple[int, dict[str, Any]]:
    url = f"{stack.identity.url}/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken"
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    payload = {"scope": [SCOPE], "lifetime": "3600s", **body}
    return post(url, json.dumps(payload).encode(), headers)


def test_iam_credentials_needs_a_live_token_issued_by_google(stack: GoogleStack) -> None:
    stack.google.bind(GSA, "team-a", "web")
    expired = stack.google.federated_token("team-a", "web", lifetime=-1)
    cases = [None, "ya29.made-up", expired, pod_token("team-a", "web", stack.google.pool)]
    for token in cases:
        status, body = generate(stack, GSA, token)
        assert status == 401, (token, body)
        assert body["error"]["status"] == "UNAUTHENTICATED"
    status, body = generate(stack, GSA, stack.google.federated_token("team-a", "web"))
    assert status == 200 and stack.google.caller(f"Bearer {body['accessToken']}") is not None


def test_iam_credentials_needs_the_workload_identity_binding(stack: GoogleStack) -> None:
    stack.google.bind(GSA, "team-a", "web")
    status, body = generate(stack, GSA, stack.google.federated_token("team-a", "other"))
    assert status == 403
    assert body["error"]["status"] == "PERMISSION_DENIED"
    assert body["error"]["message"] == (
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    )
    # a token for the GSA itself, or one without the cloud-platform scope, is no better
    status, _ = generate(
        stack, GSA, stack.google.service_account_token("x@p.iam.gserviceaccount.com")
    )
    assert status == 403
    unscoped = stack.google.federated_token("team-a", "web", scopes=[])
    status, body = generate(stack, GSA, unscoped)
    assert status == 403 and "insufficient authentication scopes" in body["error"]["message"]


def test_iam_credentials_accepts_the_gke_member_syntax(stack: GoogleStack) -> None:
    stack.google.grant(
        service_account_resource(GSA),
        "roles/iam.workloadIdentityUser",
        f"serviceAccount:{stack.google.pool}[team-a/web]",
    )
    status, _ = generate(stack, GSA, stack.google.federated_token("team-a", "web"))
    assert status == 200


def test_iam_credentials_checks_every_link_of_a_delegation_chain(stack: GoogleStack) -> None:
    delegate = "d1@my-project.iam.gserviceaccount.com"
    stack.google.bind(delegate, "team-a", "web")
    token = stack.google.federated_token("team-a", "web")
    chain = {"delegates": [f"projects/-/serviceAccounts/{delegate}"]}
    status, _ = generate(stack, GSA, token, **chain)
    assert status == 403  # the delegate may not mint tokens for the GSA
    stack.google.grant(service_account_resource(GSA), TOKEN_CREATOR, f"serviceAccount:{delegate}")
    status, _ = generate(stack, GSA, token, **chain)
    assert status == 200


def test_iam_credentials_refusal_through_google_auth(stack: GoogleStack) -> None:
    source = oauth2_credentials.Credentials(token=stack.google.federated_token("team-a", "web"))
    target = impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=GSA,
        target_scopes=[SCOPE],
        iam_endpoint_override=(
            f"{stack.identity.url}/v1/projects/-/serviceAccounts/{GSA}:generateAccessToken"
        ),
    )
    with pytest.raises(auth_exceptions.RefreshError) as info:
        target.refresh(Request())
    assert "iam.serviceAccounts.getAccessToken" in str(info.value)


# -- Secret Manager and Parameter Manager ------------------------------------------------


def sm_client(stack: GoogleStack) -> Any:
    channel = grpc.insecure_channel(stack.secret_manager.endpoint)
    return secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(channel=channel)
    )


def pm_client(stack: GoogleStack) -> Any:
    channel = grpc.insecure_channel(stack.parameter_manager.endpoint)
    return parametermanager_v1.ParameterManagerClient(
        transport=ParameterManagerGrpcTransport(channel=channel)
    )


def access(stack: GoogleStack, token: str | None, name: str = SECRET) -> bytes:
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    resp = sm_client(stack).access_secret_version(
        request={"name": name}, metadata=metadata, retry=None, timeout=10
    )
    return bytes(resp.payload.data)


def render(stack: GoogleStack, token: str | None) -> bytes:
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    resp = pm_client(stack).render_parameter_version(
        request={"name": PARAMETER}, metadata=metadata, retry=None, timeout=10
    )
    return bytes(resp.rendered_payload)


def test_secret_manager_needs_a_live_token_issued_by_google(stack: GoogleStack) -> None:
    web = stack.google.federated_principal("team-a", "web")
    stack.secret_manager.allow("my-project", "db", web)
    with pytest.raises(core_exceptions.Unauthenticated) as info:
        access(stack, None)
    assert "missing required authentication credential" in str(info.value)
    expired = stack.google.federated_token("team-a", "web", lifetime=-1)
    for token in ("ya29.made-up", expired, pod_token("team-a", "web", stack.google.pool)):
        with pytest.raises(core_exceptions.Unauthenticated) as info:
            access(stack, token)
        assert "invalid authentication credentials" in str(info.value)
    assert access(stack, stack.google.federated_token("team-a", "web")) == b"s3cret"


def test_secret_manager_needs_secret_accessor(stack: GoogleStack) -> None:
    sm = stack.secret_manager
    sm.add_version("my-project", "other", b"x")
    sm.allow("my-project", "other", stack.google.federated_principal("team-a", "web"))
    token = stack.google.federated_token("team-a", "web")
    with pytest.raises(core_exceptions.PermissionDenied) as info:
        access(stack, token)  # a grant on another secret gives nothing here
    assert (
        f"Permission 'secretmanager.versions.access' denied for resource '{SECRET}' "
        "(or it may not exist)."
    ) in str(info.value)
    # without the permission a missing secret is indistinguishable from a denied one
    with pytest.raises(core_exceptions.PermissionDenied):
        access(stack, token, "projects/my-project/secrets/missing/versions/1")
    stack.google.grant("projects/my-project", SECRET_ACCESSOR, f"serviceAccount:{GSA}")
    gsa_token = stack.google.service_account_token(GSA)
    assert access(stack, gsa_token) == b"s3cret"
    with pytest.raises(core_exceptions.NotFound):
        access(stack, gsa_token, "projects/my-project/secrets/missing/versions/1")
    unscoped = stack.google.service_account_token(GSA, scopes=[])
    with pytest.raises(core_exceptions.PermissionDenied) as info:
        access(stack, unscoped)
    assert "insufficient authentication scopes" in str(info.value)


def test_parameter_manager_needs_a_token_and_a_project_grant(stack: GoogleStack) -> None:
    with pytest.raises(core_exceptions.Unauthenticated):
        render(stack, None)
    with pytest.raises(core_exceptions.Unauthenticated):
        render(stack, "ya29.made-up")
    token = stack.google.federated_token("team-a", "web")
    with pytest.raises(core_exceptions.PermissionDenied) as info:
        render(stack, token)
    assert "parametermanager.parameterVersions.render" in str(info.value)
    stack.google.allow_project(stack.google.federated_principal("team-a", "web"))
    assert render(stack, token) == b"mode: prod\n"
    # a grant on my-project says nothing about team-a/other
    with pytest.raises(core_exceptions.PermissionDenied):
        render(stack, stack.google.federated_token("team-a", "other"))


# -- OAuth2 token endpoint (service-account keys) -----------------------------------------


def key_credentials(stack: GoogleStack, key_json: str) -> Any:
    info = {**json.loads(key_json), "token_uri": f"{stack.identity.url}/token"}
    return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])


def test_oauth2_issues_tokens_only_for_registered_keys(stack: GoogleStack) -> None:
    email = "keyed@my-project.iam.gserviceaccount.com"
    good = stack.identity.service_account_key(email)
    creds = key_credentials(stack, good)
    creds.refresh(Request())
    assert stack.google.caller(f"Bearer {creds.token}") is not None
    # a key Google never issued for this account (same key id, other private key)
    forged = json.loads(stack.identity.service_account_key("someone@else.iam.gserviceaccount.com"))
    forged["client_email"] = email
    forged["private_key_id"] = json.loads(good)["private_key_id"]
    with pytest.raises(auth_exceptions.RefreshError) as info:
        key_credentials(stack, json.dumps(forged)).refresh(Request())
    assert "Invalid JWT Signature" in str(info.value)
    forged["client_email"] = "unknown@my-project.iam.gserviceaccount.com"
    with pytest.raises(auth_exceptions.RefreshError) as info:
        key_credentials(stack, json.dumps(forged)).refresh(Request())
    assert "account not found" in str(info.value)


@pytest.mark.parametrize(
    ("claims", "error", "words"),
    [
        ({"aud": "http://127.0.0.1/token"}, "invalid_grant", "Failed audience check"),
        ({"exp": -10}, "invalid_grant", "short-lived"),
        ({"exp": 7200}, "invalid_grant", "short-lived"),
        ({"scope": ""}, "invalid_scope", "scope"),
    ],
    ids=["wrong-audience", "expired", "too-long", "no-scope"],
)
def test_oauth2_checks_the_assertion(
    stack: GoogleStack, claims: dict[str, Any], error: str, words: str
) -> None:
    email = "keyed@my-project.iam.gserviceaccount.com"
    info = json.loads(stack.identity.service_account_key(email))
    now = int(time.time())
    payload = {
        "iss": email,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
        "scope": SCOPE,
        **{k: (now + v if k == "exp" else v) for k, v in claims.items()},
    }
    signer = crypt.RSASigner.from_service_account_info(info)
    assertion = google_jwt.encode(signer, payload).decode()
    status, body = post_form(
        f"{stack.identity.url}/token",
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert (status, body["error"]) == (400, error), body
    assert words in body["error_description"]


def test_metadata_server_needs_the_metadata_flavor_header(stack: GoogleStack) -> None:
    url = f"{stack.identity.url}/computeMetadata/v1/instance/service-accounts/default/token"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    info.value.close()  # the refusal's body is not read; its connection is released here
    assert info.value.code == 403
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        token = json.loads(resp.read())["access_token"]
    assert stack.google.caller(f"Bearer {token}") is not None


# -- Secret Manager: ListSecrets --------------------------------------------------------


def list_secrets(stack: GoogleStack, token: str | None, **request: Any) -> list[Any]:
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    pager = sm_client(stack).list_secrets(
        request={"parent": "projects/my-project", **request},
        metadata=metadata,
        retry=None,
        timeout=10,
    )
    return list(pager)


@pytest.fixture
def labelled(stack: GoogleStack) -> GoogleStack:
    sm = stack.secret_manager
    sm.add_version("my-project", "web-db", b"a", labels={"app": "web", "tier": "db"})
    sm.add_version("my-project", "web-api", b"b", labels={"app": "web"})
    sm.add_version("my-project", "batch", b"c", labels={"app": "batch"})
    sm.add_version("other-project", "web-x", b"d", labels={"app": "web"})
    return stack


def test_listing_secrets_needs_a_token_and_secrets_list_on_the_project(
    labelled: GoogleStack,
) -> None:
    google = labelled.google
    web = google.federated_principal("team-a", "web")
    with pytest.raises(core_exceptions.Unauthenticated):
        list_secrets(labelled, None)
    with pytest.raises(core_exceptions.Unauthenticated):
        list_secrets(labelled, "ya29.made-up")
    token = google.federated_token("team-a", "web")
    # secretAccessor reads values but lists nothing, on the project or on a secret
    google.grant("projects/my-project", SECRET_ACCESSOR, web)
    with pytest.raises(core_exceptions.PermissionDenied) as info:
        list_secrets(labelled, token)
    assert (
        "Permission 'secretmanager.secrets.list' denied for resource 'projects/my-project' "
        "(or it may not exist)."
    ) in str(info.value)
    google.grant("projects/other-project", SECRET_VIEWER, web)
    with pytest.raises(core_exceptions.PermissionDenied):
        list_secrets(labelled, token)  # another project's grant gives nothing here
    google.grant("projects/my-project", SECRET_VIEWER, web)
    names = [s.name for s in list_secrets(labelled, token)]
    assert names == [
        "projects/1449000001/secrets/batch",
        "projects/1449000001/secrets/db",
        "projects/1449000001/secrets/web-api",
        "projects/1449000001/secrets/web-db",
    ]


def test_listing_secrets_filters_by_label_and_pages(labelled: GoogleStack) -> None:
    google = labelled.google
    google.grant("projects/my-project", SECRET_VIEWER, f"serviceAccount:{GSA}")
    token = google.service_account_token(GSA)

    def ids(text: str, **request: Any) -> list[str]:
        found = list_secrets(labelled, token, filter=text, **request)
        return [s.name.rsplit("/", 1)[1] for s in found]

    assert ids("labels.app=web") == ["web-api", "web-db"]
    assert ids("labels.app=web AND labels.tier:db") == ["web-db"]
    assert ids('labels.app="web" labels.tier:*') == ["web-db"]
    assert ids("labels.tier:*") == ["web-db"]
    assert ids("name:api") == ["web-api"]
    assert ids("labels.app=nothing") == []
    # every page of two (the fake's default) and of one is read by the client's pager
    calls = labelled.secret_manager.calls
    before = len(calls)
    assert ids("", page_size=1) == ["batch", "db", "web-api", "web-db"]
    assert len(calls) - before == 4
    assert ids("") == ["batch", "db", "web-api", "web-db"]
    assert len(calls) - before == 4 + 2


@pytest.mark.parametrize(
    "text",
    ["labels.app=web OR labels.app=batch", "NOT labels.app=web", "(labels.app=web)", "state=1"],
)
def test_listing_secrets_refuses_filters_outside_the_supported_syntax(
    labelled: GoogleStack, text: str
) -> None:
    labelled.google.grant("projects/my-project", SECRET_VIEWER, f"serviceAccount:{GSA}")
    token = labelled.google.service_account_token(GSA)
    with pytest.raises(core_exceptions.InvalidArgument) as info:
        list_secrets(labelled, token, filter=text)
    assert "Invalid filter" in str(info.value)


def test_listing_secrets_refuses_a_made_up_page_token_and_a_negative_page_size(
    labelled: GoogleStack,
) -> None:
    labelled.google.grant("projects/my-project", SECRET_VIEWER, f"serviceAccount:{GSA}")
    token = labelled.google.service_account_token(GSA)
    with pytest.raises(core_exceptions.InvalidArgument) as info:
        list_secrets(labelled, token, page_token="made-up")
    assert "Invalid page token" in str(info.value)
    with pytest.raises(core_exceptions.InvalidArgument):
        list_secrets(labelled, token, page_size=-1)


def test_a_regional_secret_manager_lists_only_its_own_location(stack: GoogleStack) -> None:
    regional = stack.regional["us-east1"]
    regional.add_version("my-project", "eu-only", b"x", labels={"app": "web"})
    stack.google.grant("projects/my-project", SECRET_VIEWER, f"serviceAccount:{GSA}")
    metadata = [("authorization", f"Bearer {stack.google.service_account_token(GSA)}")]
    client = secretmanager_v1.SecretManagerServiceClient(
        transport=SecretManagerServiceGrpcTransport(
            channel=grpc.insecure_channel(regional.endpoint)
        )
    )
    found = client.list_secrets(
        request={"parent": "projects/my-project/locations/us-east1"},
        metadata=metadata,
        retry=None,
        timeout=10,
    )
    assert [s.name for s in found] == ["projects/1449000001/locations/us-east1/secrets/eu-only"]
    with pytest.raises(core_exceptions.InvalidArgument) as info:
        list(
            client.list_secrets(
                request={"parent": "projects/my-project"}, metadata=metadata, timeout=10
            )
        )
    assert "not served by this endpoint (us-east1)" in str(info.value)
