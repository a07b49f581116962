"""The ``gcp`` dialect: the official Google provider's SecretProviderClass format
(provider 1.15.x), served on the ``gcp`` socket, plus the native-dialect hook
for ``backend: gcp`` objects.

```yaml
parameters:
  auth: pod-adc                       # optional: pod-adc (default) | provider-adc
  secrets: |
    - resourceName: "projects/p/secrets/db/versions/latest"
      path: "db/password"             # or fileName:
      mode: 0400                      # optional integer; YAML 0400/0o400 are octal
      extractJSONKey: password        # optional; or extractYAMLKey:
```

Parsed like upstream's yaml.v3 decoding: keys are case-sensitive, string
fields take the scalar's source text, ``mode`` takes decimal, ``0o``/``0``
octal, ``0x`` hex. Unlike upstream, everything is validated here, before any
network call, and every failing entry is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ...dialect import (
    MAX_PARAMETER_BYTES,
    check_keys,
    check_yaml_events,
    collect,
    output_problems,
    yaml_error,
)
from ...errors import InvalidArgument, KeyferryError, clip, did_you_mean
from ...files import check_path
from ...model import Extraction, Mount, ObjectSpec, Output, Plan
from . import options
from .ref import (
    ANY_VALUE,
    FORMATS,
    KEY_JSON,
    LABEL_KEY,
    LABEL_VALUE,
    LOCATION,
    PROJECT,
    AuthMode,
    GcpRef,
    SecretSelection,
    explain_bad_name,
    parse_resource_name,
)

PARAMETERS = ("secrets", "auth")
ENTRY_KEYS = ("resourceName", "fileName", "path", "mode", "extractJSONKey", "extractYAMLKey")
AUTH_MODES = ("pod-adc", "provider-adc")
EXAMPLE = (
    '\'- resourceName: "projects/my-project/secrets/db/versions/latest"\\n  path: "db-password"\''
)

NATIVE_KEYS = ("name", "auth", *options.KEYS)
SELECT_KEYS = ("project", "location", "labels")
MAX_SELECT_LABELS = 64
"""A secret carries at most 64 labels, so a selection needs no more."""
NATIVE_AUTH: tuple[AuthMode, ...] = ("pod-adc", "provider-adc", "node-publish-secret")

# Keys of the other providers' formats that people carry over.
_MISNAMED = {
    "objectName": "resourceName",
    "name": "resourceName",
    "resource": "resourceName",
    "objectAlias": "path",
    "filePermission": "mode",
    "jmesPath": "extractJSONKey",
    "objectVersion": "resourceName",
}
_NULLS = ("", "~", "null", "Null", "NULL")
_INT = re.compile(r"^[-+]?(?:0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+|0[0-7]*|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Scalar:
    """A YAML scalar as written: its text and whether it was quoted or a block."""

    text: str
    plain: bool

    @property
    def is_null(self) -> bool:
        return self.plain and self.text in _NULLS


_MAX_NODES = 10_000
_MAX_DEPTH = 32


def _walk(node: yaml.Node, where: str, budget: list[int], depth: int = 0) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise InvalidArgument(
            f"{where}: the YAML document is too large or too deeply nested (aliases expand "
            "in place); list the secrets plainly"
        )
    if isinstance(node, yaml.ScalarNode):
        return Scalar(str(node.value), node.style is None)
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(child, f"{where}[{i}]", budget, depth + 1) for i, child in enumerate(node.value)
        ]
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InvalidArgument(f"{where}: mapping keys must be plain names")
            key = str(key_node.value)
            if key in out:
                raise InvalidArgument(
                    f"{where}: key '{key}' is given twice (yaml.v3, used by the official "
                    "provider, rejects this too)"
                )
            out[key] = _walk(value_node, f"{where}.{key}", budget, depth + 1)
        return out
    raise InvalidArgument(f"{where}: unsupported YAML node")  # pragma: no cover


def load_source_yaml(parameter: str, text: str) -> Any:
    """Parse YAML keeping every scalar's source text (no type resolution)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PARAMETER_BYTES:
        raise InvalidArgument(
            f"parameter '{parameter}' is larger than {MAX_PARAMETER_BYTES // 1024} KiB"
        )
    try:
        check_yaml_events(parameter, text, yaml.SafeLoader)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise InvalidArgument(f"parameter '{parameter}' is nested too deeply") from None
    except yaml.YAMLError as exc:
        raise yaml_error(parameter, exc) from None
    if node is None:
        return None
    return _walk(node, parameter, [_MAX_NODES])


