"""Claims of docs/security.md that no other test states on its own: what a
SecretProviderClass or a pod's volumeAttributes (tenant input, in every dialect) can
never make keyferry do. Parsing only; nothing is fetched."""

from __future__ import annotations

import pytest

from keyferry_fakes.harness import driver_request
from provider import pipeline, protocol
from provider.errors import Code, KeyferryError

NATIVE_OBJECT = "- {backend: local, name: plain.txt}"
AWS_OBJECT = "- {objectName: db, objectType: secretsmanager}"
GCP_ENTRY = "- {resourceName: projects/p/secrets/s/versions/1, path: s}"
AZURE_OBJECTS = "array:\n  - |\n    objectName: db\n    objectType: secret\n"
AZURE_BASE = {"keyvaultName": "kv1", "tenantID": "00000000-0000-0000-0000-000000000000"}
TOKENS = {"api://AzureADTokenExchange": "t", "sts.amazonaws.com": "t"}


def rejection(dialect: str, params: dict[str, str]) -> KeyferryError:
    """What keyferry answers before fetching anything for this SecretProviderClass."""
    request = driver_request(params, tokens=TOKENS)
    mount = protocol.decode(request, dialect=dialect, provider_name="x")
    with pytest.raises(KeyferryError) as info:
        pipeline.make_plan(mount)
    return info.value


def accepted(dialect: str, params: dict[str, str]) -> None:
    request = driver_request(params, tokens=TOKENS)
    pipeline.make_plan(protocol.decode(request, dialect=dialect, provider_name="x"))


# Keys a tenant might try in order to send keyferry elsewhere, or to choose the identity it
# uses: endpoints, roots and identity fallbacks exist only in the server configuration.
REDIRECTS = [
    "endpoint",
    "endpointUrl",
    "endpoint_url",
    "stsEndpoint",
    "vaultUrl",
    "authorityHost",
    "localRoot",
    "roleArn",
    "credentialsFile",
    "allowNodeIdentity",
]
BASES = {
    "native": {"objects": NATIVE_OBJECT},
    "aws": {"objects": AWS_OBJECT, "region": "us-east-1"},
    "gcp": {"secrets": GCP_ENTRY},
    "azure": {**AZURE_BASE, "objects": AZURE_OBJECTS},
}
LIST = {"native": "objects", "aws": "objects", "gcp": "secrets", "azure": "objects"}


def with_object_key(dialect: str, key: str) -> dict[str, str]:
    """The dialect's base class with ``key`` added to its one object."""
    params = dict(BASES[dialect])
    text = params[LIST[dialect]]
    if dialect == "azure":
        params["objects"] = text + f"    {key}: https://attacker.example\n"
    else:
        params[LIST[dialect]] = text.replace("}", f", {key}: https://attacker.example}}")
    return params


@pytest.mark.parametrize("key", REDIRECTS)
@pytest.mark.parametrize("where", ["parameter", "object"])
@pytest.mark.parametrize("dialect", sorted(BASES))
def test_no_parameter_or_object_key_can_redirect_keyferry_or_choose_its_identity(
    dialect: str, where: str, key: str
) -> None:
    accepted(dialect, BASES[dialect])  # the same class without the key mounts
    if where == "parameter":
        params = {**BASES[dialect], key: "https://attacker.example"}
    else:
        params = with_object_key(dialect, key)
    err = rejection(dialect, params)
    assert err.code is Code.INVALID_ARGUMENT
    assert key in err.message
    assert "attacker.example" not in err.message


@pytest.mark.parametrize(
    ("dialect", "params", "names"),
    [
        (
            "aws",
            {"objects": AWS_OBJECT, "region": "attacker.example/x"},
            "region",
        ),
        (
            "aws",
            {
                "objects": "- {objectName: db, objectType: secretsmanager, failoverObject: "
                "{objectName: db}}",
                "region": "us-east-1",
                "failoverRegion": "a.example#",
            },
            "failoverRegion",
        ),
        (
            "gcp",
            {"secrets": GCP_ENTRY.replace("projects/p/", "projects/p/locations/a.example/")},
            "resourceName",
        ),
        ("azure", {**AZURE_BASE, "objects": AZURE_OBJECTS, "keyvaultName": "a.example/x"}, ""),
        (
            "native",
            {"objects": "- {backend: azure, vault: 'a.example/x', name: db, path: db}"},
            "vault",
        ),
    ],
)
def test_tenant_named_regions_locations_and_vaults_are_checked_before_they_name_a_host(
    dialect: str, params: dict[str, str], names: str
) -> None:
    """Regions, locations and vault names become part of a host name (the server's
    template, e.g. ``https://{vault}.vault.azure.net``): only plain names get there."""
    err = rejection(dialect, params)
    assert err.code is Code.INVALID_ARGUMENT
    assert names in err.message


def test_kubelets_pod_keys_cannot_be_overridden_by_parameters() -> None:
    """A volumeAttributes key with kubelet's prefix never reaches the dialect, and the pod
    keyferry acts for is the one kubelet named."""
    request = driver_request(
        {"objects": NATIVE_OBJECT, "csi.storage.k8s.io/serviceAccount.name.x": "admin"}
    )
    mount = protocol.decode(request)
    assert mount.pod.service_account == "web"
    assert dict(mount.parameters) == {"objects": NATIVE_OBJECT}
