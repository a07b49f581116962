"""Review of the drop-in dialects against docs/compatibility.md.

Each test states what docs/compatibility.md specifies for an input where keyferry currently
does something else and docs/compatibility.md lists no deliberate difference. They parse
only: nothing here reaches the network.
"""

from __future__ import annotations

import textwrap

import pytest

from provider.clouds.aws import dialect as aws
from provider.clouds.azure import dialect as azure
from provider.clouds.azure.ref import WORKLOAD_AUDIENCE, AzureRef
from provider.errors import Code, KeyferryError
from provider.model import Mount, Plan, Pod, Token

POD = Pod("team-a", "web-0", "uid", "web")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TOKENS = {WORKLOAD_AUDIENCE: Token(WORKLOAD_AUDIENCE, "a.b.c")}
SECRET = "objectName: db-password\nobjectType: secret"


def _mount(dialect: str, parameters: dict[str, str], **kw: object) -> Mount:
    return Mount(
        pod=POD,
        parameters=parameters,
        dialect=dialect,
        default_mode=0o644,
        **kw,  # type: ignore[arg-type]
    )


def _azure_objects(*items: str) -> str:
    out = ["array:"]
    for item in items:
        out.append("  - |")
        out.extend("    " + line for line in textwrap.dedent(item).strip().splitlines())
    return "\n".join(out) + "\n"


def _azure(*items: str, **params: str | None) -> Mount:
    base: dict[str, str | None] = {
        "keyvaultName": "my-kv",
        "tenantID": TENANT,
        "clientID": "11111111-1111-1111-1111-111111111111",
        "objects": _azure_objects(*items),
    }
    base.update(params)
    return _mount("azure", {k: v for k, v in base.items() if v is not None}, tokens=TOKENS)


def _azure_error(m: Mount) -> KeyferryError:
    with pytest.raises(KeyferryError) as info:
        azure.parse(m)
    return info.value


# --------------------------------------------------------------------------- azure


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


# --------------------------------------------------------------------------- aws


def _aws(objects: str, **params: str) -> Plan:
    return aws.parse(_mount("aws", {"objects": objects, **params}))
