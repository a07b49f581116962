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
network call.

Also the native-dialect hook for ``backend: aws`` objects (``NATIVE_KEYS`` and
``native_ref``).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Hashable, Mapping
from typing import Any, cast

import yaml

from ...dialect import check_keys, collect, load_yaml, parse_bool, parse_mode, require_list
from ...errors import InvalidArgument, KeyferryError, did_you_mean
from ...files import check_path, directory_clashes
from ...model import Extraction, Mount, ObjectSpec, Output, Plan
from .ref import (
    REGION_RE,
    AddressType,
    Auth,
    AwsRef,
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
OBJECT_TYPES: dict[str, Service] = {"secretsmanager": "secretsmanager", "ssmparameter": "ssm"}
ARN_SERVICES: dict[str, Service] = {"secretsmanager": "secretsmanager", "ssm": "ssm"}
ADDRESS_TYPES = ("auto", "ipv4", "ipv6")
EXAMPLE = "'- objectName: MySecret\\n  objectType: secretsmanager'"

_FILE_PERMISSION = re.compile(r"^[0-7]{4}$")
_SSM_VERSION = re.compile(r"^[1-9][0-9]{0,18}$")


# --------------------------------------------------------------------------- YAML


class _Int(int):
    """A YAML 1.1 integer that remembers how it was written (for messages)."""

    source: str = ""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 like ASCP's parser, but timestamps stay text and integers keep
    their source text so ``filePermission: 0600`` can be explained."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = _Int(yaml.SafeLoader.construct_yaml_int(loader, node))
    value.source = str(node.value)
    return value


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _go_float32(value: float) -> str:
    """``strconv.FormatFloat(v, 'g', -1, 32)``, which ASCP's YAML→JSON step applies
    to a float in a string field."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    f32 = struct.unpack("f", struct.pack("f", value))[0]
    text = f"{f32:.8e}"
    for precision in range(9):
        text = f"{f32:.{precision}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            break
    mantissa, _, exp_text = text.partition("e")
    digits = mantissa.replace(".", "").replace("-", "").rstrip("0") or "0"
    exp = int(exp_text)
    sign = "-" if f32 < 0 or (f32 == 0 and math.copysign(1, f32) < 0) else ""
    if exp < -4 or exp >= 6:  # Go: shortest 'g' switches to %e at exponent 6
        rest = digits[1:]
        return (
            f"{sign}{digits[0]}{'.' + rest if rest else ''}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
        )
    point = exp + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _text(value: Any, where: str, key: str) -> str:
    """A string field as ASCP reads it: numbers and booleans become their text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _go_float32(value)
    if isinstance(value, str):
        return value
    kind = "list" if isinstance(value, list) else "mapping"
    raise InvalidArgument(f"{where}: '{key}' must be a string, got a {kind}")


# --------------------------------------------------------------------------- helpers


def check_region(value: str, where: str) -> str:
    region = value.strip()
    if not REGION_RE.match(region):
        raise InvalidArgument(
            f"{where}: {value!r} is not an AWS region name (like 'us-east-1' or 'eu-west-3')"
        )
    return region


def _file_permission(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        source = getattr(value, "source", str(int(value)))
        looks_octal = bool(_FILE_PERMISSION.match(source))
        fix = f'"{source}"' if looks_octal else '"0644"'
        raise InvalidArgument(
            f"{where}: filePermission {source} is not quoted, so YAML reads it as the number "
            f"{int(value)}; write it as a quoted 4-digit octal string, e.g. filePermission: {fix}"
        )
    text = _text(value, where, "filePermission")
    if not _FILE_PERMISSION.match(text):
        raise InvalidArgument(
            f'{where}: filePermission {text!r} must be exactly 4 octal digits, e.g. "0600"'
        )
    return parse_mode(text, f"{where} filePermission")


def _service_for(name: str, object_type: str, region: str, where: str) -> Service:
    """ASCP's validateObjectName: ARN shape, ARN region, objectType vs ARN service."""
    arn = None
    if is_arn(name):
        arn = parse_arn(name)
        if arn is None:
            raise InvalidArgument(
                f"{where}: {name!r} is not a valid ARN; it needs six ':'-separated parts, "
                "e.g. arn:aws:secretsmanager:us-east-1:123456789012:secret:MySecret-a1b2c3"
            )
        if region and arn.region != region:
            raise InvalidArgument(
                f"{where}: the ARN's region {arn.region!r} does not match the region "
                f"{region!r} it is read from; use an ARN of that region or change 'region'"
            )
    if not object_type:
        if arn is None:
            raise InvalidArgument(
                f"{where}: 'objectType' is required when 'objectName' is not a full ARN; "
                "use objectType: secretsmanager or objectType: ssmparameter"
            )
        service = ARN_SERVICES.get(arn.service)
        if service is None:
            raise InvalidArgument(
                f"{where}: the ARN's service {arn.service!r} is not supported; "
                "use a 'secretsmanager' or 'ssm' ARN"
            )
        return service
    service = OBJECT_TYPES.get(object_type)
    if service is None:
        hint = " ('ssm' is spelled 'ssmparameter' here)" if object_type == "ssm" else ""
        raise InvalidArgument(
            f"{where}: objectType {object_type!r} is not valid{hint}"
            f"{did_you_mean(object_type, OBJECT_TYPES) if not hint else ''}; "
            "use 'secretsmanager' or 'ssmparameter'"
        )
    if arn is not None and ARN_SERVICES.get(arn.service) != service:
        raise InvalidArgument(
            f"{where}: objectType {object_type!r} does not match the ARN's service "
            f"{arn.service!r}; drop objectType or fix the ARN"
        )
    return service


def _check_selector(service: Service, target: AwsTarget, where: str) -> None:
    if service == "ssm":
        if target.version_id and target.version_label:
            raise InvalidArgument(
                f"{where}: an SSM parameter takes objectVersion or objectVersionLabel, not both"
            )
        if target.version_id and not _SSM_VERSION.match(target.version_id):
            raise InvalidArgument(
                f"{where}: SSM objectVersion {target.version_id!r} must be a version number "
                "such as 3 (use objectVersionLabel for a label)"
            )
        if target.version_label:
            if target.version_label.isdigit():
                raise InvalidArgument(
                    f"{where}: SSM objectVersionLabel {target.version_label!r} is a number, "
                    "which SSM reads as a version; use objectVersion for versions"
                )
            if ":" in target.version_label or len(target.version_label) > 100:
                raise InvalidArgument(
                    f"{where}: SSM objectVersionLabel {target.version_label!r} is not a valid "
                    "label (at most 100 letters, digits, '.', '-' or '_')"
                )
    else:
        vid = target.version_id
        if vid and not 32 <= len(vid) <= 64:
            raise InvalidArgument(
                f"{where}: objectVersion {vid!r} is not a Secrets Manager VersionId "
                "(32 to 64 characters); use objectVersionLabel for a staging label"
            )
        if len(target.version_label) > 256:
            raise InvalidArgument(f"{where}: objectVersionLabel is longer than 256 characters")


def _mapping(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: {what} must be a mapping, got {type(value).__name__}")
    return value


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
    items = require_list(
        "objects", load_yaml("objects", opts.objects_text, loader=_Loader), EXAMPLE
    )
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


def _object(index: int, item: Any, opts: _Options) -> tuple[ObjectSpec, list[str]]:
    where = f"objects[{index}]"
    if item is None:
        raise InvalidArgument(f"{where}: empty entry in 'objects'; remove the stray '-'")
    fields = check_keys(
        _mapping(item, where, "each object"), OBJECT_KEYS, where, case_insensitive=True
    )
    name = _text(fields.get("objectName"), where, "objectName")
    if not name:
        raise InvalidArgument(
            f"{where}: 'objectName' is required (a secret or parameter name or ARN)"
        )
    label = f"{where} ({name})"
    object_type = _text(fields.get("objectType"), label, "objectType")
    service = _service_for(name, object_type, opts.region, label)
    target = AwsTarget(
        name=name,
        version_id=_text(fields.get("objectVersion"), label, "objectVersion"),
        version_label=_text(fields.get("objectVersionLabel"), label, "objectVersionLabel"),
    )
    _check_selector(service, target, label)
    alias = _text(fields.get("objectAlias"), label, "objectAlias")
    mode = _file_permission(fields.get("filePermission"), label)

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
        _mapping(value, where, "failoverObject"), FAILOVER_KEYS, where, case_insensitive=True
    )
    name = _text(fields.get("objectName"), where, "objectName")
    if not name:
        raise InvalidArgument(
            f"{where}: 'objectName' is required (the name or ARN to read in the failover region)"
        )
    if not alias:
        raise InvalidArgument(
            f"{label}: an object with a failoverObject needs an 'objectAlias' (the file name)"
        )
    if not opts.failover_region:
        raise InvalidArgument(
            f"{label}: failoverObject needs the 'failoverRegion' parameter to say where it is read"
        )
    if is_arn(name):
        _service_for(name, "", opts.failover_region, where)
        arn = parse_arn(name)
        if arn is not None and ARN_SERVICES.get(arn.service) != service:
            raise InvalidArgument(
                f"{where}: the ARN's service {arn.service!r} differs from the primary object's"
            )
    target = AwsTarget(
        name=name,
        version_id=_text(fields.get("objectVersion"), where, "objectVersion"),
        version_label=_text(fields.get("objectVersionLabel"), where, "objectVersionLabel"),
    )
    _check_selector(service, target, where)
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
        _mapping(entry, where, "a jmesPath entry"), JMES_KEYS, where, case_insensitive=True
    )
    path = _text(fields.get("path"), where, "path")
    if not path:
        raise InvalidArgument(f"{where}: 'path' is required (the JMESPath expression)")
    alias = _text(fields.get("objectAlias"), where, "objectAlias")
    if not alias:
        raise InvalidArgument(f"{where}: 'objectAlias' is required (the file name)")
    from ...render import compile_jmespath

    compile_jmespath(path, where)
    file_name = opts.file_name(alias)
    check_path(file_name, f"{where} objectAlias")
    mode = _file_permission(fields.get("filePermission"), where)
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


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
    """``backend: aws`` in the native dialect.

    ``service`` (secretsmanager | ssm; optional for an ARN), ``name`` (name or
    ARN), ``versionId``/``versionStage`` (Secrets Manager), ``version``/``label``
    (SSM), ``region`` (default: the ARN's region, else the server's), and
    ``failoverRegion``/``failoverName``; ``auth: irsa | podIdentity`` and
    ``addressType`` choose the pod identity.
    """
    name = _text(fields.get("name"), where, "name").strip()
    if not name:
        raise InvalidArgument(f"{where}: 'name' is required (a secret or parameter name or ARN)")
    arn = parse_arn(name) if is_arn(name) else None
    region = _text(fields.get("region"), where, "region").strip()
    if region:
        region = check_region(region, f"{where} region")
    elif arn is not None and arn.region:
        region = check_region(arn.region, f"{where} ARN region")
    service_text = _text(fields.get("service"), where, "service").strip().lower()
    if service_text:
        service = NATIVE_SERVICES.get(service_text)
        if service is None:
            raise InvalidArgument(
                f"{where}: service {service_text!r} is not an AWS secret store"
                f"{did_you_mean(service_text, ('secretsmanager', 'ssm'))}"
            )
        object_type = "secretsmanager" if service == "secretsmanager" else "ssmparameter"
    elif not is_arn(name):
        raise InvalidArgument(
            f"{where}: 'service' is required when 'name' is not a full ARN; use "
            "service: secretsmanager or service: ssm"
        )
    else:
        object_type = ""
    service = _service_for(name, object_type, region, where)
    if service == "secretsmanager":
        for key in ("version", "label"):
            if key in fields:
                raise InvalidArgument(
                    f"{where}: '{key}' is for SSM parameters; Secrets Manager uses "
                    "'versionId' and 'versionStage'"
                )
        target = AwsTarget(
            name=name,
            version_id=_text(fields.get("versionId"), where, "versionId"),
            version_label=_text(fields.get("versionStage"), where, "versionStage"),
        )
    else:
        for key in ("versionId", "versionStage"):
            if key in fields:
                raise InvalidArgument(
                    f"{where}: '{key}' is for Secrets Manager; SSM parameters use "
                    "'version' and 'label'"
                )
        target = AwsTarget(
            name=name,
            version_id=_text(fields.get("version"), where, "version"),
            version_label=_text(fields.get("label"), where, "label"),
        )
    _check_selector(service, target, where)
    failover_region = _text(fields.get("failoverRegion"), where, "failoverRegion").strip()
    failover: AwsTarget | None = None
    if failover_region:
        failover_region = check_region(failover_region, f"{where} failoverRegion")
        if failover_region == region:
            raise InvalidArgument(f"{where}: failoverRegion must differ from region")
    failover_name = _text(fields.get("failoverName"), where, "failoverName").strip()
    if failover_name:
        if not failover_region:
            raise InvalidArgument(f"{where}: 'failoverName' needs 'failoverRegion'")
        _service_for(
            failover_name,
            "secretsmanager" if service == "secretsmanager" else "ssmparameter",
            failover_region,
            f"{where} failoverName",
        )
        failover = AwsTarget(failover_name, target.version_id, target.version_label)
    auth_text = _text(fields.get("auth"), where, "auth").strip().lower() or "irsa"
    auth = NATIVE_AUTH.get(auth_text)
    if auth is None:
        hint = did_you_mean(auth_text, ("irsa", "podIdentity"))
        raise InvalidArgument(f"{where}: auth {auth_text!r} is not valid{hint}")
    address = _text(fields.get("addressType"), where, "addressType").strip().lower() or "auto"
    if address not in ADDRESS_TYPES:
        raise InvalidArgument(
            f"{where}: addressType {address!r} is not valid{did_you_mean(address, ADDRESS_TYPES)}"
        )
    ref = AwsRef(
        service=service,
        target=target,
        region=region,
        failover_region=failover_region,
        failover=failover,
        auth=auth,
        address_type=cast(AddressType, address),
    )
    return ref, _default_path(service, name, arn)


def _default_path(service: Service, name: str, arn: Any) -> str:
    if arn is not None:
        resource = str(arn.resource)
        prefix = "secret:" if service == "secretsmanager" else "parameter/"
        name = resource[len(prefix) :] if resource.startswith(prefix) else resource
    return name.strip("/")
