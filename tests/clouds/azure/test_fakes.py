"""The fake Entra ID and the fake Key Vault refuse what the real services refuse.

Driven with the real azure-identity and azure-keyvault-secrets clients (and raw
HTTPS where the SDK would hide the answer). Every credential is new, so
azure-identity's in-process token cache never answers in the fake's place; each
refusal is also checked in the fake's own counters."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.parse
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientAssertionCredential, ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from keyferry_fakes.azure import (
    ASSERTION_TYPE,
    AUDIENCE,
    MANAGEMENT_RESOURCE,
    TENANT,
    VAULT_RESOURCE,
    FakeAzure,
    pod_token,
)
from keyferry_fakes.oidc import ISSUER, Issuer

OTHER_TENANT = "0c6a1f3e-5d2b-4e8f-9a7c-1b2d3e4f5a6b"
VAULT_SCOPE = f"{VAULT_RESOURCE}/.default"


@pytest.fixture
def fake(fake: FakeAzure) -> FakeAzure:
    fake.vault.add_secret("kv1", "db", "s3cret-value")
    return fake


def assertion_credential(
    fake: FakeAzure, token: str, client_id: str = "app-1", tenant: str = TENANT
) -> ClientAssertionCredential:
    return ClientAssertionCredential(
        tenant,
        client_id,
        lambda: token,
        authority=fake.entra.authority,
        connection_verify=fake.ca_path,
        retry_total=0,
    )


def secret_credential(
    fake: FakeAzure, client_id: str, secret: str, tenant: str = TENANT
) -> ClientSecretCredential:
    return ClientSecretCredential(
        tenant,
        client_id,
        secret,
        authority=fake.entra.authority,
        connection_verify=fake.ca_path,
        disable_instance_discovery=True,
        retry_total=0,
    )


class Static:
    """A credential that hands Key Vault one given access token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def secrets_client(fake: FakeAzure, credential: Any, vault: str = "kv1") -> SecretClient:
    return SecretClient(
        fake.vault.vault_url_template().replace("{name}", vault),
        credential,
        connection_verify=fake.ca_path,
        verify_challenge_resource=False,
        retry_total=0,
    )


def https(
    fake: FakeAzure, port: int, method: str, path: str, body: str = "", **headers: str
) -> tuple[int, dict[str, str], Any]:
    context = ssl.create_default_context(cafile=fake.ca_path)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read() or b"null")
    finally:
        conn.close()


def post_token(fake: FakeAzure, tenant: str, **form: str) -> tuple[int, Any]:
    status, _, body = https(
        fake,
        fake.entra.port,
        "POST",
        f"/{tenant}/oauth2/v2.0/token",
        urllib.parse.urlencode(form),
    )
    return status, body


def entra_code(exc: ClientAuthenticationError) -> str:
    return str(exc.message)


# -- Entra ID: the client assertion -------------------------------------------------------


def test_a_federated_service_account_gets_a_vault_token(fake: FakeAzure) -> None:
    cred = assertion_credential(fake, pod_token())
    token = cred.get_token(VAULT_SCOPE)
    issued = fake.entra.principal(token.token)
    assert issued is not None
    assert (issued.client_id, issued.tenant, issued.audience) == ("app-1", TENANT, VAULT_RESOURCE)
    assert issued.subject == "system:serviceaccount:team-a:web"
    assert secrets_client(fake, cred).get_secret("db").value == "s3cret-value"


def _forged_with_the_issuers_kid() -> str:
    """The pod's claims, signed by another key under the cluster key's id."""
    payload = pod_token().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return Issuer().sign(claims, kid=ISSUER.kid)


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: "jwt-of-web-0", "AADSTS50027"),
        (lambda: Issuer().pod_token(AUDIENCE, "team-a", "web"), "AADSTS700027"),
        (_forged_with_the_issuers_kid, "AADSTS700027"),
        (lambda: pod_token(issuer="https://oidc.elsewhere.test/id/X"), "AADSTS700211"),
        (lambda: pod_token(audience="sts.amazonaws.com"), "AADSTS700212"),
        (lambda: pod_token(lifetime=-120), "AADSTS700024"),
        (lambda: pod_token("team-b", "web"), "AADSTS70021"),
        (lambda: pod_token(subject="system:serviceaccount:team-a:web-admin"), "AADSTS70021"),
    ],
    ids=[
        "not-a-jwt",
        "signed-by-another-cluster",
        "forged-with-the-issuers-kid",
        "untrusted-issuer",
        "wrong-audience",
        "expired",
        "another-service-account",
        "another-subject",
    ],
)
def test_entra_refuses_assertions_the_federated_credential_does_not_trust(
    fake: FakeAzure, make_token: Any, code: str
) -> None:
    with pytest.raises(ClientAuthenticationError) as info:
        assertion_credential(fake, make_token()).get_token(VAULT_SCOPE)
    assert code in entra_code(info.value)
    assert fake.entra.errors[int(code[6:])] == 1
    assert fake.entra.issued == {}


