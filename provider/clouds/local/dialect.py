"""Native-dialect hook for the ``local`` backend: ``name`` is a path below the
server's configured local root; ``select: {directory, recursive}`` the files in a
directory below it (:mod:`provider.selection`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from ...dialect import get_str, parse_bool
from ...errors import InvalidArgument
from ...files import path_problem
from ...model import Mount
from .ref import LocalRef, LocalSelection

NATIVE_KEYS = ("name",)
SELECT_KEYS = ("directory", "recursive")


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
    name = get_str(fields, "name", where, required=True).strip()
    clean = _relative(name, where)
    if not clean:
        raise InvalidArgument(f"{where}: local name must name a file below the local root")
    return LocalRef(path=clean), clean


def native_select(
    select: Mapping[str, Any], fields: Mapping[str, Any], where: str, mount: Mount
) -> tuple[Hashable, str]:
    """``directory`` (``.`` for the root itself) and ``recursive`` (default false)."""
    if "directory" not in select:
        raise InvalidArgument(
            f"{where}: select needs 'directory' (a directory below the local root; '.' for "
            "the root itself)"
        )
    text = get_str(select, "directory", f"{where} select").strip()
    if not text:
        raise InvalidArgument(
            f"{where}: select directory is empty; name a directory below the local root, or "
            "'.' for the root itself"
        )
    directory = _relative(text, where)
    recursive = parse_bool(select.get("recursive", False), f"{where} select recursive")
    return LocalSelection(directory, recursive), directory


def _relative(name: str, where: str) -> str:
    """``name`` as a clean path relative to the local root (``""`` for the root)."""
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\x00" in name:
        raise InvalidArgument(
            f"{where}: local name {name!r} must be a relative path inside the local root, "
            "without '..' or a leading '/'"
        )
    clean = "/".join(p for p in parts if p not in ("", "."))
    problem = path_problem(clean) if clean else ""
    if problem:
        raise InvalidArgument(f"{where}: local name {clean[:80]!r} {problem}")
    return clean
