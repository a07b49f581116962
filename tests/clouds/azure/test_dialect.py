"""The ``azure`` drop-in dialect and the native hook: parsing and validation only
(no network is reachable from these tests)."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider import native
from provider.clouds.azure import dialect as azure
from provider.clouds.azure.ref import WORKLOAD_AUDIENCE, AzureAuth, AzureRef
from provider.errors import Code, KeyferryError
from provider.files import path_problem
from provider.model import Mount, Pod, Token
from tests import REPO

POD = Pod("team-a", "web-0", "uid", "web")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TOKENS = {WORKLOAD_AUDIENCE: Token(WORKLOAD_AUDIENCE, "a.b.c")}


def objects(*items: str) -> str:
    """The official provider's double-encoded form: an ``array`` of YAML strings."""
    out = ["array:"]
    for item in items:
        out.append("  - |")
        out.extend("    " + line for line in textwrap.dedent(item).strip().splitlines())
    return "\n".join(out) + "\n"


def mount(
    objs: str,
    *,
    tokens: dict[str, Token] | None = None,
    secrets: dict[str, str] | None = None,
    **params: str,
) -> Mount:
    base = {"keyvaultName": "my-kv", "tenantID": TENANT, "clientID": "cid", "objects": objs}
    base.update(params)
    return Mount(
        pod=POD,
        parameters={k: v for k, v in base.items() if v is not None},
        tokens=TOKENS if tokens is None else tokens,
        secrets=secrets or {},
        dialect="azure",
        provider_name="azure",
    )


def error(m: Mount) -> KeyferryError:
    with pytest.raises(KeyferryError) as info:
        azure.parse(m)
    return info.value


SECRET = "objectName: db-password\nobjectType: secret"


# -- what upstream writes ----------------------------------------------------------------


def test_documented_example_gives_upstream_files_ids_and_modes() -> None:
    plan = azure.parse(
        mount(
            objects(
                'objectName: secret1\nobjectType: secret\nobjectVersion: ""',
                "objectName: key1\nobjectType: key\nobjectAlias: keys/signing.pem",
                "objectName: cert1\nobjectType: cert\nfilePermission: 0600",
            )
        )
    )
    assert [s.ids for s in plan.objects] == [("secret/secret1",), ("key/key1",), ("cert/cert1",)]
    assert [o.path for s in plan.objects for o in s.outputs] == [
        "secret1",
        "keys/signing.pem",
        "cert1",
    ]
    assert [o.mode for s in plan.objects for o in s.outputs] == [None, None, 0o600]
    first = plan.objects[0].ref
    assert isinstance(first, AzureRef)
    assert first == AzureRef(
        vault="my-kv",
        kind="secret",
        name="secret1",
        auth=AzureAuth(mode="workload", tenant_id=TENANT, client_id="cid"),
    )
    assert plan.dialect == "azure"


def test_values_are_whitespace_trimmed_and_tenant_id_falls_back() -> None:
    plan = azure.parse(
        mount(
            objects("objectName: ' db '\nobjectType: ' secret '"),
            keyvaultName="  my-kv ",
            tenantID=None,  # type: ignore[arg-type]
            tenantId=" t2 ",
        )
    )
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    assert (ref.vault, ref.name, ref.auth.tenant_id) == ("my-kv", "db", "t2")


def test_encoding_and_format_map_to_decode_and_conversion() -> None:
    plan = azure.parse(
        mount(
            objects(
                "objectName: a\nobjectType: secret\nobjectEncoding: BASE64",
                "objectName: b\nobjectType: secret\nobjectEncoding: hex",
                "objectName: c\nobjectType: secret\nobjectEncoding: utf-8",
                "objectName: d\nobjectType: secret\nobjectFormat: PFX",
            )
        )
    )
    assert [s.outputs[0].decode for s in plan.objects] == ["base64", "hex", None, None]
    refs = [s.ref for s in plan.objects]
    assert [r.conversion for r in refs if isinstance(r, AzureRef)] == ["raw", "raw", "raw", "pfx"]