def _text(value: Any, key: str, where: str) -> str:
    """A string field: the scalar's source text, like yaml.v3 into a Go string."""
    if value is None or (isinstance(value, Scalar) and value.is_null):
        return ""
    if not isinstance(value, Scalar):
        kind = "list" if isinstance(value, list) else "mapping"
        raise InvalidArgument(f"{where}: '{key}' must be a string, got a {kind}")
    return value.text


def parse_int_mode(value: Any, where: str) -> int | None:
    """``mode`` as yaml.v3 decodes an unquoted integer; range 0..0o777 enforced."""
    if value is None or (isinstance(value, Scalar) and value.is_null):
        return None
    if not isinstance(value, Scalar):
        raise InvalidArgument(f"{where}: 'mode' must be an integer such as 0400, not a list/map")
    text = value.text.strip().replace("_", "")
    if not value.plain:
        raise InvalidArgument(
            f"{where}: 'mode' is quoted ({value.text!r}); write it unquoted, e.g. mode: 0400 "
            "(octal) or mode: 256 (decimal) — the official provider rejects quoted modes too"
        )
    if not _INT.match(text):
        raise InvalidArgument(
            f"{where}: 'mode' {value.text!r} is not an integer; write e.g. 0400 (octal) or "
            "256 (decimal)"
        )
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.startswith(("0o", "0x", "0b")):
        number = int(body, 0)
    elif body.startswith("0") and len(body) > 1:
        number = int(body, 8)
    else:
        number = int(body)
    number *= sign
    if not 0 <= number <= 0o777:
        hint = ""
        if body.isdigit() and not body.startswith("0") and set(body) <= set("01234567"):
            hint = f"; {body} is read as decimal — write 0{body} for octal"
        raise InvalidArgument(
            f"{where}: 'mode' {value.text} (= {oct(number)}) is outside 0..0777{hint}; "
            "setuid, setgid and sticky bits are not allowed"
        )
    return number


def _entry(
    index: int, item: Any, auth: AuthMode, key_json: bool, explicit: bool
) -> tuple[GcpRef, Output, str]:
    where = f"secrets[{index}]"
    if not isinstance(item, dict):
        raise InvalidArgument(
            f"{where}: each entry must be a mapping with 'resourceName' and 'path', e.g. {EXAMPLE}"
        )
    for key in item:
        hint = _MISNAMED.get(key)
        if hint:
            raise InvalidArgument(f"{where}: unknown key '{key}' (did you mean '{hint}'?)")
    fields = check_keys(item, ENTRY_KEYS, where)
    resource = _text(fields.get("resourceName"), "resourceName", where)
    if not resource:
        raise InvalidArgument(f"{where}: 'resourceName' is required, e.g. {EXAMPLE}")
    ref = parse_resource_name(resource, auth=auth, key_json=key_json, auth_explicit=explicit)
    label = f"{where} ({resource})"
    if ref is None:
        raise InvalidArgument(
            f"{where}: resourceName {resource!r} {explain_bad_name(resource)}; use one of: "
            + "; ".join(FORMATS)
        )
    path = _text(fields.get("path"), "path", label) or _text(
        fields.get("fileName"), "fileName", label
    )
    if not path:
        raise InvalidArgument(
            f"{label}: give 'path' (or the older 'fileName'): the file this secret is written to"
        )
    field = "path" if _text(fields.get("path"), "path", label) else "fileName"
    check_path(path, f"{label} {field}")
    mode = parse_int_mode(fields.get("mode"), label)
    json_key = _text(fields.get("extractJSONKey"), "extractJSONKey", label)
    yaml_key = _text(fields.get("extractYAMLKey"), "extractYAMLKey", label)
    extraction: Extraction | None = None
    if json_key and yaml_key:
        raise InvalidArgument(
            f"{label}: 'extractJSONKey' and 'extractYAMLKey' are both set; keep one of them"
        )
    for key in ("extractJSONKey", "extractYAMLKey"):
        if key in fields and not _text(fields[key], key, label):
            raise InvalidArgument(f"{label}: '{key}' is empty; name the top-level key to extract")
    if json_key:
        extraction = Extraction(kind="json_key", expression=json_key)
    elif yaml_key:
        extraction = Extraction(kind="yaml_key", expression=yaml_key)
    return ref, Output(path=path, mode=mode, extract=extraction), resource


