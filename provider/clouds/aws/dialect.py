"""The ``aws`` dialect: drop-in for the official AWS provider (ASCP 3.1.x).

```yaml
parameters:
  region: us-east-1               # optional; else server config / AWS_REGION / node label
  failoverRegion: us-east-2       # optional; consulted only on throttling/5xx/network errors
  pathTranslation: "_"            # "/" in file names becomes this; "False" keeps "/"
  usePodIdentity: "false"         # true: EKS Pod Identity; false: IRSA
  preferredAddressType: auto      # Pod Identity agent address family: auto | ipv4 | ipv6
  objects: |
    - objectName: MySecret        # name or ARN
      objectType: secretsmanager  # or ssmparameter; optional for an ARN
      objectAlias: my-secret      # output file name
      objectVersion: ...          # SM VersionId / SSM version number
      objectVersionLabel: ...     # SM VersionStage / SSM label
      filePermission: "0600"      # 4 octal digits
      jmesPath:
        - {path: username, objectAlias: user, filePermission: "0400"}
      failoverObject: {objectName: ..., objectVersion: ..., objectVersionLabel: ...}
```

Parsed as upstream does (YAML 1.1, keys case-insensitive, numbers and booleans
in string fields become their decimal / ``true`` text) but stricter (docs/compatibility.md
§1.7): unknown keys, traversal in any output name, collisions after path
translation and special mode bits are errors, all reported at once, before any
network call. How each field is read and checked is in :mod:`.fields`.

Also the native-dialect hook for ``backend: aws`` objects (``NATIVE_KEYS`` and
``native_ref``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from ...dialect import check_keys, collect, load_yaml, parse_bool, require_list
from ...errors import InvalidArgument, KeyferryError, clip, did_you_mean
from ...files import check_path, directory_clashes, path_problem
from ...model import Extraction, Mount, ObjectSpec, Output, Plan
from . import options
from .fields import (
    ARN_SERVICES,
    OBJECT_TYPES,
    Loader,
    check_region,
    check_selector,
    file_permission,
    mapping,
    service_for,
    text,
)
from .ref import (
    AddressType,
    Arn,
    Auth,
    AwsRef,
    AwsSelection,
    AwsTarget,
    Service,
    is_arn,
    parse_arn,
)

PARAMETERS = (
    "objects",
    "region",
    "failoverRegion",
    "pathTranslation",
    "usePodIdentity",
    "preferredAddressType",
)
# Volume-context keys the driver may pass through besides the SPC parameters.
_PASSTHROUGH = ("secretProviderClass", "providerName")
OBJECT_KEYS = (
    "objectName",
    "objectType",
    "objectAlias",
    "objectVersion",
    "objectVersionLabel",
    "filePermission",
    "jmesPath",
    "failoverObject",
)
JMES_KEYS = ("path", "objectAlias", "filePermission")
FAILOVER_KEYS = ("objectName", "objectVersion", "objectVersionLabel")
ADDRESS_TYPES = ("auto", "ipv4", "ipv6")
EXAMPLE = "'- objectName: MySecret\\n  objectType: secretsmanager'"


# --------------------------------------------------------------------------- parse


class _Options:
    def __init__(self, mount: Mount) -> None:
        params = {k: v for k, v in mount.parameters.items() if k not in _PASSTHROUGH}
        params = {k: v for k, v in params.items() if not k.startswith("csi.storage.k8s.io/")}
        check_keys(params, PARAMETERS, "SecretProviderClass parameters")
        where = "parameter"
        self.region = ""
        if params.get("region", "").strip():
            self.region = check_region(params["region"], f"{where} 'region'")
        self.failover_region = ""
        if params.get("failoverRegion", "").strip():
            self.failover_region = check_region(
                params["failoverRegion"], f"{where} 'failoverRegion'"
            )
            if self.failover_region == self.region:
                raise InvalidArgument(
                    f"{where} 'failoverRegion': {self.failover_region!r} is also the primary "
                    "region; a failover region must differ from 'region'"
                )
        translation = params.get("pathTranslation", "")
        if translation == "":
            self.translate = "_"
        elif translation.lower() == "false":
            self.translate = ""
        elif len(translation) != 1 or translation in ("/", "\x00"):
            raise InvalidArgument(
                f"{where} 'pathTranslation': {translation!r} must be \"False\" or a single "
                "character other than '/' (default '_')"
            )
        else:
            self.translate = translation
        self.auth: Auth = "irsa"
        if parse_bool(params.get("usePodIdentity", ""), f"{where} 'usePodIdentity'"):
            self.auth = "pod-identity"
        address = params.get("preferredAddressType", "").strip().lower() or "auto"
        if address not in ADDRESS_TYPES:
            raise InvalidArgument(
                f"{where} 'preferredAddressType': {params['preferredAddressType']!r} is not "
                f"valid{did_you_mean(address, ADDRESS_TYPES)}; use ipv4, ipv6 or auto"
            )
        self.address_type = cast(AddressType, address)
        if "objects" not in params:
            raise InvalidArgument(
                "parameter 'objects' is missing; list the secrets to mount, e.g. " + EXAMPLE
            )
        self.objects_text = params["objects"]

    def file_name(self, name: str) -> str:
        if self.translate:
            return name.replace("/", self.translate)
        return name.lstrip("/")


def parse(mount: Mount) -> Plan:
    opts = _Options(mount)
    items = require_list("objects", load_yaml("objects", opts.objects_text, loader=Loader), EXAMPLE)
    specs: list[ObjectSpec] = []
    errors: list[KeyferryError] = []
    # output file name -> (label, name before translation)
    owners: dict[str, tuple[str, str]] = {}
    for i, item in enumerate(items):
        try:
            spec, raw_names = _object(i, item, opts)
        except KeyferryError as exc:
            errors.append(exc)
            continue
        clash = False
        for out, raw in zip(spec.outputs, raw_names, strict=True):
            other = owners.get(out.path)
            if other is not None:
                clash = True
                errors.append(InvalidArgument(_collision(spec.label, out.path, raw, other)))
            else:
                owners[out.path] = (spec.label, raw)
        if not clash:
            specs.append(spec)
    owner_labels = {path: label for path, (label, _) in owners.items()}
    errors.extend(directory_clashes(owner_labels, "rename one objectAlias"))
    collect(errors, "invalid 'objects' parameter")
    return Plan(dialect="aws", objects=tuple(specs))


def _collision(label: str, path: str, raw: str, other: tuple[str, str]) -> str:
    other_label, other_raw = other
    note = ""
    if raw != path or other_raw != path:
        note = f" ('{raw}' and '{other_raw}' both become '{path}' after pathTranslation)"
    if other_label == label:
        return f"{label}: output file {path!r} is written twice by this object{note}"
    return (
        f"{label}: output file {path!r} is also written by {other_label}{note}; "
        "give one of them a different objectAlias"
    )


def _object_name(fields: Mapping[str, Any], where: str, what: str) -> str:
    name = text(fields.get("objectName"), where, "objectName")
    if not name:
        raise InvalidArgument(f"{where}: 'objectName' is required ({what})")
    return name


def _object(index: int, item: Any, opts: _Options) -> tuple[ObjectSpec, list[str]]:
    where = f"objects[{index}]"
    if item is None:
        raise InvalidArgument(f"{where}: empty entry in 'objects'; remove the stray '-'")
    fields = check_keys(
        mapping(item, where, "each object"), OBJECT_KEYS, where, case_insensitive=True
    )
    name = _object_name(fields, where, "a secret or parameter name or ARN")
    label = f"{where} ({name})"
    object_type = text(fields.get("objectType"), label, "objectType")
    service = service_for(name, object_type, opts.region, label)
    target = AwsTarget(
        name=name,
        version_id=text(fields.get("objectVersion"), label, "objectVersion"),
        version_label=text(fields.get("objectVersionLabel"), label, "objectVersionLabel"),
    )
    check_selector(service, target, label)
    alias = text(fields.get("objectAlias"), label, "objectAlias")
    mode = file_permission(fields.get("filePermission"), label)

    failover = _failover(fields.get("failoverObject"), label, opts, service, target, alias)

    raw = alias or name
    path = opts.file_name(raw)
    check_path(path, f"{label} file name")
    outputs = [Output(path=path, mode=mode)]
    raw_names = [raw]
    jmes = fields.get("jmesPath")
    if jmes is not None:
        if not isinstance(jmes, list):
            raise InvalidArgument(
                f"{label}: 'jmesPath' must be a list of {{path, objectAlias}} entries"
            )
        for j, entry in enumerate(jmes):
            out, raw_alias = _jmes(entry, f"{label} jmesPath[{j}]", opts, mode)
            outputs.append(out)
            raw_names.append(raw_alias)
    ref = AwsRef(
        service=service,
        target=target,
        region=opts.region,
        failover_region=opts.failover_region,
        failover=failover,
        auth=opts.auth,
        address_type=opts.address_type,
    )
    spec = ObjectSpec(
        label=label,
        backend="aws",
        ref=ref,
        outputs=tuple(outputs),
        ids=tuple(o.path for o in outputs),
    )
    return spec, raw_names


def _failover(
    value: Any,
    label: str,
    opts: _Options,
    service: Service,
    primary: AwsTarget,
    alias: str,
) -> AwsTarget | None:
    if value is None:
        return None
    where = f"{label} failoverObject"
    fields = check_keys(
        mapping(value, where, "failoverObject"), FAILOVER_KEYS, where, case_insensitive=True
    )
    name = _object_name(fields, where, "the name or ARN to read in the failover region")
    if not alias:
        raise InvalidArgument(
            f"{label}: an object with a failoverObject needs an 'objectAlias' (the file name)"
        )
    if not opts.failover_region:
        raise InvalidArgument(
            f"{label}: failoverObject needs the 'failoverRegion' parameter to say where it is read"
        )
    if is_arn(name):
        service_for(name, "", opts.failover_region, where)
        arn = parse_arn(name)
        if arn is not None and ARN_SERVICES.get(arn.service) != service:
            raise InvalidArgument(
                f"{where}: the ARN's service {arn.service!r} differs from the primary object's"
            )
    target = AwsTarget(
        name=name,
        version_id=text(fields.get("objectVersion"), where, "objectVersion"),
        version_label=text(fields.get("objectVersionLabel"), where, "objectVersionLabel"),
    )
    check_selector(service, target, where)
    if target.version_id != primary.version_id:
        raise InvalidArgument(
            f"{where}: objectVersion must equal the primary object's objectVersion "
            f"({primary.version_id or 'unset'}); both regions must serve the same version"
        )
    # Unset selectors in the failover object fall back to the primary's (as upstream).
    return AwsTarget(
        name=target.name,
        version_id=target.version_id or primary.version_id,
        version_label=target.version_label or primary.version_label,
    )


def _jmes(entry: Any, where: str, opts: _Options, parent_mode: int | None) -> tuple[Output, str]:
    fields = check_keys(
        mapping(entry, where, "a jmesPath entry"), JMES_KEYS, where, case_insensitive=True
    )
    path = text(fields.get("path"), where, "path")
    if not path:
        raise InvalidArgument(f"{where}: 'path' is required (the JMESPath expression)")
    alias = text(fields.get("objectAlias"), where, "objectAlias")
    if not alias:
        raise InvalidArgument(f"{where}: 'objectAlias' is required (the file name)")
    from ...render import compile_jmespath

    compile_jmespath(path, where)
    file_name = opts.file_name(alias)
    check_path(file_name, f"{where} objectAlias")
    mode = file_permission(fields.get("filePermission"), where)
    return (
        Output(
            path=file_name,
            mode=parent_mode if mode is None else mode,
            extract=Extraction(kind="jmespath", expression=path),
        ),
        alias,
    )


# --------------------------------------------------------------------------- native hook

NATIVE_KEYS = (
    "service",
    "name",
    "versionId",
    "versionStage",
    "version",
    "label",
    "region",
    "failoverRegion",
    "failoverName",
    "auth",
    "addressType",
    *options.KEYS,
)
NATIVE_SERVICES: dict[str, Service] = {
    "secretsmanager": "secretsmanager",
    "ssm": "ssm",
    "ssmparameter": "ssm",
}
NATIVE_AUTH: dict[str, Auth] = {
    "irsa": "irsa",
    "podidentity": "pod-identity",
    "pod-identity": "pod-identity",
}
NATIVE_SELECTORS: dict[Service, tuple[str, str]] = {
    "secretsmanager": ("versionId", "versionStage"),
    "ssm": ("version", "label"),
}
"""Each store's version and label keys."""
_STORES: dict[Service, tuple[str, str]] = {
    "secretsmanager": ("Secrets Manager", "Secrets Manager uses"),
    "ssm": ("SSM parameters", "SSM parameters use"),
}
_OBJECT_TYPE: dict[Service, str] = {service: kind for kind, service in OBJECT_TYPES.items()}


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[AwsRef, str]:
    """``backend: aws`` in the native dialect.

    ``service`` (secretsmanager | ssm; optional for an ARN), ``name`` (name or
    ARN), ``versionId``/``versionStage`` (Secrets Manager), ``version``/``label``
    (SSM), ``region`` (default: the ARN's region, else the server's), and
    ``failoverRegion``/``failoverName``; ``auth: irsa | podIdentity`` and
    ``addressType`` choose the pod identity.
    """
    name = text(fields.get("name"), where, "name").strip()
    if not name:
        raise InvalidArgument(f"{where}: 'name' is required (a secret or parameter name or ARN)")
    arn = parse_arn(name) if is_arn(name) else None
    region = text(fields.get("region"), where, "region").strip()
    if region:
        region = check_region(region, f"{where} region")
    elif arn is not None and arn.region:
        region = check_region(arn.region, f"{where} ARN region")
    named = _service(fields, where)
    if named is not None:
        service = named
        object_type = _OBJECT_TYPE[service]
    elif not is_arn(name):
        raise InvalidArgument(
            f"{where}: 'service' is required when 'name' is not a full ARN; use "
            "service: secretsmanager or service: ssm"
        )
    else:
        object_type = ""
    service = service_for(name, object_type, region, where)
    target = _native_target(fields, where, service, name)
    check_selector(service, target, where)
    failover_region = text(fields.get("failoverRegion"), where, "failoverRegion").strip()
    failover: AwsTarget | None = None
    if failover_region:
        failover_region = check_region(failover_region, f"{where} failoverRegion")
        if failover_region == region:
            raise InvalidArgument(f"{where}: failoverRegion must differ from region")
    failover_name = text(fields.get("failoverName"), where, "failoverName").strip()
    if failover_name:
        if not failover_region:
            raise InvalidArgument(f"{where}: 'failoverName' needs 'failoverRegion'")
        service_for(failover_name, _OBJECT_TYPE[service], failover_region, f"{where} failoverName")
        failover = AwsTarget(failover_name, target.version_id, target.version_label)
    auth, address = _identity(fields, where)
    ref = AwsRef(
        service=service,
        target=target,
        region=region,
        failover_region=failover_region,
        failover=failover,
        auth=auth,
        address_type=cast(AddressType, address),
    )
    return options.apply(fields, where, ref), _default_path(service, name, arn)