def test_no_matching_federated_credential_quotes_issuer_subject_and_audience(
    fake: FakeAzure,
) -> None:
    status, body = post_token(
        fake,
        TENANT,
        grant_type="client_credentials",
        client_id="app-1",
        scope=VAULT_SCOPE,
        client_assertion_type=ASSERTION_TYPE,
        client_assertion=pod_token("team-c", "batch"),
    )
    assert status == 400
    assert body["error"] == "invalid_request" and body["error_codes"] == [70021]
    text = body["error_description"]
    assert text.startswith("AADSTS70021: No matching federated identity record")
    assert f"Assertion Issuer: '{ISSUER.url}'" in text
    assert "Assertion Subject: 'system:serviceaccount:team-c:batch'" in text
    assert f"Assertion Audience: '{AUDIENCE}'" in text


def test_the_assertion_type_is_required(fake: FakeAzure) -> None:
    status, body = post_token(
        fake,
        TENANT,
        grant_type="client_credentials",
        client_id="app-1",
        scope=VAULT_SCOPE,
        client_assertion=pod_token(),
    )
    assert status == 400 and body["error_codes"] == [50027]


def test_no_credential_at_all_is_refused(fake: FakeAzure) -> None:
    status, body = post_token(
        fake, TENANT, grant_type="client_credentials", client_id="app-1", scope=VAULT_SCOPE
    )
    assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [7000216])


# -- Entra ID: tenant, application, scope --------------------------------------------------


def test_unknown_tenant_is_aadsts90002(fake: FakeAzure) -> None:
    with pytest.raises(ClientAuthenticationError) as info:
        assertion_credential(fake, pod_token(), tenant=OTHER_TENANT).get_token(VAULT_SCOPE)
    assert "AADSTS90002" in entra_code(info.value)
    # MSAL's discovery (service principals) gets the same answer.
    status, _, body = https(
        fake,
        fake.entra.port,
        "GET",
        f"/{OTHER_TENANT}/v2.0/.well-known/openid-configuration",
    )
    assert status == 400 and body["error_codes"] == [90002]


def test_application_of_another_tenant_is_not_found(fake: FakeAzure) -> None:
    fake.entra.federate("app-2", "team-a", "web", tenant=OTHER_TENANT)
    with pytest.raises(ClientAuthenticationError) as info:
        assertion_credential(fake, pod_token(), client_id="app-2").get_token(VAULT_SCOPE)
    assert "AADSTS700016" in entra_code(info.value)
    # ...and in its own tenant it works.
    token = assertion_credential(fake, pod_token(), "app-2", OTHER_TENANT).get_token(VAULT_SCOPE)
    issued = fake.entra.principal(token.token)
    assert issued is not None and issued.tenant == OTHER_TENANT


def test_unknown_application_is_aadsts700016(fake: FakeAzure) -> None:
    with pytest.raises(ClientAuthenticationError) as info:
        assertion_credential(fake, pod_token(), client_id="app-404").get_token(VAULT_SCOPE)
    assert "AADSTS700016" in entra_code(info.value)


@pytest.mark.parametrize(
    ("scope", "code"),
    [
        ("https://storage.azure.com/.default", "AADSTS500011"),
        (VAULT_RESOURCE, "AADSTS1002012"),
        (f"{VAULT_RESOURCE}/secrets.read", "AADSTS1002012"),
    ],
)
def test_only_known_resources_with_default_scope_are_issued(
    fake: FakeAzure, scope: str, code: str
) -> None:
    with pytest.raises(ClientAuthenticationError) as info:
        assertion_credential(fake, pod_token()).get_token(scope)
    assert code in entra_code(info.value)


@pytest.mark.parametrize(
    "resource", ["https://vault.azure.cn", "https://vault.usgovcloudapi.net", MANAGEMENT_RESOURCE]
)
def test_other_clouds_vault_resources_are_known(fake: FakeAzure, resource: str) -> None:
    token = assertion_credential(fake, pod_token()).get_token(f"{resource}/.default")
    issued = fake.entra.principal(token.token)
    assert issued is not None and issued.audience == resource


# -- Entra ID: client secrets ---------------------------------------------------------------