def _auth(mount: Mount) -> tuple[AuthMode, bool, bool]:
    """(auth mode, key.json present, auth given explicitly)."""
    raw = mount.parameters.get("auth", "")
    text = raw.strip() if isinstance(raw, str) else ""
    key_json = bool(mount.secrets.get(KEY_JSON, "").strip())
    if text and text not in AUTH_MODES:
        raise InvalidArgument(
            f"parameter 'auth': unknown auth configuration {text!r}"
            f"{did_you_mean(text, AUTH_MODES)}; leave it empty for the pod's workload identity"
        )
    if not text:
        return ("node-publish-secret" if key_json else "pod-adc"), key_json, False
    mode: AuthMode = "provider-adc" if text == "provider-adc" else "pod-adc"
    return mode, key_json, True


def parse(mount: Mount) -> Plan:
    params = check_keys(mount.parameters, PARAMETERS, "SecretProviderClass parameters")
    text = params.get("secrets")
    if text is None or not str(text).strip():
        raise InvalidArgument(
            "parameter 'secrets' is missing; list the secrets to mount, e.g. " + EXAMPLE
        )
    errors: list[KeyferryError] = []
    try:
        auth, key_json, explicit = _auth(mount)
    except KeyferryError as exc:
        errors.append(exc)
        auth, key_json, explicit = "pod-adc", False, False
    items = load_source_yaml("secrets", str(text))
    if isinstance(items, Scalar) and items.is_null:
        items = None
    if items is None or items == []:
        raise InvalidArgument(
            "parameter 'secrets' lists no secrets; the driver would fail the mount with "
            f"'missing object versions'. Add at least one, e.g. {EXAMPLE}"
        )
    if not isinstance(items, list):
        raise InvalidArgument(
            f"parameter 'secrets' must be a YAML list (items starting with '- '), e.g. {EXAMPLE}"
        )
    # Entries naming the same resource are fetched once and reported under one id
    # (the resourceName, as upstream), with one output per entry.
    grouped: dict[str, tuple[GcpRef, list[Output], list[str]]] = {}
    planned: list[tuple[str, Output]] = []
    for i, item in enumerate(items):
        try:
            ref, output, resource = _entry(i, item, auth, key_json, explicit)
        except KeyferryError as exc:
            errors.append(exc)
            continue
        planned.append((f"secrets[{i}] ({resource})", output))
        if resource in grouped:
            grouped[resource][1].append(output)
            grouped[resource][2].append(f"secrets[{i}]")
        else:
            grouped[resource] = (ref, [output], [f"secrets[{i}]"])
    errors.extend(output_problems(planned, "give one of them a different path"))
    collect(errors, "invalid 'gcp' SecretProviderClass")
    specs = tuple(
        ObjectSpec(
            label=f"{', '.join(entries)} ({resource})",
            backend="gcp",
            ref=ref,
            outputs=tuple(outputs),
            ids=(resource,),
        )
        for resource, (ref, outputs, entries) in grouped.items()
    )
    return Plan(dialect="gcp", objects=specs)


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
    """``name``: a full Secret Manager / Parameter Manager version name; ``auth``:
    pod-adc (default) | provider-adc | node-publish-secret."""
    raw_name = fields.get("name")
    if not isinstance(raw_name, str) or not raw_name:
        raise InvalidArgument(
            f"{where}: 'name' is required for backend gcp: a full resource name such as "
            "projects/my-project/secrets/db/versions/latest"
        )
    auth = _native_auth(fields, where, mount)
    ref = parse_resource_name(
        raw_name, auth=auth, key_json=auth == "node-publish-secret", auth_explicit=True
    )
    if ref is None:
        raise InvalidArgument(
            f"{where}: gcp name {raw_name!r} {explain_bad_name(raw_name)}; use one of: "
            + "; ".join(FORMATS)
        )
    return options.apply(fields, where, ref), ref.short


