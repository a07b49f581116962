"""How one field of an AWS object is read and checked, in both dialects.

The drop-in dialect reads ``objects`` as ASCP does: YAML 1.1 (integers keep the
text they were written as, so an unquoted ``filePermission: 0600`` can be
explained; timestamps stay text), and a number or boolean in a string field
becomes the text Go's YAML-to-JSON step gives it. The checks of region names,
ARN versus ``objectType`` (ASCP's validateObjectName) and version selectors are
shared with the native dialect's ``backend: aws`` objects.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import yaml

from ...dialect import parse_mode
from ...errors import InvalidArgument, did_you_mean
from .ref import REGION_RE, AwsTarget, Service, is_arn, parse_arn

OBJECT_TYPES: dict[str, Service] = {"secretsmanager": "secretsmanager", "ssmparameter": "ssm"}
ARN_SERVICES: dict[str, Service] = {"secretsmanager": "secretsmanager", "ssm": "ssm"}

_FILE_PERMISSION = re.compile(r"^[0-7]{4}$")
_SSM_VERSION = re.compile(r"^[1-9][0-9]{0,18}$")


# --------------------------------------------------------------------------- YAML 1.1


class _Int(int):
    """A YAML 1.1 integer that remembers how it was written (for messages)."""

    source: str = ""


class Loader(yaml.SafeLoader):
    """YAML 1.1 like ASCP's parser, but timestamps stay text and integers keep
    their source text so ``filePermission: 0600`` can be explained."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = _Int(yaml.SafeLoader.construct_yaml_int(loader, node))
    value.source = str(node.value)
    return value


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(node.value)


Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def go_float32(value: float) -> str:
    """``strconv.FormatFloat(v, 'g', -1, 32)``, which ASCP's YAML→JSON step applies
    to a float in a string field."""
    if math.isnan(value):
        return ".nan"
    try:
        f32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond float32: Go's float32(v) is an infinity
        f32 = math.copysign(math.inf, value)
    if math.isinf(f32):
        return ".inf" if f32 > 0 else "-.inf"
    shown = f"{f32:.8e}"
    for precision in range(9):
        shown = f"{f32:.{precision}e}"
        if struct.unpack("f", struct.pack("f", float(shown)))[0] == f32:
            break
    mantissa, _, exp_text = shown.partition("e")
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


def text(value: Any, where: str, key: str) -> str:
    """A string field as ASCP reads it: numbers and booleans become their text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return go_float32(value)
    if isinstance(value, str):
        return value
    kind = "list" if isinstance(value, list) else "mapping"
    raise InvalidArgument(f"{where}: '{key}' must be a string, got a {kind}")


# --------------------------------------------------------------------------- checks


def check_region(value: str, where: str) -> str:
    region = value.strip()
    if not REGION_RE.match(region):
        raise InvalidArgument(
            f"{where}: {value!r} is not an AWS region name (like 'us-east-1' or 'eu-west-3')"
        )
    return region


def file_permission(value: Any, where: str) -> int | None:
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
    written = text(value, where, "filePermission")
    if not _FILE_PERMISSION.match(written):
        raise InvalidArgument(
            f'{where}: filePermission {written!r} must be exactly 4 octal digits, e.g. "0600"'
        )
    return parse_mode(written, f"{where} filePermission")


def service_for(name: str, object_type: str, region: str, where: str) -> Service:
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


def check_selector(service: Service, target: AwsTarget, where: str) -> None:
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


def mapping(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: {what} must be a mapping, got {type(value).__name__}")
    return value