def _service(fields: Mapping[str, Any], where: str) -> Service | None:
    """``service``, or ``None`` when it is not given."""
    service_text = text(fields.get("service"), where, "service").strip().lower()
    if not service_text:
        return None
    service = NATIVE_SERVICES.get(service_text)
    if service is None:
        raise InvalidArgument(
            f"{where}: service {service_text!r} is not an AWS secret store"
            f"{did_you_mean(service_text, ('secretsmanager', 'ssm'))}"
        )
    return service


def _identity(fields: Mapping[str, Any], where: str) -> tuple[Auth, str]:
    """``auth`` and ``addressType``: which pod identity reads the object."""
    auth_text = text(fields.get("auth"), where, "auth").strip().lower() or "irsa"
    auth = NATIVE_AUTH.get(auth_text)
    if auth is None:
        hint = did_you_mean(auth_text, ("irsa", "podIdentity"))
        raise InvalidArgument(f"{where}: auth {auth_text!r} is not valid{hint}")
    address = text(fields.get("addressType"), where, "addressType").strip().lower() or "auto"
    if address not in ADDRESS_TYPES:
        raise InvalidArgument(
            f"{where}: addressType {address!r} is not valid{did_you_mean(address, ADDRESS_TYPES)}"
        )
    return auth, address


