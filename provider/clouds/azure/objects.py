"""The ``objects`` parameter of the ``azure`` dialect: a YAML mapping whose ``array``
lists one YAML string per Key Vault object (``objectName``, ``objectType``, ...).

Each object becomes one :class:`~provider.model.ObjectSpec` (N with
``objectVersionHistory: N``), with upstream's file names and ObjectVersion ids.
Scalars are read as their source text, as yaml.v3 reads them into upstream's string
fields. No I/O and no SDK imports here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import yaml

from ...dialect import (
    check_keys,
    get_str,
    load_yaml,
    output_problems,
    require_list,
    type_name,
)
from ...errors import InvalidArgument, KeyferryError, did_you_mean
from ...files import path_problem
from ...model import Decoding, ObjectSpec, Output
from .ref import AzureRef, Conversion, ObjectKind

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
OBJECT_TYPES: tuple[ObjectKind, ...] = ("secret", "key", "cert")
FORMATS = ("pem", "pfx")
ENCODINGS = ("utf-8", "base64", "hex")
MAX_HISTORY = 50

_OBJECT_NAME = re.compile(r"^[-A-Za-z0-9]{1,127}$")
_VERSION = re.compile(r"^[A-Za-z0-9]{1,64}$")
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


def object_specs(text: str, base: AzureRef, errors: list[KeyferryError]) -> list[ObjectSpec]:
    """The objects listed in ``text``, each built on ``base`` (vault, cloud, identity);
    every problem is added to ``errors`` and the other objects are still read."""
    specs: list[ObjectSpec] = []
    try:
        items = _object_items(text)
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
    return specs


def check_object_name(name: str, where: str) -> None:
    if not _OBJECT_NAME.match(name):
        raise InvalidArgument(
            f"{where} {name!r} is not a Key Vault object name (1-127 letters, digits and '-')"
        )


def check_version(text: str, where: str, hint: str = "") -> str:
    """A Key Vault version id, or '' (the latest) for nothing or ``latest``."""
    version = "" if text.lower() == "latest" else text
    if version and not _VERSION.match(version):
        raise InvalidArgument(f"{where} {version!r} is not a Key Vault version id{hint}")
    return version


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
    check_object_name(name, f"{label}: objectName")
    kind = cast(ObjectKind, kind_text.lower())
    if kind not in OBJECT_TYPES:
        raise InvalidArgument(
            f"{label}: objectType {kind_text!r} is not valid; use secret, key or cert"
            + (did_you_mean(kind_text, OBJECT_TYPES) if kind_text else "")
        )
    label = f"{where} ({kind}/{name})"
    version = check_version(
        f["objectVersion"],
        f"{label}: objectVersion",
        " (letters and digits, e.g. the 32-character id from the portal); omit it for the latest",
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