def native_select(
    select: Mapping[str, Any], fields: Mapping[str, Any], where: str, mount: Mount
) -> tuple[SecretSelection, str]:
    """``select: {project, location, labels}``: the Secret Manager secrets of a project
    (a regional location's, with ``location``) carrying every label; ``auth`` as for one
    object. The object's ``path`` names the directory (no default). Every match is read
    at its latest version: ``versionHistory`` and ``previous`` do not apply."""
    misplaced = [k for k in fields if k != "auth"]
    if misplaced:
        raise InvalidArgument(
            f"{where}: '{misplaced[0]}' does not apply to 'select' (each selected secret is "
            "read at its latest version); allowed beside it: auth"
        )
    return selection_of(select, where, _native_auth(fields, where, mount)), ""


def selection_of(select: Mapping[str, Any], where: str, auth: AuthMode) -> SecretSelection:
    """The checked ``select`` mapping as a :class:`SecretSelection`."""
    at = f"{where} select"
    project = select.get("project")
    if not isinstance(project, str) or not PROJECT.fullmatch(project.strip()):
        raise InvalidArgument(
            f"{at}: 'project' is required: the project id (or number) the secrets are "
            f"listed in, e.g. project: my-project (got {clip(str(project or ''), 40)!r})"
        )
    location = select.get("location", "")
    if not isinstance(location, str) or (location and not LOCATION.fullmatch(location.strip())):
        raise InvalidArgument(
            f"{at}: location {clip(str(location), 40)!r} is not a Google Cloud location such "
            "as us-east1; omit it for the global service"
        )
    location = location.strip()
    labels = select.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise InvalidArgument(
            f"{at}: 'labels' is required: the labels every selected secret carries, e.g. "
            "labels: {app: web} ('*' as a value: any value)"
        )
    if len(labels) > MAX_SELECT_LABELS:
        raise InvalidArgument(f"{at}: at most {MAX_SELECT_LABELS} labels (a secret has no more)")
    pairs: list[tuple[str, str]] = []
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                f"{at} labels: key {clip(str(key), 70)!r} is not a Secret Manager label key: "
                "1-63 lowercase letters, digits, '_' and '-', starting with a letter"
            )
        if not isinstance(value, str) or not (value == ANY_VALUE or LABEL_VALUE.fullmatch(value)):
            raise InvalidArgument(
                f"{at} labels: the value of {key!r} ({clip(str(value), 70)!r}) is not a "
                "Secret Manager label value: 1-63 lowercase letters, digits, '_' and '-' "
                f"(quote it if YAML reads it as a number or boolean), or '{ANY_VALUE}' for "
                "any value"
            )
        pairs.append((key, value))
    return SecretSelection(
        project.strip(),
        tuple(sorted(pairs)),
        "" if location == "global" else location,
        auth=auth,
        key_json=auth == "node-publish-secret",
        auth_explicit=True,
    )


def _native_auth(fields: Mapping[str, Any], where: str, mount: Mount) -> AuthMode:
    raw_auth = fields.get("auth", "pod-adc")
    auth_text = raw_auth.strip() if isinstance(raw_auth, str) else ""
    if auth_text not in NATIVE_AUTH:
        raise InvalidArgument(
            f"{where}: auth {auth_text[:40]!r} is not supported"
            f"{did_you_mean(auth_text[:40], NATIVE_AUTH)}"
            if isinstance(raw_auth, str)
            else f"{where}: auth must be a string such as 'pod-adc'"
        )
    auth: AuthMode = "pod-adc"
    for candidate in NATIVE_AUTH:
        if candidate == auth_text:
            auth = candidate
    if auth == "node-publish-secret" and not mount.secrets.get(KEY_JSON, "").strip():
        raise InvalidArgument(
            f"{where}: auth node-publish-secret needs a nodePublishSecretRef Secret with a "
            f"'{KEY_JSON}' key on the volume"
        )
    return auth