def _native_target(fields: Mapping[str, Any], where: str, service: Service, name: str) -> AwsTarget:
    """The version selector under the store's own keys; the other store's keys are errors."""
    version_key, label_key = NATIVE_SELECTORS[service]
    for other, keys in NATIVE_SELECTORS.items():
        misplaced = [key for key in keys if key in fields] if other != service else []
        if misplaced:
            raise InvalidArgument(
                f"{where}: '{misplaced[0]}' is for {_STORES[other][0]}; "
                f"{_STORES[service][1]} '{version_key}' and '{label_key}'"
            )
    return AwsTarget(
        name=name,
        version_id=text(fields.get(version_key), where, version_key),
        version_label=text(fields.get(label_key), where, label_key),
    )


def _default_path(service: Service, name: str, arn: Arn | None) -> str:
    if arn is not None:
        resource = arn.resource
        prefix = "secret:" if service == "secretsmanager" else "parameter/"
        name = resource[len(prefix) :] if resource.startswith(prefix) else resource
    return name.strip("/")


# --------------------------------------------------------------------------- select

SELECT_KEYS = ("namePrefix", "tags", "path", "recursive")
_SELECT_SERVICE: dict[str, Service] = {
    "namePrefix": "secretsmanager",
    "tags": "secretsmanager",
    "path": "ssm",
    "recursive": "ssm",
}
_SELECT_FIELDS = ("service", "region", "auth", "addressType", *options.ROLE_KEYS)
MAX_TAGS = 10
"""ListSecrets takes at most 10 filters; more tags than that select nothing useful."""


