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
every failing object is listed in one error. The ``objects`` list itself is read in
:mod:`provider.clouds.azure.objects`.

Case: parameter and field *names* are case-sensitive as upstream (a misspelt
name gets a did-you-mean); the *values* of ``objectType``, ``objectFormat``,
``objectEncoding`` and ``cloudName`` are case-insensitive.

No I/O and no SDK imports here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from ... import history
from ...dialect import check_keys, collect, get_str, parse_bool
from ...errors import FailedPrecondition, InvalidArgument, KeyferryError, clip, did_you_mean
from ...model import Mount, Plan
from . import settings
from .objects import check_object_name, check_version, object_specs
from .ref import (
    ANNOTATION_CLIENT_ID,
    MAX_TAGS,
    AzureAuth,
    AzureRef,
    AzureSelection,
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
# Keys the driver or kubelet may leave in the parameters; never ours to judge.
_PASSTHROUGH = ("secretProviderClass", "providerName")

BUILTIN_CLOUDS = tuple(c.name for c in settings.BUILTIN_CLOUDS.values())
_VAULT_NAME = re.compile(r"^[-A-Za-z0-9]{3,24}$")
_CLOUD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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
    specs = object_specs(top.get("objects", ""), base, errors)
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
    *history.KEYS,
)
NATIVE_TYPES = ("secret", "key", "certificate")
NATIVE_FORMATS = ("pem", "pfx", "cert", "fullchain", "key")


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[AzureRef, str]:
    """``backend: azure`` objects of the native dialect.

    ``type: certificate`` reads the certificate with its key (through its backing
    secret) and ``format`` picks the output: ``pem`` (key + chain, the official
    provider's layout; default), ``cert`` (leaf only, needs only certificate read
    permission), ``fullchain`` (leaf → root), ``key`` (private key, PKCS#8) or
    ``pfx`` (the stored PKCS#12, base64; add ``decode: base64`` for binary).
    List the same certificate twice with different ``format`` and ``path`` for
    separate ``tls.crt`` / ``tls.key`` files: it is fetched once.
    """
    check_vault_name(get_str(fields, "vault", where, required=True).strip(), f"{where} vault")
    name = get_str(fields, "name", where, required=True).strip()
    check_object_name(name, f"{where}: name")
    type_text = get_str(fields, "type", where).strip().lower() or "secret"
    if type_text == "cert":
        type_text = "certificate"
    if type_text not in NATIVE_TYPES:
        raise InvalidArgument(
            f"{where}: type {type_text!r} is not valid{did_you_mean(type_text, NATIVE_TYPES)}"
        )
    version = check_version(get_str(fields, "version", where).strip(), f"{where}: version")
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
    ref = _vault_ref(fields, where, mount)
    count, index = history.read(fields, where)  # versionHistory: objectVersionHistory's twin
    ref = replace(ref, kind=kind, name=name, version=version, conversion=conversion)
    return replace(ref, history=count, index=index), name


SELECT_KEYS = ("namePrefix", "tags", "includeCertificates")
_NAME_PREFIX = re.compile(r"[-A-Za-z0-9]{1,127}")
_SELECT_REJECTS = ("version", "format", *history.KEYS)


def native_select(
    select: Mapping[str, Any], fields: Mapping[str, Any], where: str, mount: Mount
) -> tuple[AzureSelection, str]:
    """``select: {namePrefix, tags, includeCertificates}``: the enabled secrets of the
    object's ``vault`` whose name starts with ``namePrefix`` (case-insensitively, as Key
    Vault names are) and that carry every tag in ``tags`` (``'*'``: any value).
    Certificates' backing secrets are left out unless ``includeCertificates: true`` (then
    written as upstream writes them: PEM, key first). The object's ``path`` names the
    directory (no default)."""
    for key in _SELECT_REJECTS:
        if key in fields:
            raise InvalidArgument(
                f"{where}: '{key}' does not apply to 'select' (every selected secret is read "
                "at its latest version, as stored); mount one object by 'name' for that"
            )
    type_text = get_str(fields, "type", where).strip().lower() or "secret"
    if type_text != "secret":
        raise InvalidArgument(
            f"{where}: 'select' lists secrets only (type: secret), not {clip(type_text, 40)!r}; "
            "certificates come with includeCertificates: true"
        )
    check_vault_name(get_str(fields, "vault", where, required=True).strip(), f"{where} vault")
    selection = selection_of(select, f"{where} select")  # before the identity: no token needed
    return replace(selection, base=_vault_ref(fields, where, mount)), ""


def _vault_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> AzureRef:
    """A secret ref with the object's vault, cloud and identity (no name yet)."""
    vault = get_str(fields, "vault", where, required=True).strip()
    check_vault_name(vault, f"{where} vault")
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
    return AzureRef(vault=vault, kind="secret", name="", cloud=cloud, auth=auth)


def selection_of(select: Mapping[str, Any], where: str) -> AzureSelection:
    """The checked ``select`` mapping as an :class:`AzureSelection` (its ``base``, the
    vault and identity, still to be set)."""
    prefix = select.get("namePrefix", "")
    if not isinstance(prefix, str) or (prefix and not _NAME_PREFIX.fullmatch(prefix)):
        raise InvalidArgument(
            f"{where}: namePrefix {clip(str(prefix), 140)!r} cannot start a Key Vault secret "
            "name (1-127 letters, digits and '-')"
        )
    tags = select.get("tags", {})
    if not isinstance(tags, Mapping):
        raise InvalidArgument(f"{where}: 'tags' must be a mapping of tag name to value")
    if not prefix and not tags:
        raise InvalidArgument(
            f"{where}: give 'namePrefix', 'tags' or both; a selection of a whole vault is "
            "not offered (it would mount every secret the identity may read)"
        )
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"{where}: at most {MAX_TAGS} tags (a secret has no more)")
    pairs: list[tuple[str, str]] = []
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 512:
            raise InvalidArgument(f"{where} tags: a tag name is 1-512 characters of text")
        if not isinstance(value, str) or len(value) > 256:
            raise InvalidArgument(
                f"{where} tags: the value of {clip(key, 70)!r} must be text of at most 256 "
                "characters (quote it if YAML reads it as a number or boolean; '*': any value)"
            )
        pairs.append((key, value))
    certificates = parse_bool(
        select.get("includeCertificates", False), f"{where} includeCertificates"
    )
    return AzureSelection(
        base=AzureRef(vault="", kind="secret", name=""),
        name_prefix=prefix,
        tags=tuple(sorted(pairs)),
        include_certificates=certificates,
    )