def test_version_history_gives_exactly_n_outputs_and_upstream_ids() -> None:
    plan = azure.parse(
        mount(
            objects("objectName: s\nobjectType: secret\nobjectAlias: hist\nobjectVersionHistory: 3")
        )
    )
    assert [s.ids for s in plan.objects] == [("secret/s/0",), ("secret/s/1",), ("secret/s/2",)]
    assert [s.outputs[0].path for s in plan.objects] == ["hist/0", "hist/1", "hist/2"]
    assert [s.optional for s in plan.objects] == [False, True, True]
    refs = [s.ref for s in plan.objects]
    assert [(r.history, r.index) for r in refs if isinstance(r, AzureRef)] == [
        (3, 0),
        (3, 1),
        (3, 2),
    ]


@pytest.mark.parametrize("n", ["0", "1", "01"])
def test_history_of_one_or_zero_is_a_single_version(n: str) -> None:
    plan = azure.parse(mount(objects(f"{SECRET}\nobjectVersionHistory: {n}")))
    assert plan.objects[0].ids == ("secret/db-password",)


def test_same_object_under_two_aliases_keeps_one_id() -> None:
    plan = azure.parse(mount(objects(f"{SECRET}\nobjectAlias: a", f"{SECRET}\nobjectAlias: b")))
    assert [s.ids for s in plan.objects] == [("secret/db-password",), ("secret/db-password",)]


def test_same_object_at_two_versions_gets_distinct_ids() -> None:
    plan = azure.parse(
        mount(
            objects(
                f"{SECRET}\nobjectAlias: a",
                f"{SECRET}\nobjectAlias: b\nobjectVersion: 0123456789abcdef0123456789abcdef",
            )
        )
    )
    assert [s.ids for s in plan.objects] == [("secret/db-password",), ("secret/db-password#1",)]


def test_alias_with_double_dots_inside_a_name_is_allowed() -> None:
    plan = azure.parse(mount(objects(f"{SECRET}\nobjectAlias: a..b")))
    assert plan.objects[0].outputs[0].path == "a..b"


@pytest.mark.parametrize(
    "perm,mode", [("0644", 0o644), ("644", 0o644), ("'0400'", 0o400), ("0", 0)]
)
def test_file_permission_is_octal_text(perm: str, mode: int) -> None:
    plan = azure.parse(mount(objects(f"{SECRET}\nfilePermission: {perm}")))
    assert plan.objects[0].outputs[0].mode == mode


# -- identities -----------------------------------------------------------------------------


def test_service_principal_from_node_publish_secret() -> None:
    plan = azure.parse(
        mount(objects(SECRET), clientID=None, secrets={"ClientID": "app", "clientsecret": "s"})  # type: ignore[arg-type]
    )
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    assert ref.auth == AzureAuth(mode="service_principal", tenant_id=TENANT, client_id="app")


def test_no_client_id_and_no_secret_defers_to_the_service_account() -> None:
    plan = azure.parse(mount(objects(SECRET), clientID=None, tenantID=None))  # type: ignore[arg-type]
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    assert ref.auth == AzureAuth(mode="auto")


def test_vm_managed_identity_mode() -> None:
    plan = azure.parse(
        mount(
            objects(SECRET),
            clientID=None,  # type: ignore[arg-type]
            useVMManagedIdentity="true",
            userAssignedIdentityID="uai",
        )
    )
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    assert ref.auth.mode == "vm_managed_identity"
    assert ref.auth.user_assigned_identity_id == "uai"


def test_pod_identity_is_rejected_pointing_to_workload_identity() -> None:
    err = error(mount(objects(SECRET), clientID=None, usePodIdentity="true"))  # type: ignore[arg-type]
    assert err.code is Code.FAILED_PRECONDITION
    assert "workload identity" in err.message and "usePodIdentity" in err.message


def test_two_identity_modes_are_rejected() -> None:
    err = error(mount(objects(SECRET), usePodIdentity="true", useVMManagedIdentity="true"))
    assert "only one identity mode" in err.message


def test_client_id_without_the_audience_token_names_token_requests() -> None:
    err = error(mount(objects(SECRET), tokens={}))
    assert err.code is Code.FAILED_PRECONDITION
    assert WORKLOAD_AUDIENCE in err.message and "tokenRequests" in err.message