def native_select(
    select: Mapping[str, Any], fields: Mapping[str, Any], where: str, mount: Mount
) -> tuple[AwsSelection, str]:
    """``select`` of a ``backend: aws`` object (:mod:`provider.selection`): Secrets Manager
    ``namePrefix`` and/or ``tags`` (ListSecrets), or SSM ``path`` with ``recursive``
    (GetParametersByPath). ``service`` may be left out (the keys say which store);
    ``region``, ``auth``, ``addressType`` and the role-chaining keys (``assumeRoleArn``,
    ``externalId``, ``durationSeconds``: list and read as that role) work as for one
    object. The current value of each match is mounted: version pins, history and failover
    do not apply to a selection."""
    misplaced = [k for k in fields if k not in _SELECT_FIELDS]
    if misplaced:
        raise InvalidArgument(
            f"{where}: '{misplaced[0]}' does not apply to 'select' (each selected object is "
            f"read at its current version); allowed beside it: {', '.join(_SELECT_FIELDS)}"
        )
    stores = {_SELECT_SERVICE[k] for k in select}
    named = _service(fields, where)
    if named is not None:
        stores.add(named)
    if len(stores) != 1:
        raise InvalidArgument(
            f"{where}: select mixes Secrets Manager keys (namePrefix, tags) and SSM keys "
            "(path, recursive); one object selects in one store"
        )
    service = stores.pop()
    region = text(fields.get("region"), where, "region").strip()
    if region:
        region = check_region(region, f"{where} region")
    auth, address = _identity(fields, where)
    common: dict[str, Any] = {
        "region": region,
        "auth": auth,
        "address_type": cast(AddressType, address),
        "assume": options.assume_role(fields, where),
    }
    if service == "ssm":
        return _ssm_select(select, where, common)
    prefix = text(select.get("namePrefix"), where, "namePrefix")
    if "namePrefix" in select and not prefix.strip():
        raise InvalidArgument(
            f"{where}: select namePrefix is empty, which would select every secret the "
            "identity can list; give a prefix (e.g. 'app/prod/') or select by tags"
        )
    tags = _tags(select.get("tags"), f"{where} select tags")
    if not prefix and not tags:
        raise InvalidArgument(
            f"{where}: select needs 'namePrefix' or 'tags' for Secrets Manager (or 'path' for SSM)"
        )
    if is_arn(prefix):
        raise InvalidArgument(f"{where}: select namePrefix is a name prefix, not an ARN")
    _no_negation(prefix, where, "select namePrefix")
    default = prefix.strip("/") if prefix and not path_problem(prefix.strip("/")) else ""
    selection = AwsSelection("secretsmanager", name_prefix=prefix, tags=tags, **common)
    return selection, default


