"""The ``azure`` dialect: SecretProviderClasses written for the official Azure
provider (1.8.x), served unchanged on the ``azure`` socket; plus the native
hook for ``backend: azure`` objects.

```yaml
parameters:
  keyvaultName: my-kv
  tenantID: 00000000-0000-0000-0000-000000000000
  clientID: 11111111-1111-1111-1111-111111111111   # workload identity
  objects: |
    array:
      - |
        objectName: db-password
        objectType: secret
        objectAlias: db/password
```

Same file names, bytes, ObjectVersion ids (``<type>/<name>[/<i>]``) and versions
as upstream, with its gaps closed (docs/compatibility.md §3.7): everything is validated here,
before any Kubernetes or Key Vault call; unknown keys, an invalid
``filePermission``, an unknown ``objectType`` and an empty object list are errors;
every failing object is listed in one error.

Case: parameter and field *names* are case-sensitive as upstream (a misspelt
name gets a did-you-mean); the *values* of ``objectType``, ``objectFormat``,
``objectEncoding`` and ``cloudName`` are case-insensitive.

No I/O and no SDK imports here.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import replace
from typing import Any, cast

import yaml

from ...dialect import (
    check_keys,
    collect,
    get_str,
    load_yaml,
    output_problems,
    parse_bool,
    require_list,
    type_name,
)
from ...errors import FailedPrecondition, InvalidArgument, KeyferryError, did_you_mean
from ...files import path_problem
from ...model import Decoding, Mount, ObjectSpec, Output, Plan
from .ref import (
    ANNOTATION_CLIENT_ID,
    AzureAuth,
    AzureRef,
    Conversion,
    ObjectKind,
    check_client_id,
    check_tenant_id,
    require_workload_token,
)

PARAMETERS = (
    "keyvaultName",
    "tenantID",
    "tenantId",
    "cloudName",
    "cloudEnvFileName",
    "clientID",
    "useAzureTokenProxy",
    "useVMManagedIdentity",
    "userAssignedIdentityID",
    "usePodIdentity",
    "objects",
)
OBJECT_KEYS = (
    "objectName",
    "objectType",
    "objectVersion",
    "objectVersionHistory",
    "objectAlias",
    "objectFormat",
    "objectEncoding",
    "filePermission",
)
# Keys the driver or kubelet may leave in the parameters; never ours to judge.
_PASSTHROUGH = ("secretProviderClass", "providerName")

OBJECT_TYPES: tuple[ObjectKind, ...] = ("secret", "key", "cert")
FORMATS = ("pem", "pfx")
ENCODINGS = ("utf-8", "base64", "hex")
BUILTIN_CLOUDS = ("AzurePublicCloud", "AzureChinaCloud", "AzureUSGovernmentCloud")
MAX_HISTORY = 50

_VAULT_NAME = re.compile(r"^[-A-Za-z0-9]{3,24}$")
_OBJECT_NAME = re.compile(r"^[-A-Za-z0-9]{1,127}$")
_VERSION = re.compile(r"^[A-Za-z0-9]{1,64}$")
_CLOUD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT = re.compile(r"^[+-]?(0o[0-7]+|0[0-7]*|[1-9][0-9]*)$")
_OCTAL = re.compile(r"^[0-7]+$")

EXAMPLE = "'array:\\n  - |\\n    objectName: db-password\\n    objectType: secret'"


class _TextLoader(yaml.SafeLoader):
    """Every scalar is its source text (yaml.v3 into string fields); plain nulls are None."""


_TextLoader.yaml_implicit_resolvers = {}


def _text_scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str | None:
    value = loader.construct_scalar(node)
    if node.style is None and value in ("", "~", "null", "Null", "NULL"):
        return None
    return str(value)


_TextLoader.add_constructor("tag:yaml.org,2002:str", _text_scalar)


# --- the drop-in dialect ---------------------------------------------------------


def parse(mount: Mount) -> Plan:
    params = {
        k: v
        for k, v in mount.parameters.items()
        if k not in _PASSTHROUGH and not k.startswith("csi.storage.k8s.io/")
    }
    errors: list[KeyferryError] = []
    try:
        fields = check_keys(params, PARAMETERS, "SecretProviderClass parameters")
    except KeyferryError as exc:
        errors.append(exc)
        fields = {k: v for k, v in params.items() if k in PARAMETERS}
    top = {k: str(v).strip() for k, v in fields.items()}

    vault = top.get("keyvaultName", "")
    if not vault:
        errors.append(
            InvalidArgument("parameter 'keyvaultName' is required: the name of the Key Vault")
        )
    else:
        try:
            check_vault_name(vault, "parameter 'keyvaultName'")
        except KeyferryError as exc:
            errors.append(exc)

    cloud = ""
    try:
        cloud = check_cloud(top.get("cloudName", ""), "parameter 'cloudName'")
        if cloud.lower() == "azurestackcloud" and not top.get("cloudEnvFileName"):
            raise InvalidArgument(
                "parameter 'cloudName': AzureStackCloud needs 'cloudEnvFileName' naming an "
                "environment file the keyferry operator has allowed"
            )
        if top.get("cloudEnvFileName") and cloud.lower() != "azurestackcloud":
            # Upstream reads the file only for AzureStackCloud; silently ignoring it
            # would hide a misconfiguration, so say so.
            raise InvalidArgument(
                "parameter 'cloudEnvFileName' applies only with cloudName: AzureStackCloud; "
                "remove it or set cloudName"
            )
    except KeyferryError as exc:
        errors.append(exc)

    auth = AzureAuth()
    try:
        auth = resolve_auth(
            mount,
            tenant_id=top.get("tenantID") or top.get("tenantId", ""),
            tenant_field="tenantID" if top.get("tenantID") else "tenantId",
            client_id=top.get("clientID", ""),
            use_vm=top.get("useVMManagedIdentity", ""),
            user_assigned=top.get("userAssignedIdentityID", ""),
            use_pod_identity=top.get("usePodIdentity", ""),
            use_token_proxy=top.get("useAzureTokenProxy", ""),
            where="parameter",
        )
    except KeyferryError as exc:
        errors.append(exc)

    base = AzureRef(
        vault=vault,
        kind="secret",
        name="",
        cloud=cloud,
        cloud_env_file=top.get("cloudEnvFileName", ""),
        auth=auth,
    )
    specs: list[ObjectSpec] = []
    try:
        items = _object_items(top.get("objects", ""))
    except KeyferryError as exc:
        errors.append(exc)
        items = []
    seen_ids: dict[str, tuple[str, int]] = {}
    for i, item in enumerate(items):
        try:
            specs.extend(_object(i, item, base, seen_ids))
        except KeyferryError as exc:
            errors.append(exc)
    errors.extend(
        output_problems(
            ((s.label, o) for s in specs for o in s.outputs),
            "give one of them a different objectAlias",
        )
    )
    collect(errors, "invalid SecretProviderClass for the azure provider")
    return Plan(dialect="azure", objects=tuple(specs))


def check_vault_name(vault: str, where: str) -> None:
    if not _VAULT_NAME.match(vault):
        raise InvalidArgument(
            f"{where}: invalid vault name {vault!r}; a Key Vault name is 3-24 characters of "
            "letters, digits and '-' (the name only, not the URL)"
        )


def check_cloud(name: str, where: str) -> str:
    """Canonical built-in name, a custom name for server configuration, or ''."""
    if not name:
        return ""
    for builtin in (*BUILTIN_CLOUDS, "AzureStackCloud"):
        if name.lower() == builtin.lower():
            return builtin
    if name.lower() == "azuregermancloud":
        raise InvalidArgument(
            f"{where}: AzureGermanCloud was closed in 2021; use AzurePublicCloud (Germany "
            "regions) instead"
        )
    if not _CLOUD_NAME.match(name):
        raise InvalidArgument(
            f"{where}: cloud name {name!r} is not valid{did_you_mean(name, BUILTIN_CLOUDS)}"
        )
    return name  # a custom cloud; the backend checks the server configuration has it


def resolve_auth(
    mount: Mount,
    *,
    tenant_id: str,
    client_id: str,
    use_vm: Any,
    user_assigned: str,
    use_pod_identity: Any,
    use_token_proxy: Any,
    where: str,
    tenant_field: str = "tenantID",
) -> AzureAuth:
    """The identity mode a class asks for, checked as far as possible without I/O.

    The tenant id becomes a path segment of the token URL the pod's token is posted
    to, and client ids go into token requests: both are checked here, before any
    Kubernetes or Entra call."""
    if tenant_id:
        check_tenant_id(tenant_id, f"{where} '{tenant_field}'")
    if client_id:
        check_client_id(client_id, f"{where} 'clientID'")
    if user_assigned:
        check_client_id(user_assigned, f"{where} 'userAssignedIdentityID'")
    pod_identity = parse_bool(use_pod_identity, f"{where} 'usePodIdentity'")
    vm = parse_bool(use_vm, f"{where} 'useVMManagedIdentity'")
    proxy = parse_bool(use_token_proxy, f"{where} 'useAzureTokenProxy'")
    if sum((pod_identity, vm, proxy)) > 1:
        raise InvalidArgument(
            f"{where}s: only one identity mode can be enabled at a time: usePodIdentity, "
            "useVMManagedIdentity or useAzureTokenProxy"
        )
    if pod_identity:
        raise FailedPrecondition(
            f"{where} 'usePodIdentity': aad-pod-identity is retired and not supported by "
            "keyferry; use workload identity instead: federate the pod's ServiceAccount with "
            "the managed identity or app registration, set 'clientID' (or annotate the "
            f"ServiceAccount with {ANNOTATION_CLIENT_ID}) and remove usePodIdentity"
        )
    if proxy:
        raise FailedPrecondition(
            f"{where} 'useAzureTokenProxy': AKS identity binding is not supported by keyferry; "
            "use workload identity ('clientID' with a federated credential) and remove "
            "useAzureTokenProxy"
        )
    if user_assigned and not vm:
        raise InvalidArgument(
            f"{where} 'userAssignedIdentityID' only applies with useVMManagedIdentity: \"true\"; "
            "for workload identity put the identity's client id in 'clientID'"
        )
    if vm:
        if client_id:
            raise InvalidArgument(
                f"{where}s: 'clientID' (workload identity) and useVMManagedIdentity are "
                "exclusive; for a user-assigned VM identity use 'userAssignedIdentityID'"
            )
        return AzureAuth(
            mode="vm_managed_identity", tenant_id=tenant_id, user_assigned_identity_id=user_assigned
        )
    if client_id:
        require_workload_token(mount, f"{where} 'clientID'")
        return AzureAuth(mode="workload", tenant_id=tenant_id, client_id=client_id)
    sp = {
        k.lower(): v for k, v in mount.secrets.items() if k.lower() in ("clientid", "clientsecret")
    }
    if sp:
        missing = [k for k in ("clientid", "clientsecret") if not str(sp.get(k, "")).strip()]
        if missing:
            raise InvalidArgument(
                f"nodePublishSecretRef: the Secret has no '{missing[0]}' key; a service "
                "principal needs both 'clientid' and 'clientsecret' (or set 'clientID' for "
                "workload identity)"
            )
        sp_client = check_client_id(
            str(sp["clientid"]).strip(), "nodePublishSecretRef 'clientid'", show=False
        )
        return AzureAuth(mode="service_principal", tenant_id=tenant_id, client_id=sp_client)
    return AzureAuth(mode="auto", tenant_id=tenant_id)


def _object_items(text: str) -> list[Any]:
    if not text:
        raise InvalidArgument(
            "parameter 'objects' is required; list the Key Vault objects under 'array:', e.g. "
            + EXAMPLE
        )
    doc = load_yaml("objects", text, loader=_TextLoader)
    if not isinstance(doc, Mapping):
        raise InvalidArgument(
            f"parameter 'objects' must be a YAML mapping with an 'array' list, got a "
            f"{type_name(doc)}; e.g. {EXAMPLE}"
        )
    doc = check_keys(doc, ("array",), "parameter 'objects'")
    return require_list("objects", doc.get("array"), EXAMPLE)


def _int_text(text: str, where: str) -> int:
    if not _INT.match(text):
        raise InvalidArgument(f"{where}: {text!r} is not an integer")
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.startswith("0o"):
        return sign * int(body[2:], 8)
    if body.startswith("0") and len(body) > 1:
        return sign * int(body, 8)
    return sign * int(body)


def parse_file_permission(text: str, where: str) -> int:
    """Octal digits with an optional leading zero (``0644``, ``644``), at most 0777."""
    if not _OCTAL.match(text):
        raise InvalidArgument(
            f"{where}: {text!r} is not an octal file mode; write octal digits such as "
            '"0644" or "0400"'
        )
    mode = int(text, 8)
    if mode > 0o777:
        raise InvalidArgument(
            f"{where}: mode {text!r} is outside 0000..0777; setuid, setgid and sticky bits "
            "are not allowed"
        )
    return mode


def _object(
    index: int, item: Any, base: AzureRef, seen_ids: dict[str, tuple[str, int]]
) -> list[ObjectSpec]:
    where = f"objects[{index}]"
    if not isinstance(item, str):
        raise InvalidArgument(
            f"{where}: each item under 'array' must be a YAML string holding one object "
            f"(write '- |' and the object's fields indented below it), got a {type_name(item)}"
        )
    doc = load_yaml(f"objects {where}", item, loader=_TextLoader)
    if not isinstance(doc, Mapping):
        raise InvalidArgument(
            f"{where}: must be a mapping with objectName and objectType, got a {type_name(doc)}"
        )
    raw = check_keys(doc, OBJECT_KEYS, where)
    f = {k: get_str(raw, k, where).strip() for k in OBJECT_KEYS}
    name = f["objectName"]
    if not name:
        raise InvalidArgument(f"{where}: 'objectName' is required: the Key Vault object's name")
    kind_text = f["objectType"]
    label = f"{where} ({kind_text or '?'}/{name})"
    if not _OBJECT_NAME.match(name):
        raise InvalidArgument(
            f"{label}: objectName {name!r} is not a Key Vault object name (1-127 letters, "
            "digits and '-')"
        )
    kind = cast(ObjectKind, kind_text.lower())
    if kind not in OBJECT_TYPES:
        raise InvalidArgument(
            f"{label}: objectType {kind_text!r} is not valid; use secret, key or cert"
            + (did_you_mean(kind_text, OBJECT_TYPES) if kind_text else "")
        )
    label = f"{where} ({kind}/{name})"
    version = f["objectVersion"]
    if version.lower() == "latest":
        version = ""
    if version and not _VERSION.match(version):
        raise InvalidArgument(
            f"{label}: objectVersion {version!r} is not a Key Vault version id (letters and "
            "digits, e.g. the 32-character id from the portal); omit it for the latest"
        )
    history = (
        _int_text(f["objectVersionHistory"], f"{label} objectVersionHistory")
        if f["objectVersionHistory"]
        else 0
    )
    if history > MAX_HISTORY:
        raise InvalidArgument(
            f"{label}: objectVersionHistory {history} is above the limit of {MAX_HISTORY} "
            "(each version is one file)"
        )
    fmt = f["objectFormat"].lower()
    if fmt and fmt not in FORMATS:
        raise InvalidArgument(
            f"{label}: objectFormat {f['objectFormat']!r} is not valid; use pem or pfx"
        )
    if fmt == "pfx" and kind != "secret":
        raise InvalidArgument(
            f"{label}: objectFormat pfx needs objectType secret (a certificate's PFX with its "
            "key is read through the secret of the same name)"
        )
    encoding = f["objectEncoding"].lower()
    if encoding:
        if kind != "secret":
            raise InvalidArgument(f"{label}: objectEncoding only applies to objectType secret")
        if encoding not in ENCODINGS:
            raise InvalidArgument(
                f"{label}: objectEncoding {f['objectEncoding']!r} is not valid; use utf-8, "
                "base64 or hex"
            )
    mode = (
        parse_file_permission(f["filePermission"], f"{label} filePermission")
        if f["filePermission"]
        else None
    )
    file_name = f["objectAlias"] or name
    problem = path_problem(file_name)
    if problem:
        field = "objectAlias" if f["objectAlias"] else "objectName"
        raise InvalidArgument(f"{label}: {field} {file_name!r} {problem}")
    decode = cast(Decoding, encoding) if encoding in ("base64", "hex") else None
    conversion: Conversion = "pfx" if fmt == "pfx" else "raw"
    ref = replace(base, kind=kind, name=name, version=version, conversion=conversion)
    object_id = _unique_id(f"{kind}/{name}", (version, history > 1), seen_ids)
    if history <= 1:
        return [
            ObjectSpec(
                label=label,
                backend="azure",
                ref=ref,
                outputs=(Output(path=file_name, mode=mode, decode=decode),),
                ids=(object_id,),
            )
        ]
    return [
        ObjectSpec(
            label=f"{label} version history [{i}]",
            backend="azure",
            ref=replace(ref, history=history, index=i),
            outputs=(Output(path=f"{file_name}/{i}", mode=mode, decode=decode),),
            ids=(f"{object_id}/{i}",),
            # Fewer than N enabled versions is normal: the missing ones are skipped.
            optional=i > 0,
        )
        for i in range(history)
    ]


def _unique_id(object_id: str, selector: tuple[str, bool], seen: dict[str, tuple[str, int]]) -> str:
    """Upstream ids, except that two objects fetching different versions never share one.

    ``selector`` is (objectVersion, with history). The same object twice under two
    aliases keeps one id (same id, same version). History objects report
    ``<id>/<i>``, so they only meet other history objects.
    """
    slot = object_id + ("/*" if selector[1] else "")
    previous = seen.get(slot)
    if previous is None:
        seen[slot] = (selector[0], 0)
        return object_id
    if previous[0] == selector[0]:
        return object_id
    count = previous[1] + 1
    seen[slot] = (previous[0], count)
    return f"{object_id}#{count}"


# --- the native-dialect hook -----------------------------------------------------

NATIVE_KEYS = (
    "vault",
    "name",
    "type",
    "version",
    "format",
    "tenantID",
    "clientID",
    "cloud",
    "useVMManagedIdentity",
    "userAssignedIdentityID",
)
NATIVE_TYPES = ("secret", "key", "certificate")
NATIVE_FORMATS = ("pem", "pfx", "cert", "fullchain", "key")


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
    """``backend: azure`` objects of the native dialect.

    ``type: certificate`` reads the certificate with its key (through its backing
    secret) and ``format`` picks the output: ``pem`` (key + chain, the official
    provider's layout; default), ``cert`` (leaf only, needs only certificate read
    permission), ``fullchain`` (leaf → root), ``key`` (private key, PKCS#8) or
    ``pfx`` (the stored PKCS#12, base64; add ``decode: base64`` for binary).
    List the same certificate twice with different ``format`` and ``path`` for
    separate ``tls.crt`` / ``tls.key`` files: it is fetched once.
    """
    vault = get_str(fields, "vault", where, required=True).strip()
    check_vault_name(vault, f"{where} vault")
    name = get_str(fields, "name", where, required=True).strip()
    if not _OBJECT_NAME.match(name):
        raise InvalidArgument(
            f"{where}: name {name!r} is not a Key Vault object name (1-127 letters, digits and '-')"
        )
    type_text = get_str(fields, "type", where).strip().lower() or "secret"
    if type_text == "cert":
        type_text = "certificate"
    if type_text not in NATIVE_TYPES:
        raise InvalidArgument(
            f"{where}: type {type_text!r} is not valid{did_you_mean(type_text, NATIVE_TYPES)}"
        )
    version = get_str(fields, "version", where).strip()
    if version.lower() == "latest":
        version = ""
    if version and not _VERSION.match(version):
        raise InvalidArgument(f"{where}: version {version!r} is not a Key Vault version id")
    fmt = get_str(fields, "format", where).strip().lower()
    if fmt and fmt not in NATIVE_FORMATS:
        raise InvalidArgument(
            f"{where}: format {fmt!r} is not valid{did_you_mean(fmt, NATIVE_FORMATS)}"
        )
    kind: ObjectKind
    conversion: Conversion
    if type_text == "key":
        if fmt:
            raise InvalidArgument(
                f"{where}: 'format' does not apply to keys (always a PEM public key)"
            )
        kind, conversion = "key", "raw"
    elif type_text == "certificate":
        fmt = fmt or "pem"
        kind = "cert" if fmt == "cert" else "secret"
        conversion = cast(Conversion, "raw" if fmt == "cert" else fmt)
    else:
        kind, conversion = "secret", cast(Conversion, fmt or "raw")
    cloud = check_cloud(get_str(fields, "cloud", where).strip(), f"{where} cloud")
    if cloud.lower() == "azurestackcloud":
        raise InvalidArgument(
            f"{where} cloud: AzureStackCloud is only available through the azure dialect's "
            "cloudEnvFileName; define a custom cloud in the server configuration instead"
        )
    auth = resolve_auth(
        mount,
        tenant_id=get_str(fields, "tenantID", where).strip(),
        client_id=get_str(fields, "clientID", where).strip(),
        use_vm=fields.get("useVMManagedIdentity", ""),
        user_assigned=get_str(fields, "userAssignedIdentityID", where).strip(),
        use_pod_identity="",
        use_token_proxy="",
        where=where,
    )
    ref = AzureRef(
        vault=vault,
        kind=kind,
        name=name,
        version=version,
        conversion=conversion,
        cloud=cloud,
        auth=auth,
    )
    return ref, name
