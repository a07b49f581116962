"""SecretSync objects (secret-sync.x-k8s.io), checked offline against their classes.

The secrets-store-sync-controller copies the files of one Mount of a SecretSync's class into
a Kubernetes Secret: each ``secretObject.data[].sourcePath`` must be a file that Mount
writes, and its CRD admits only one name, optionally followed by ``/<number>``
(docs/sync-controller.md). ``keyferry validate`` checks both for every SecretSync whose
class is among the files it was given, so a sync that would fail with the controller's
"file not found" is caught before it is applied.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KIND = "SecretSync"
GROUP = "secret-sync.x-k8s.io/"
SOURCE_PATH = re.compile(
    r"[A-Za-z0-9.](?:[-A-Za-z0-9]+(?:[-._a-zA-Z0-9]?[A-Za-z0-9])*)?(?:/[0-9]+)*"
)
"""The pattern the SecretSync CRD puts on ``sourcePath`` (and on ``targetKey``)."""
MAX_KEY = 253


@dataclass(frozen=True)
class SecretSync:
    name: str
    namespace: str
    class_name: str
    service_account: str
    data: tuple[tuple[str, str], ...]
    """(sourcePath, targetKey) pairs."""
    source: str
    """``file: document N (SecretSync name)`` for messages."""
    problems: tuple[str, ...] = ()
    """What is wrong with the object itself, whatever its class."""


def load(path: str | Path) -> list[SecretSync]:
    """The SecretSync objects of a multi-document YAML file (others are not looked at; a
    file that is not YAML is reported by the SecretProviderClass loader)."""
    try:
        docs = list(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return []
    found = []
    for i, doc in enumerate(docs, start=1):
        if isinstance(doc, Mapping) and doc.get("kind") == KIND:
            found.append(_read(doc, f"{path}: document {i}"))
    return found


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _read(doc: Mapping[str, Any], where: str) -> SecretSync:
    meta, spec = (_mapping(doc.get(key)) for key in ("metadata", "spec"))
    name = _text(meta.get("name"))
    source = f"{where} ({KIND} {name or '<unnamed>'})"
    problems = []
    if not _text(doc.get("apiVersion")).startswith(GROUP):
        problems.append(f"apiVersion must be {GROUP}v1alpha1")
    for key in ("secretProviderClassName", "serviceAccountName"):
        if not _text(spec.get(key)):
            problems.append(f"spec.{key} is required (a string)")
    secret = spec.get("secretObject")
    entries = secret.get("data") if isinstance(secret, Mapping) else None
    data: list[tuple[str, str]] = []
    if not isinstance(entries, list) or not entries:
        problems.append("spec.secretObject.data must list at least one {sourcePath, targetKey}")
        entries = []
    keys: set[str] = set()
    for n, entry in enumerate(entries):
        at = f"spec.secretObject.data[{n}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{at} must be a mapping with sourcePath and targetKey")
            continue
        path, key = _text(entry.get("sourcePath")), _text(entry.get("targetKey"))
        for field, value in (("sourcePath", path), ("targetKey", key)):
            if not value:
                problems.append(f"{at}.{field} is required (a string)")
            elif len(value) > MAX_KEY or not SOURCE_PATH.fullmatch(value):
                fix = (
                    "; the controller can copy only a top-level file: give the object a path "
                    "without '/'"
                    if field == "sourcePath" and "/" in value
                    else ""
                )
                problems.append(
                    f"{at}.{field} {value!r} is not admitted by the SecretSync CRD (one name of "
                    f"letters, digits, '-', '_' and '.', optionally followed by /N){fix}"
                )
        if key in keys:
            problems.append(f"{at}.targetKey {key!r} is given twice")
        keys.add(key)
        data.append((path, key))
    return SecretSync(
        name=name,
        namespace=_text(meta.get("namespace")),
        class_name=_text(spec.get("secretProviderClassName")),
        service_account=_text(spec.get("serviceAccountName")),
        data=tuple(data),
        source=source,
        problems=tuple(problems),
    )


def check(sync: SecretSync, files: Iterable[str] | None) -> list[str]:
    """What is wrong with ``sync``, given the files its class's Mount writes (``None``: the
    class was not among the files given, so its sourcePaths are not checked)."""
    problems = list(sync.problems)
    if files is None:
        return problems
    written = sorted(files)
    for n, (path, _) in enumerate(sync.data):
        if path and path not in written:
            close = difflib.get_close_matches(path, written, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"spec.secretObject.data[{n}].sourcePath {path!r} is not a file of "
                f"SecretProviderClass {sync.class_name}{hint}; its Mount writes: "
                + ", ".join(written)
            )
    return problems