def _ssm_select(
    select: Mapping[str, Any], where: str, common: dict[str, Any]
) -> tuple[AwsSelection, str]:
    path = text(select.get("path"), where, "path").strip()
    if not path:
        raise InvalidArgument(f"{where}: select needs 'path' for SSM, e.g. path: /app/prod")
    if not path.startswith("/") or "//" in path or len(path) > 2048:
        raise InvalidArgument(
            f"{where}: select path {path[:80]!r} must be an SSM hierarchy: it starts with "
            "'/', has no empty level and is at most 2048 characters (e.g. /app/prod)"
        )
    trimmed = path.rstrip("/")
    if not trimmed:
        raise InvalidArgument(
            f"{where}: select path '/' would select every parameter the identity can read; "
            "name a hierarchy such as /app/prod"
        )
    recursive = parse_bool(select.get("recursive", False), f"{where} select recursive")
    default = trimmed.strip("/")
    selection = AwsSelection("ssm", path=trimmed, recursive=recursive, **common)
    return selection, default if not path_problem(default) else ""


def _tags(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise InvalidArgument(f"{where}: must be a mapping of tag key to value, e.g. {{team: a}}")
    if len(value) > MAX_TAGS:
        raise InvalidArgument(f"{where}: at most {MAX_TAGS} tags")
    tags: list[tuple[str, str]] = []
    for key, tag in value.items():
        key_text = text(key, where, "tag key").strip()
        if not key_text:
            raise InvalidArgument(f"{where}: a tag key is empty")
        tag_text = text(tag, f"{where} {key_text}", key_text)
        _no_negation(key_text, where, "tag key")
        _no_negation(tag_text, where, "tag value")
        tags.append((key_text, tag_text))
    return tuple(sorted(tags))


def _no_negation(value: str, where: str, what: str) -> None:
    """ListSecrets reads a filter value starting with '!' as NOT that value, and no secret
    name, tag key or tag value can start with '!': such a selection would page through every
    other secret the identity can list, then match none."""
    if value.startswith("!"):
        raise InvalidArgument(
            f"{where}: {what} {clip(value, 80)!r} starts with '!', which ListSecrets "
            "reads as a negation (every secret NOT matching); Secrets Manager names and tags "
            "cannot start with '!', so select by the prefix or tag you want"
        )