def test_half_a_service_principal_names_the_missing_key() -> None:
    err = error(mount(objects(SECRET), clientID=None, secrets={"clientid": "x"}))  # type: ignore[arg-type]
    assert "'clientsecret'" in err.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tenantID": "x/../../steal"}, "'tenantID'"),
        ({"tenantID": None, "tenantId": "t?x=1"}, "'tenantId'"),
        ({"tenantID": "a" * 101}, "'tenantID'"),
        ({"tenantID": "tenant#frag"}, "'tenantID'"),
        ({"clientID": "app/../x"}, "'clientID'"),
        ({"clientID": "app&scope=x"}, "'clientID'"),
        (
            {"clientID": None, "useVMManagedIdentity": "true", "userAssignedIdentityID": "a?b"},
            "'userAssignedIdentityID'",
        ),
    ],
)
def test_tenant_and_client_ids_with_url_characters_are_rejected(
    params: dict[str, Any], field: str
) -> None:
    # The tenant id is a path segment of the token URL the pod's token is posted to.
    err = error(mount(objects(SECRET), **params))
    assert err.code is Code.INVALID_ARGUMENT
    assert field in err.message


def test_tenant_ids_as_azure_identity_accepts_them_pass() -> None:
    for tenant in (TENANT, "contoso.onmicrosoft.com", "t", "a" * 100):
        ref = azure.parse(mount(objects(SECRET), tenantID=tenant)).objects[0].ref
        assert isinstance(ref, AzureRef) and ref.auth.tenant_id == tenant


