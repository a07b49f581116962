"""Native-dialect hook for the ``local`` backend: ``name`` is a path below the
server's configured local root."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from ...dialect import get_str
from ...errors import InvalidArgument
from ...files import path_problem
from ...model import Mount
from .ref import LocalRef

NATIVE_KEYS = ("name",)


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
    name = get_str(fields, "name", where, required=True).strip()
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\x00" in name:
        raise InvalidArgument(
            f"{where}: local name {name!r} must be a relative path inside the local root, "
            "without '..' or a leading '/'"
        )
    clean = "/".join(p for p in parts if p not in ("", "."))
    if not clean:
        raise InvalidArgument(f"{where}: local name must name a file below the local root")
    problem = path_problem(clean)
    if problem:
        raise InvalidArgument(f"{where}: local name {clean[:80]!r} {problem}")
    return LocalRef(path=clean), clean