def test_client_secret_checks(fake: FakeAzure) -> None:
    fake.entra.add_client_secret("sp-1", "right-secret")
    fake.entra.add_client_secret("sp-old", "old-secret", lifetime=-1)
    token = secret_credential(fake, "sp-1", "right-secret").get_token(VAULT_SCOPE)
    issued = fake.entra.principal(token.token)
    assert issued is not None and issued.client_id == "sp-1"
    for client_id, secret, code in [
        ("sp-1", "wrong-secret", "AADSTS7000215"),
        ("sp-old", "old-secret", "AADSTS7000222"),
        ("sp-404", "right-secret", "AADSTS700016"),
    ]:
        with pytest.raises(ClientAuthenticationError) as info:
            secret_credential(fake, client_id, secret).get_token(VAULT_SCOPE)
        assert code in entra_code(info.value), client_id
    # A federated-only application has no secret to match.
    with pytest.raises(ClientAuthenticationError) as info:
        secret_credential(fake, "app-1", "anything").get_token(VAULT_SCOPE)
    assert "AADSTS7000215" in entra_code(info.value)


# -- Key Vault ------------------------------------------------------------------------------


def test_vault_without_a_token_answers_the_challenge(fake: FakeAzure) -> None:
    status, headers, body = https(fake, fake.vault.port, "GET", "/kv1/secrets/db?api-version=7.5")
    assert status == 401 and body["error"]["code"] == "Unauthorized"
    assert headers["WWW-Authenticate"] == (
        f'Bearer authorization="{fake.entra.url}/{TENANT}", resource="{VAULT_RESOURCE}"'
    )


def test_vault_is_https_only(fake: FakeAzure) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.vault.port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/kv1/secrets/db?api-version=7.5")
            conn.getresponse().read()
    finally:
        conn.close()
    assert fake.vault.requests == {}


def _token_for(fake: FakeAzure, scope: str = VAULT_SCOPE, **kw: Any) -> str:
    return assertion_credential(fake, pod_token(), **kw).get_token(scope).token


def test_vault_refuses_tokens_it_cannot_trust(fake: FakeAzure) -> None:
    fake.entra.federate("app-1", "team-a", "web", tenant=OTHER_TENANT)
    expired = _token_for(fake)
    record = fake.entra.principal(expired)
    assert record is not None
    record.expires = time.time() - 1
    cases = {
        "made-up": ("not-a-token-from-entra", "signature"),
        "expired": (expired, "expired"),
        "management-audience": (
            _token_for(fake, f"{MANAGEMENT_RESOURCE}/.default"),
            f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {MANAGEMENT_RESOURCE}",
        ),
        "other-tenant": (_token_for(fake, tenant=OTHER_TENANT), "AKV10032: Invalid issuer"),
    }
    for name, (token, text) in cases.items():
        before = fake.vault.refused[401]
        with pytest.raises(ClientAuthenticationError) as info:
            secrets_client(fake, Static(token)).get_secret("db")
        assert info.value.status_code == 401, name
        assert info.value.error is not None and info.value.error.code == "Unauthorized", name
        assert text in str(info.value.message), (name, info.value.message)
        assert fake.vault.refused[401] > before, name


def test_vault_of_another_tenant_refuses_this_tenants_token(fake: FakeAzure) -> None:
    fake.vault.tenants["kv-b"] = OTHER_TENANT
    fake.vault.grant_reader("kv-b", "app-1")
    fake.vault.add_secret("kv-b", "db", "b")
    status, headers, _ = https(fake, fake.vault.port, "GET", "/kv-b/secrets/db?api-version=7.5")
    assert status == 401 and f"/{OTHER_TENANT}" in headers["WWW-Authenticate"]
    with pytest.raises(ClientAuthenticationError) as info:
        secrets_client(fake, Static(_token_for(fake)), "kv-b").get_secret("db")
    assert "AKV10032" in str(info.value.message)


@pytest.mark.parametrize("rbac", [True, False], ids=["rbac", "access-policy"])
def test_vault_denies_a_principal_without_access(fake: FakeAzure, rbac: bool) -> None:
    fake.vault.rbac = rbac
    fake.entra.federate("app-2", "team-a", "web")
    fake.vault.grant("kv1", "keys", "app-2")  # keys, not secrets
    with pytest.raises(HttpResponseError) as info:
        secrets_client(fake, assertion_credential(fake, pod_token(), "app-2")).get_secret("db")
    err = info.value
    assert err.status_code == 403 and err.error is not None and err.error.code == "Forbidden"
    assert isinstance(err.error.innererror, dict)
    message = str(err.error.message)
    if rbac:
        assert err.error.innererror["code"] == "ForbiddenByRbac"
        assert "appid=app-2" in message
        assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in message
    else:
        assert err.error.innererror["code"] == "AccessDenied"
        assert "does not have secrets get permission on key vault 'kv1" in message
    assert fake.vault.refused[403] == 1


