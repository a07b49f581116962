"""The ``azure`` backend driven directly (a Mount and Services built by hand), with
the real azure-identity and azure-keyvault clients talking HTTPS to the fakes."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from keyferry_fakes.azure import TENANT, FakeAzure, pod_token
from keyferry_fakes.azure_certs import chain, jwk, new_key, public_pem
from keyferry_fakes.kube import FakeKube
from keyferry_fakes.oidc import ISSUER
from provider.backend import Services
from provider.cache import TTLCache
from provider.clouds.azure import backend as azb
from provider.clouds.azure import dialect as azd
from provider.clouds.azure import identity as azi
from provider.clouds.azure import settings as azs
from provider.clouds.azure.ref import WORKLOAD_AUDIENCE, AzureAuth, AzureRef
from provider.config import Config, KubeConfig
from provider.errors import Code, ConfigError, KeyferryError
from provider.kube import KubeClient
from provider.model import Deadline, Fetched, Mount, Pod, Token
from provider.observe import Metrics

POD = Pod("team-a", "web-0", "uid", "web")
WI = AzureAuth(mode="workload", tenant_id=TENANT, client_id="app-1")


class Env:
    def __init__(self, fake: FakeAzure, kube: FakeKube, **settings: Any) -> None:
        self.fake = fake
        self.kube = kube
        self.executor = ThreadPoolExecutor(8)
        self.config = Config(
            cache_ttl_seconds=0.0,
            kubernetes=KubeConfig(**kube.settings()),
        )
        self.metrics = Metrics()
        self.services = Services(
            config=self.config,
            metrics=self.metrics,
            executor=self.executor,
            kube=KubeClient(self.config.kubernetes),
            values=TTLCache[Fetched](0),
        )
        opts = {"retry_backoff_factor": 0.01, **settings}
        self.backend = azb.create(fake.settings(**opts), self.services)
        self.loop = asyncio.new_event_loop()

    def fetch(
        self, refs: Sequence[AzureRef], mount: Mount | None = None, seconds: float = 20
    ) -> list[Fetched | Exception]:
        m = mount or workload_mount()
        return self.loop.run_until_complete(self.backend.fetch(m, refs, Deadline(seconds)))

    def one(self, ref: AzureRef, mount: Mount | None = None, seconds: float = 20) -> Fetched:
        got = self.fetch([ref], mount, seconds)[0]
        if isinstance(got, Exception):
            raise got
        return got

    def error(
        self, ref: AzureRef, mount: Mount | None = None, seconds: float = 20
    ) -> KeyferryError:
        got = self.fetch([ref], mount, seconds)[0]
        assert isinstance(got, KeyferryError), got
        return got

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.close()
        self.executor.shutdown()


def workload_mount(
    namespace: str = "team-a", sa: str = "web", *, secrets: dict[str, str] | None = None
) -> Mount:
    return Mount(
        pod=Pod(namespace, "web-0", "uid", sa),
        parameters={},
        tokens={WORKLOAD_AUDIENCE: Token(WORKLOAD_AUDIENCE, pod_token(namespace, sa))},
        secrets=secrets or {},
        dialect="azure",
    )


def ref(name: str, kind: str = "secret", **kw: Any) -> AzureRef:
    return AzureRef(vault="kv1", kind=kind, name=name, auth=kw.pop("auth", WI), **kw)  # type: ignore[arg-type]


@pytest.fixture
def env(fake: FakeAzure, kube: FakeKube) -> Iterator[Env]:
    e = Env(fake, kube)
    yield e
    e.close()


# -- content ---------------------------------------------------------------------------------


def test_secret_latest_and_pinned_version(env: Env) -> None:
    v1 = env.fake.vault.add_secret("kv1", "db", "one")
    v2 = env.fake.vault.add_secret("kv1", "db", "two")
    latest, pinned = env.fetch([ref("db"), ref("db", version=v1)])
    assert isinstance(latest, Fetched) and isinstance(pinned, Fetched)
    assert (latest.content, latest.version) == (b"two", v2)
    assert (pinned.content, pinned.version) == (b"one", v1)


@pytest.mark.parametrize("kind", ["rsa", "p256", "p384", "p521"])
def test_key_is_written_as_its_public_pem(env: Env, kind: str) -> None:
    key = new_key(kind)
    version = env.fake.vault.add_key("kv1", "signing", jwk(key, hsm=kind == "p384"))
    got = env.one(ref("signing", "key"))
    assert got.content == public_pem(key)
    assert got.version == version


def test_cert_is_the_leaf_only(env: Env) -> None:
    ch = chain("rsa")
    der = ch.leaf.public_bytes(Encoding.DER)
    version = env.fake.vault.add_certificate(
        "kv1", "web", der, secret_value=ch.pfx_value([ch.root, ch.inter])
    )
    got = env.one(ref("web", "cert"))
    assert got.content == ch.pem(ch.leaf)
    assert got.version == version


@pytest.mark.parametrize("kind", ["rsa", "p256"])
def test_certificate_backed_secret_conversions(env: Env, kind: str) -> None:
    ch = chain(kind)
    value = ch.pfx_value([ch.root, ch.inter])
    der = ch.leaf.public_bytes(Encoding.DER)
    env.fake.vault.add_certificate("kv1", "web", der, secret_value=value)
    pem, pfx, crt, key, full = env.fetch(
        [
            ref("web"),
            ref("web", conversion="pfx"),
            ref("web", conversion="cert"),
            ref("web", conversion="key"),
            ref("web", conversion="fullchain"),
        ]
    )
    assert isinstance(pem, Fetched) and pem.content == ch.key_pem() + ch.ordered_pem()
    assert isinstance(pfx, Fetched) and pfx.content == value.encode()
    assert isinstance(crt, Fetched) and crt.content == ch.pem(ch.leaf)
    assert isinstance(key, Fetched) and key.content == ch.key_pem()
    assert isinstance(full, Fetched) and full.content == ch.ordered_pem()
    # One Key Vault read served all five outputs (coalesced per identity).
    assert env.fake.vault.requests["GET /kv1/secrets/web/"] <= 2


def test_pem_certificate_passes_through_as_uploaded(env: Env) -> None:
    ch = chain("p256")
    stored = (ch.pem(ch.inter) + ch.key_pem() + ch.pem(ch.leaf)).decode()
    der = ch.leaf.public_bytes(Encoding.DER)
    env.fake.vault.add_certificate(
        "kv1", "web", der, secret_value=stored, content_type="application/x-pem-file"
    )
    assert env.one(ref("web")).content == stored.encode()
    assert env.one(ref("web", conversion="pfx")).content == stored.encode()


def test_secret_with_unknown_certificate_content_type(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "odd", "x", content_type="text/plain", kid=True)
    err = env.error(ref("odd"))
    assert err.code is Code.INVALID_ARGUMENT and "unknown content type" in err.message


def test_plain_secret_with_pfx_format_passes_through(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "blob", base64.b64encode(b"\x00\x01").decode())
    assert env.one(ref("blob", conversion="pfx")).content == b"AAE="


# -- version history ------------------------------------------------------------------------


def test_history_is_exactly_n_newest_enabled_versions(env: Env) -> None:
    vault = env.fake.vault
    vs = [vault.add_secret("kv1", "h", f"value-{i}") for i in range(5)]
    vault.set_enabled("kv1", "secrets", "h", vs[3], False)
    refs = [ref("h", history=3, index=i) for i in range(3)]
    got = env.fetch(refs)
    assert [g.content for g in got if isinstance(g, Fetched)] == [
        b"value-4",
        b"value-2",
        b"value-1",
    ]
    assert [g.version for g in got if isinstance(g, Fetched)] == [vs[4], vs[2], vs[1]]


def test_history_with_fewer_versions_reports_the_missing_ones_not_found(env: Env) -> None:
    vault = env.fake.vault
    for i in range(2):
        vault.add_secret("kv1", "h", f"value-{i}")
    got = env.fetch([ref("h", history=4, index=i) for i in range(4)])
    assert [g.content for g in got if isinstance(g, Fetched)] == [b"value-1", b"value-0"]
    assert all(isinstance(g, KeyferryError) and g.code is Code.NOT_FOUND for g in got[2:])


def test_history_starts_at_the_given_version(env: Env) -> None:
    vault = env.fake.vault
    vs = [vault.add_secret("kv1", "h", f"value-{i}") for i in range(4)]
    got = env.fetch([ref("h", version=vs[2], history=2, index=i) for i in range(2)])
    assert [g.version for g in got if isinstance(g, Fetched)] == [vs[2], vs[1]]
    err = env.error(ref("h", version="f" * 32, history=2, index=0))
    assert err.code is Code.NOT_FOUND and "enabled versions" in err.message


def test_history_of_keys_and_certificates(env: Env) -> None:
    keys = [new_key("p256") for _ in range(2)]
    for k in keys:
        env.fake.vault.add_key("kv1", "k", jwk(k))
    got = env.fetch([ref("k", "key", history=2, index=i) for i in range(2)])
    assert [g.content for g in got if isinstance(g, Fetched)] == [
        public_pem(keys[1]),
        public_pem(keys[0]),
    ]


# -- identity ---------------------------------------------------------------------------------


def test_tokens_are_reused_for_one_identity(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    for _ in range(20):
        env.one(ref("db"))
    assert env.fake.entra.token_requests == 1


def test_tokens_are_per_service_account(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.entra.federate("app-1", "team-b", "api")
    env.one(ref("db"))
    env.one(ref("db"), workload_mount("team-b", "api"))
    assert env.fake.entra.token_requests == 2


def test_unfederated_service_account_names_the_federated_credential_to_create(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    err = env.error(ref("db"), workload_mount("team-c", "batch"))
    assert err.code is Code.UNAUTHENTICATED
    assert "AADSTS70021" in err.message
    assert "system:serviceaccount:team-c:batch" in err.message
    assert f"issuer '{ISSUER.url}'" in err.message
    assert env.fake.entra.errors[70021] == 1


def test_token_of_another_service_account_is_refused(env: Env) -> None:
    m = workload_mount()
    m = replace(m, pod=Pod("team-a", "web-0", "uid", "other"))
    err = env.error(ref("db"), m)
    assert err.code is Code.UNAUTHENTICATED
    assert env.fake.entra.token_requests == 0


def test_service_account_annotations_supply_client_and_tenant(env: Env) -> None:
    env.kube.add_service_account(
        "team-a",
        "web",
        {
            "azure.workload.identity/client-id": "app-1",
            "azure.workload.identity/tenant-id": TENANT,
        },
    )
    env.fake.vault.add_secret("kv1", "db", "x")
    assert env.one(ref("db", auth=AzureAuth())).content == b"x"
    assert env.fake.entra.issued and {i.client_id for i in env.fake.entra.issued.values()} == {
        "app-1"
    }


def test_no_identity_anywhere_says_how_to_fix_it(env: Env) -> None:
    env.kube.add_service_account("team-a", "web", {})
    err = env.error(ref("db", auth=AzureAuth()))
    assert err.code is Code.FAILED_PRECONDITION
    assert "clientID" in err.message and "azure.workload.identity/client-id" in err.message


def test_service_principal_from_node_publish_secret(env: Env) -> None:
    env.fake.entra.add_client_secret("sp-app", "s3cret")
    env.fake.vault.grant("kv1", "secrets", "sp-app")
    env.fake.vault.add_secret("kv1", "db", "x")
    sp = AzureAuth(mode="service_principal", tenant_id=TENANT, client_id="sp-app")
    good = workload_mount(secrets={"clientid": "sp-app", "clientsecret": "s3cret"})
    assert env.one(ref("db", auth=sp), good).content == b"x"
    bad = workload_mount(secrets={"clientid": "sp-app", "clientsecret": "wrong"})
    err = env.error(ref("db", auth=sp), bad)
    assert err.code is Code.UNAUTHENTICATED
    assert "clientsecret" in err.message and "wrong" not in err.message


def test_service_principal_client_id_never_reaches_messages(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    # nodePublishSecretRef data: neither a 403 nor an Entra refusal names the client id,
    # and azure-identity's own warnings (which quote Entra's text) are not emitted.
    caplog.set_level(logging.DEBUG)
    env.fake.entra.add_client_secret("sp-canary-id", "s3cret")
    env.fake.vault.add_secret("kv1", "db", "x")
    # no access to kv1 for sp-canary-id: Key Vault answers 403 quoting its appid
    sp = AzureAuth(mode="service_principal", tenant_id=TENANT, client_id="sp-canary-id")
    good = workload_mount(secrets={"clientid": "sp-canary-id", "clientsecret": "s3cret"})
    denied = env.error(ref("db", auth=sp), good)
    assert denied.code is Code.PERMISSION_DENIED
    assert "nodePublishSecretRef" in denied.message
    unknown = AzureAuth(mode="service_principal", tenant_id=TENANT, client_id="sp-unknown-id")
    bad = workload_mount(secrets={"clientid": "sp-unknown-id", "clientsecret": "s3cret"})
    refused = env.error(ref("db", auth=unknown), bad)
    assert refused.code is Code.UNAUTHENTICATED
    for err in (denied, refused):
        assert "sp-canary-id" not in err.message and "sp-unknown-id" not in err.message
        assert "s3cret" not in err.message
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("azure.identity")]
    assert not [m for m in logged if "sp-unknown-id" in m], logged


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("azure.workload.identity/tenant-id", "x/../../steal"),
        ("azure.workload.identity/tenant-id", "t?x=1"),
        ("azure.workload.identity/client-id", "app-1&client_id=other"),
    ],
)
def test_service_account_annotation_with_url_characters_is_refused_before_any_token(
    env: Env, annotation: str, value: str
) -> None:
    annotations = {
        "azure.workload.identity/client-id": "app-1",
        "azure.workload.identity/tenant-id": TENANT,
        annotation: value,
    }
    env.kube.add_service_account("team-a", "web", annotations)
    env.fake.vault.add_secret("kv1", "db", "x")
    err = env.error(ref("db", auth=AzureAuth()))
    assert err.code is Code.FAILED_PRECONDITION, err.message
    assert annotation in err.message
    assert env.fake.entra.token_requests == 0
    assert not [r for r in env.fake.entra.requests if "steal" in r]


@pytest.mark.parametrize(
    "auth",
    [
        AzureAuth(mode="workload", tenant_id="x/../../steal", client_id="app-1"),
        AzureAuth(mode="workload", tenant_id=TENANT, client_id="app-1/../x"),
        AzureAuth(mode="service_principal", tenant_id="a b"),
        AzureAuth(mode="vm_managed_identity", user_assigned_identity_id="id?x=1"),
    ],
    ids=["workload-tenant", "workload-client", "sp-tenant", "vm-user-assigned"],
)
def test_refs_with_url_characters_are_refused_by_the_backend_too(
    fake: FakeAzure, kube: FakeKube, auth: AzureAuth
) -> None:
    e = Env(fake, kube, allow_vm_managed_identity=True)
    try:
        m = workload_mount(secrets={"clientid": "sp-1", "clientsecret": "CANARY-sp-secret"})
        err = e.error(ref("db", auth=auth), m)
        assert err.code is Code.INVALID_ARGUMENT, err.message
        assert "CANARY" not in err.message and "sp-1" not in err.message
        assert fake.entra.token_requests == 0
    finally:
        e.close()


def test_service_principal_client_id_with_url_characters_is_refused_unquoted(env: Env) -> None:
    sp = AzureAuth(mode="service_principal", tenant_id=TENANT)
    m = workload_mount(secrets={"clientid": "CANARY/../x", "clientsecret": "CANARY-secret"})
    err = env.error(ref("db", auth=sp), m)
    assert err.code is Code.INVALID_ARGUMENT
    assert "nodePublishSecretRef" in err.message and "CANARY" not in err.message
    assert env.fake.entra.token_requests == 0


@pytest.mark.parametrize("error", [ValueError, TypeError])
def test_sdk_argument_errors_while_building_credentials_are_user_errors(
    env: Env, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise error("azure-identity says no about CANARY-sp-secret")

    monkeypatch.setattr(azi, "ClientSecretCredential", refuse)
    monkeypatch.setattr(azi, "ClientAssertionCredential", refuse)
    sp = AzureAuth(mode="service_principal", tenant_id=TENANT, client_id="sp-1")
    m = workload_mount(secrets={"clientid": "sp-1", "clientsecret": "CANARY-sp-secret"})
    for auth in (sp, WI):
        err = env.error(ref("db", auth=auth), m)
        assert err.code is Code.INVALID_ARGUMENT, err.message
        assert "CANARY" not in err.message and "azure-identity" in err.message


def test_vm_managed_identity_needs_server_permission(env: Env) -> None:
    err = env.error(ref("db", auth=AzureAuth(mode="vm_managed_identity")))
    assert err.code is Code.PERMISSION_DENIED
    assert "allow_vm_managed_identity" in err.message


# -- Key Vault errors ---------------------------------------------------------------------------


def test_rbac_403_names_the_role_to_grant(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.vault.revoke("kv1", "app-1")
    env.fake.vault.grant("kv1", "keys", "app-1")  # not secrets
    err = env.error(ref("db"))
    assert err.code is Code.PERMISSION_DENIED
    assert "Key Vault Secrets User" in err.message and "app-1" in err.message
    assert "ForbiddenByRbac" in err.message
    assert env.fake.vault.refused[403] == 1


def test_access_policy_403_names_the_permission(fake: FakeAzure, kube: FakeKube) -> None:
    fake.vault.rbac = False
    e = Env(fake, kube)
    try:
        fake.vault.add_key("kv1", "k", jwk(new_key("p256")))
        fake.vault.revoke("kv1", "app-1")
        fake.vault.grant("kv1", "keys", "app-1", operations=("get",))  # no list
        assert e.one(ref("k", "key")).content  # get alone reads the latest version
        err = e.error(ref("k", "key", history=2, index=0))
        assert err.code is Code.PERMISSION_DENIED
        assert "AccessDenied" in err.message
        assert "get and list permission on keys" in err.message
    finally:
        e.close()


def test_not_found(env: Env) -> None:
    err = env.error(ref("missing"))
    assert err.code is Code.NOT_FOUND
    assert "secret 'missing' in vault 'kv1'" in err.message


def test_disabled_version(env: Env) -> None:
    v = env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.vault.add_secret("kv1", "db", "y")
    env.fake.vault.set_enabled("kv1", "secrets", "db", v, False)
    err = env.error(ref("db", version=v))
    assert err.code is Code.FAILED_PRECONDITION and "disabled" in err.message


@pytest.mark.parametrize("retry_after", ["1", "soon"])  # one that cannot be read is none
def test_429_with_retry_after_is_retried_and_counted(env: Env, retry_after: str) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.vault.inject(429, 1, retry_after=retry_after, path="/secrets/db")
    assert env.one(ref("db")).content == b"x"
    attempts = env.metrics.backend_attempts
    assert attempts.labels("azure", "get_secret", "throttled")._value.get() == 1
    assert attempts.labels("azure", "get_secret", "ok")._value.get() == 1


def test_429_asking_past_the_budget_is_not_retried(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.vault.inject(429, 100, retry_after="600", path="/secrets/db")
    err = env.error(ref("db"), seconds=5)
    assert err.code is Code.DEADLINE_EXCEEDED, err.message
    assert "throttled" in err.message and "retry after 600s" in err.message
    assert "1 attempt;" in err.message
    assert env.metrics.backend_attempts.labels("azure", "get_secret", "throttled")._value.get() == 1


def test_5xx_is_retried(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.vault.inject(503, 2, path="/secrets/db")
    assert env.one(ref("db")).content == b"x"


def test_latency_beyond_the_deadline(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.one(ref("db"))  # challenge and token done
    env.fake.vault.latency = 3.0
    err = env.error(ref("db"), seconds=1.5)
    assert err.code in (Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE)
    env.fake.vault.latency = 0.0


def test_one_failing_object_does_not_hide_the_others(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    ok, missing = env.fetch([ref("db"), ref("nope")])
    assert isinstance(ok, Fetched) and isinstance(missing, KeyferryError)


def test_clients_are_reused_per_vault_and_identity(env: Env) -> None:
    env.fake.vault.add_secret("kv1", "db", "x")
    env.fake.vault.add_secret("kv2", "db", "y")
    env.fake.vault.grant("kv2", "secrets", "app-1")
    for _ in range(5):
        env.fetch([ref("db"), replace(ref("db"), vault="kv2")])
    assert len(env.backend._clients) == 2


# -- clouds and settings ----------------------------------------------------------------------


def test_unknown_cloud_is_an_error_before_any_call(env: Env) -> None:
    err = env.error(replace(ref("db"), cloud="AzureMoonCloud"))
    assert err.code is Code.INVALID_ARGUMENT and "backends.azure.clouds" in err.message
    assert env.fake.vault.requests == {}


def test_custom_cloud_from_settings(fake: FakeAzure, kube: FakeKube) -> None:
    e = Env(
        fake,
        kube,
        clouds={
            "LabCloud": {
                "authority_host": fake.entra.authority,
                "vault_dns_suffix": "unused.example",
                "vault_url": fake.vault.vault_url_template(),
            }
        },
        authority_host="",
        vault_url="",
    )
    try:
        fake.vault.add_secret("kv1", "db", "lab")
        assert e.one(replace(ref("db"), cloud="labcloud")).content == b"lab"
    finally:
        e.close()


def test_builtin_clouds_have_their_endpoints() -> None:
    s = azs.parse_settings({})
    assert s.clouds["azurechinacloud"].url_for("kv") == "https://kv.vault.azure.cn"
    assert s.clouds["azureusgovernmentcloud"].authority_host == "https://login.microsoftonline.us"
    assert s.clouds["azurepubliccloud"].url_for("kv") == "https://kv.vault.azure.net"
    assert not s.allow_vm_managed_identity


def test_stack_cloud_env_file_must_be_allowlisted(tmp_path: Path) -> None:
    env_file = tmp_path / "stack.json"
    env_file.write_text(
        '{"name": "AzureStackCloud", "activeDirectoryEndpoint": "https://login.stack.example/",'
        ' "keyVaultDNSSuffix": "vault.stack.example"}'
    )
    s = azs.parse_settings({"cloud_env_files": [str(env_file)]})
    assert s.env_files[str(env_file)].url_for("kv") == "https://kv.vault.stack.example"
    with pytest.raises(ConfigError):
        azs.parse_settings({"cloud_env_files": [str(tmp_path / "missing.json")]})


@pytest.mark.parametrize(
    "bad",
    [
        {"authority_host": "http://login.example"},
        {"vault_url": "https://kv.example/no-name"},
        {"cloud": "Nowhere"},
        {"retry_total": "many"},
        {"clouds": {"X": {"authority_host": "https://a"}}},
        {"unknown_setting": 1},
        {"ca_bundle": "/nonexistent/ca.pem"},
    ],
)
def test_bad_settings_fail_at_start_up(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        azs.parse_settings(bad)


def test_drop_in_plan_through_the_backend(env: Env) -> None:
    """The dialect's refs fetch what upstream would write."""
    env.fake.vault.add_secret("kv1", "db", "x")
    m = workload_mount()
    m = replace(
        m,
        parameters={
            "keyvaultName": "kv1",
            "tenantID": TENANT,
            "clientID": "app-1",
            "objects": "array:\n  - |\n    objectName: db\n    objectType: secret\n",
        },
    )
    plan = azd.parse(m)
    refs = [s.ref for s in plan.objects]
    got = env.fetch([r for r in refs if isinstance(r, AzureRef)], m)
    assert [g.content for g in got if isinstance(g, Fetched)] == [b"x"]