def test_service_principal_client_id_is_checked_without_quoting_it() -> None:
    err = error(
        mount(
            objects(SECRET),
            clientID=None,  # type: ignore[arg-type]
            secrets={"clientid": "CANARY/../x", "clientsecret": "s"},
        )
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert "nodePublishSecretRef" in err.message and "CANARY" not in err.message


def test_native_tenant_id_with_url_characters_is_rejected() -> None:
    with pytest.raises(KeyferryError) as info:
        native.parse(
            native_mount(
                "- backend: azure\n  vault: my-kv\n  name: db\n  clientID: c\n"
                "  tenantID: x/../steal\n"
            )
        )
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "tenantID" in info.value.message


def test_user_assigned_identity_without_vm_mode_is_rejected() -> None:
    err = error(mount(objects(SECRET), userAssignedIdentityID="uai"))
    assert "useVMManagedIdentity" in err.message


# -- bad input: INVALID_ARGUMENT before any network call ---------------------------------------


@pytest.mark.parametrize(
    "vault", ["ab", "x" * 25, "my_kv", "my.kv", "https://my-kv.vault.azure.net"]
)
def test_invalid_vault_name(vault: str) -> None:
    err = error(mount(objects(SECRET), keyvaultName=vault))
    assert err.code is Code.INVALID_ARGUMENT
    assert "keyvaultName" in err.message and "3-24" in err.message


def test_missing_vault_name() -> None:
    err = error(mount(objects(SECRET), keyvaultName=""))
    assert "'keyvaultName' is required" in err.message


@pytest.mark.parametrize("kind", ["secrets", "certificate", "blob", ""])
def test_unknown_object_type_lists_the_valid_ones(kind: str) -> None:
    err = error(mount(objects(f"objectName: x\nobjectType: {kind!r}")))
    assert err.code is Code.INVALID_ARGUMENT
    assert "secret, key or cert" in err.message


def test_object_type_is_case_insensitive() -> None:
    plan = azure.parse(mount(objects("objectName: x\nobjectType: Secret")))
    assert plan.objects[0].ids == ("secret/x",)


@pytest.mark.parametrize("kind", ["key", "cert"])
@pytest.mark.parametrize("fmt", ["pfx", "PFX", "Pfx"])
def test_pfx_format_on_a_non_secret(kind: str, fmt: str) -> None:
    err = error(mount(objects(f"objectName: x\nobjectType: {kind}\nobjectFormat: {fmt}")))
    assert "objectFormat pfx needs objectType secret" in err.message


def test_unknown_format() -> None:
    err = error(mount(objects(f"{SECRET}\nobjectFormat: der")))
    assert "use pem or pfx" in err.message


@pytest.mark.parametrize("enc", ["base32", "utf8", "ascii"])
def test_bad_encoding(enc: str) -> None:
    err = error(mount(objects(f"{SECRET}\nobjectEncoding: {enc}")))
    assert "utf-8, base64 or hex" in err.message


def test_encoding_on_a_key_is_rejected() -> None:
    err = error(mount(objects("objectName: x\nobjectType: key\nobjectEncoding: base64")))
    assert "objectEncoding only applies to objectType secret" in err.message


@pytest.mark.parametrize("perm", ["abc", "0o644", "rw-r--r--", "0999", "1777", "4755", "-1"])
def test_bad_file_permission_is_an_error_not_mode_zero(perm: str) -> None:
    err = error(mount(objects(f"{SECRET}\nfilePermission: {json.dumps(perm)}")))
    assert err.code is Code.INVALID_ARGUMENT
    assert "filePermission" in err.message


def test_duplicate_aliases() -> None:
    err = error(
        mount(
            objects(
                f"{SECRET}\nobjectAlias: same",
                "objectName: other\nobjectType: secret\nobjectAlias: same",
            )
        )
    )
    assert "also written by objects[0]" in err.message


def test_one_error_lists_per_object_and_cross_object_problems() -> None:
    err = error(
        mount(
            objects(
                f"{SECRET}\nobjectAlias: a\nobjectAlais: x",
                "objectName: b\nobjectType: secret\nobjectAlias: ../up",
                "objectName: c\nobjectType: secret\nobjectAlias: same",
                "objectName: d\nobjectType: secret\nobjectAlias: same",
                "objectName: e\nobjectType: secret\nobjectAlias: dir",
                "objectName: f\nobjectType: secret\nobjectAlias: dir/file",
            )
        )
    )
    assert err.code is Code.INVALID_ARGUMENT
    assert "unknown key 'objectAlais'" in err.message
    assert "objectAlias '../up' contains a '..'" in err.message
    assert "output path 'same' is also written by objects[2] (secret/c)" in err.message
    assert "needs a directory 'dir', but objects[4] (secret/e) writes a file" in err.message


def test_cross_object_problems_are_reported_with_a_parameter_error() -> None:
    err = error(
        mount(
            objects(
                f"{SECRET}\nobjectAlias: same",
                "objectName: b\nobjectType: secret\nobjectAlias: same",
            ),
            keyvaultName="",
        )
    )
    assert "'keyvaultName' is required" in err.message
    assert "output path 'same' is also written by objects[0]" in err.message


def test_alias_clashing_with_a_history_directory() -> None:
    err = error(
        mount(
            objects(
                f"{SECRET}\nobjectVersionHistory: 2",
                "objectName: other\nobjectType: secret\nobjectAlias: db-password/1",
            )
        )
    )
    assert "also written by" in err.message


@pytest.mark.parametrize("alias", ["../x", "a/../b", "/etc/passwd", "..data", ".", "a//b", "a/"])
def test_traversal_and_unclean_aliases(alias: str) -> None:
    err = error(mount(objects(f"{SECRET}\nobjectAlias: {json.dumps(alias)}")))
    assert err.code is Code.INVALID_ARGUMENT
    assert "objectAlias" in err.message


@pytest.mark.parametrize("name", ["a/b", "../secrets/x", "a b", "x" * 128])
def test_object_names_that_would_change_the_url_are_rejected(name: str) -> None:
    err = error(mount(objects(f"objectName: {name!r}\nobjectType: secret\nobjectAlias: f")))
    assert "not a Key Vault object name" in err.message


def test_bad_object_version() -> None:
    err = error(mount(objects(f"{SECRET}\nobjectVersion: ../../keys/x")))
    assert "objectVersion" in err.message


def test_empty_objects_array_is_a_clear_error() -> None:
    err = error(mount("array: []"))
    assert "missing object versions" in err.message
    err = error(mount("array:"))
    assert "lists no objects" in err.message


def test_missing_objects_parameter() -> None:
    err = error(mount(""))
    assert "'objects' is required" in err.message


def test_array_items_must_be_strings() -> None:
    err = error(mount("array:\n  - objectName: x\n    objectType: secret\n"))
    assert "must be a YAML string" in err.message


def test_unknown_keys_get_a_did_you_mean() -> None:
    err = error(mount(objects("objectname: x\nobjectType: secret")))
    assert "unknown key 'objectname'" in err.message and "objectName" in err.message
    err = error(mount(objects(SECRET), keyVaultName="x"))
    assert "keyVaultName" in err.message and "keyvaultName" in err.message


def test_driver_keys_are_ignored() -> None:
    plan = azure.parse(mount(objects(SECRET), secretProviderClass="spc", providerName="azure"))
    assert len(plan.objects) == 1


def test_every_failing_object_is_listed_in_one_error() -> None:
    err = error(
        mount(
            objects(
                "objectName: a\nobjectType: blob",
                SECRET,
                "objectName: c\nobjectType: secret\nfilePermission: '999'",
                "objectName: d\nobjectType: key\nobjectFormat: pfx",
            ),
            keyvaultName="x",
        )
    )
    assert err.code is Code.INVALID_ARGUMENT
    for where in ("keyvaultName", "objects[0]", "objects[2]", "objects[3]"):
        assert where in err.message
    assert "objects[1]" not in err.message


@pytest.mark.parametrize("cloud", ["AzureChinaCloud", "azureusgovernmentcloud", "MyCustomCloud"])
def test_cloud_names(cloud: str) -> None:
    plan = azure.parse(mount(objects(SECRET), cloudName=cloud))
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    assert ref.cloud.lower() == cloud.lower()


def test_german_cloud_and_stack_without_env_file() -> None:
    assert "closed" in error(mount(objects(SECRET), cloudName="AzureGermanCloud")).message
    assert "cloudEnvFileName" in error(mount(objects(SECRET), cloudName="AzureStackCloud")).message


def test_token_proxy_is_not_supported() -> None:
    err = error(mount(objects(SECRET), useAzureTokenProxy="true"))
    assert "useAzureTokenProxy" in err.message


# -- properties -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789abco-+ x", max_size=6))
def test_file_permission_parsing_never_guesses(perm: str) -> None:
    text = perm.strip()
    m = mount(objects(f"{SECRET}\nfilePermission: {json.dumps(perm)}"))
    valid = bool(text) and all(c in "01234567" for c in text) and int(text, 8) <= 0o777
    if valid:
        assert azure.parse(m).objects[0].outputs[0].mode == int(text, 8)
    elif text:
        assert error(m).code is Code.INVALID_ARGUMENT
    else:
        assert azure.parse(m).objects[0].outputs[0].mode is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab./\\-_ ", min_size=1, max_size=12))
def test_alias_accepted_exactly_when_the_path_validator_accepts_it(alias: str) -> None:
    m = mount(objects(f"{SECRET}\nobjectAlias: {json.dumps(alias)}"))
    expected = alias.strip()
    if expected and not path_problem(expected):
        assert azure.parse(m).objects[0].outputs[0].path == expected
    elif expected:
        assert error(m).code is Code.INVALID_ARGUMENT


# -- the native hook ---------------------------------------------------------------------------


def native_mount(objs: str, **kw: object) -> Mount:
    return Mount(pod=POD, parameters={"objects": objs}, tokens=TOKENS, dialect="native", **kw)  # type: ignore[arg-type]


def test_native_certificate_outputs_from_one_certificate() -> None:
    plan = native.parse(
        native_mount(
            textwrap.dedent(
                f"""
                - backend: azure
                  vault: my-kv
                  name: web
                  type: certificate
                  format: fullchain
                  tenantID: {TENANT}
                  clientID: cid
                  path: tls.crt
                - backend: azure
                  vault: my-kv
                  name: web
                  type: certificate
                  format: key
                  tenantID: {TENANT}
                  clientID: cid
                  path: tls.key
                  mode: "0600"
                - backend: azure
                  vault: my-kv
                  name: web
                  type: certificate
                  format: cert
                  clientID: cid
                - backend: azure
                  vault: my-kv
                  name: signing
                  type: key
                  clientID: cid
                """
            )
        )
    )
    refs = [s.ref for s in plan.objects]
    assert all(isinstance(r, AzureRef) for r in refs)
    got = [(r.kind, r.conversion) for r in refs if isinstance(r, AzureRef)]
    assert got == [("secret", "fullchain"), ("secret", "key"), ("cert", "raw"), ("key", "raw")]
    assert [s.outputs[0].path for s in plan.objects] == ["tls.crt", "tls.key", "web", "signing"]
    assert plan.objects[1].outputs[0].mode == 0o600


def test_native_rejects_format_on_keys_and_bad_values() -> None:
    for body, needle in [
        ("name: k\n  type: key\n  format: pem", "does not apply to keys"),
        ("name: k\n  type: certificat", "did you mean 'certificate'"),
        ("name: k\n  format: pkcs7", "format 'pkcs7' is not valid"),
        ("name: ../k", "not a Key Vault object name"),
    ]:
        with pytest.raises(KeyferryError) as info:
            native.parse(
                native_mount(f"- backend: azure\n  vault: my-kv\n  clientID: c\n  {body}\n")
            )
        assert needle in info.value.message
    with pytest.raises(KeyferryError) as info:
        native.parse(native_mount("- backend: azure\n  vault: a\n  name: k\n"))
    assert "invalid vault name" in info.value.message


# -- the shipped examples parse ---------------------------------------------------------------


def test_examples_parse() -> None:
    import yaml

    root = REPO / "examples" / "azure"
    docs = list(yaml.safe_load_all((root / "secretproviderclass.yaml").read_text()))
    spc = docs[0]
    plan = azure.parse(
        Mount(pod=POD, parameters=spc["spec"]["parameters"], tokens=TOKENS, dialect="azure")
    )
    assert [o.path for s in plan.objects for o in s.outputs] == [
        "db-password",
        "keys/signing.pem",
        "tls/web.pem",
        "tls/web.crt",
        "api-token/0",
        "api-token/1",
    ]
    native_spc = yaml.safe_load((root / "native.yaml").read_text())
    plan = native.parse(native_mount(native_spc["spec"]["parameters"]["objects"]))
    assert [o.path for s in plan.objects for o in s.outputs] == [
        "tls.crt",
        "tls.key",
        "web.pfx",
        "db/creds.json",
        "db/user",
    ]


# -- docs/compatibility.md §3: what upstream does with these inputs, keyferry does too ---
# (a review of the drop-in dialect against docs/compatibility.md found keyferry doing
# something else here, where the page lists no deliberate difference)


def _azure(*items: str, **params: str | None) -> Mount:
    """A class as the compatibility review wrote them: vault my-kv, the tenant, a clientID,
    the workload identity token and the driver's default mode 0644."""
    base: dict[str, str | None] = {
        "keyvaultName": "my-kv",
        "tenantID": TENANT,
        "clientID": "11111111-1111-1111-1111-111111111111",
        "objects": objects(*items),
    }
    base.update(params)
    return Mount(
        pod=POD,
        parameters={k: v for k, v in base.items() if v is not None},
        dialect="azure",
        default_mode=0o644,
        tokens=TOKENS,
    )


def test_azure_cloud_env_file_only_applies_to_azure_stack_cloud() -> None:
    """COMPAT §3.1: cloudEnvFileName needs cloudName AzureStackCloud; upstream only
    reads the file for AzureStackCloud, so a public-cloud class carrying it still
    reads the public cloud. keyferry's ref keeps the file and the backend then uses
    its cloud (or fails FAILED_PRECONDITION when it is not allowlisted)."""
    m = _azure(SECRET, cloudEnvFileName="/etc/kubernetes/custom-cloud.json")
    try:
        plan = azure.parse(m)
    except KeyferryError as exc:  # a clear parse-time rejection would also do
        assert exc.code is Code.INVALID_ARGUMENT
        assert "AzureStackCloud" in exc.message
        return
    ref = plan.objects[0].ref
    assert isinstance(ref, AzureRef)
    assert ref.cloud_env_file == ""


def test_azure_negative_version_history_is_a_single_version() -> None:
    """COMPAT §3.2: objectVersionHistory is an int (yaml.v3), history only when > 1.
    Upstream reads -1 as a single version; keyferry says "'-1' is not an integer"."""
    plan = azure.parse(_azure(f"{SECRET}\nobjectVersionHistory: -1"))
    assert [s.ids for s in plan.objects] == [("secret/db-password",)]
    assert plan.objects[0].outputs[0].path == "db-password"