def test_listing_versions_needs_list(fake: FakeAzure) -> None:
    fake.vault.rbac = False
    fake.entra.federate("app-3", "team-a", "web")
    fake.vault.grant("kv1", "secrets", "app-3", operations=("get",))
    client = secrets_client(fake, assertion_credential(fake, pod_token(), "app-3"))
    assert client.get_secret("db").value == "s3cret-value"
    with pytest.raises(HttpResponseError) as info:
        list(client.list_properties_of_secret_versions("db"))
    assert info.value.status_code == 403
    assert "does not have secrets list permission" in str(info.value.message)


def test_vault_requires_an_api_version(fake: FakeAzure) -> None:
    token = _token_for(fake)
    auth = {"Authorization": f"Bearer {token}"}
    status, _, body = https(fake, fake.vault.port, "GET", "/kv1/secrets/db", **auth)
    assert status == 400 and body["error"]["code"] == "BadParameter"
    status, _, body = https(fake, fake.vault.port, "GET", "/kv1/secrets/db?api-version=7.5", **auth)
    assert status == 200 and body["value"] == "s3cret-value"


# -- Key Vault: listing a vault's secrets ----------------------------------------------------


def test_listing_secrets_without_a_token_answers_the_challenge(fake: FakeAzure) -> None:
    status, headers, body = https(fake, fake.vault.port, "GET", "/kv1/secrets?api-version=7.5")
    assert status == 401 and body["error"]["code"] == "Unauthorized"
    assert headers["WWW-Authenticate"].startswith(f'Bearer authorization="{fake.entra.url}/')


@pytest.mark.parametrize("rbac", [True, False], ids=["rbac", "access-policy"])
def test_listing_secrets_needs_list(fake: FakeAzure, rbac: bool) -> None:
    fake.vault.rbac = rbac
    fake.entra.federate("app-4", "team-a", "web")
    fake.vault.grant("kv1", "secrets", "app-4", operations=("get",))
    client = secrets_client(fake, assertion_credential(fake, pod_token(), "app-4"))
    assert client.get_secret("db").value == "s3cret-value"
    with pytest.raises(HttpResponseError) as info:
        list(client.list_properties_of_secrets())
    err = info.value
    assert err.status_code == 403 and err.error is not None
    message = str(err.error.message)
    if rbac:
        assert "Microsoft.KeyVault/vaults/secrets/readMetadata/action" in message
        assert "/vaults/kv1'" in message
    else:
        assert "does not have secrets list permission on key vault 'kv1" in message
    fake.vault.grant("kv1", "secrets", "app-4", operations=("list",))
    assert [p.name for p in client.list_properties_of_secrets()] == ["db"]


def test_listing_secrets_pages_and_shows_metadata_but_never_values(fake: FakeAzure) -> None:
    vault = fake.vault
    vault.add_secret("kv1", "web-api", "v-api", tags={"app": "web"}, content_type="text/plain")
    old = vault.add_secret("kv1", "web-off", "v-off", tags={"app": "web"})
    vault.set_enabled("kv1", "secrets", "web-off", old, False)
    vault.add_certificate("kv1", "web-tls", b"der", secret_value="pfx")
    client = secrets_client(fake, assertion_credential(fake, pod_token()))
    listed = {str(p.name): p for p in client.list_properties_of_secrets()}
    assert sorted(listed) == ["db", "web-api", "web-off", "web-tls"]
    assert listed["web-api"].tags == {"app": "web"}
    assert listed["web-api"].content_type == "text/plain"
    assert listed["web-api"].version is None  # the list names secrets, not versions
    assert listed["web-off"].enabled is False and listed["web-api"].enabled is True
    assert listed["web-tls"].managed is True and not listed["web-api"].managed
    # pages of two (the fake's size), each request carrying the token
    assert fake.vault.with_token["/kv1/secrets"] >= 2
    token = _token_for(fake)
    status, _, body = https(
        fake,
        fake.vault.port,
        "GET",
        "/kv1/secrets?api-version=7.5&maxresults=1",
        Authorization=f"Bearer {token}",
    )
    assert status == 200 and len(body["value"]) == 1 and "maxresults=1" in body["nextLink"]
    assert all("value" not in item for item in body["value"])


@pytest.mark.parametrize("maxresults", ["0", "26", "x"])
def test_listing_secrets_refuses_maxresults_outside_1_to_25(
    fake: FakeAzure, maxresults: str
) -> None:
    status, _, body = https(
        fake,
        fake.vault.port,
        "GET",
        f"/kv1/secrets?api-version=7.5&maxresults={maxresults}",
        Authorization=f"Bearer {_token_for(fake)}",
    )
    assert status == 400 and body["error"]["code"] == "BadParameter"
