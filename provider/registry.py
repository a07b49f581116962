"""The one registry of clouds (backends). Adding a cloud is a folder under
``provider/clouds/`` plus one line here.

Each cloud is a package ``provider.clouds.<name>`` with the same modules:

- ``ref``: the frozen dataclasses that locate one object (shared by dialect and backend);
- ``dialect``: ``NATIVE_KEYS`` and ``native_ref(fields, where, mount)`` for the native
  dialect and, for a cloud with a drop-in dialect, ``parse(mount) -> Plan``;
- ``backend``: ``create(settings, services) -> Backend``.

``ref`` and ``dialect`` never import ``backend``, so a cloud's SDK loads only when its
backend is first used. Modules are found by name and imported on first use: this
registry imports no cloud.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from .errors import FailedPrecondition, InvalidArgument, did_you_mean


@dataclass(frozen=True)
class Cloud:
    name: str
    """Native ``backend:`` value, ``backends.<name>`` settings section, install extra."""
    drop_in: bool
    """Serves the official provider's dialect on a socket of the same name."""

    def module(self, part: str) -> str:
        return f"provider.clouds.{self.name}.{part}"


CLOUDS: dict[str, Cloud] = {
    c.name: c
    for c in (
        Cloud("local", drop_in=False),
        Cloud("aws", drop_in=True),
        Cloud("gcp", drop_in=True),
        Cloud("azure", drop_in=True),
    )
}

NATIVE = "native"
"""The native dialect (``provider.native``), served on socket ``keyferry``."""
DIALECTS: tuple[str, ...] = (NATIVE, *(c.name for c in CLOUDS.values() if c.drop_in))
SOCKETS: dict[str, str] = {
    "keyferry": NATIVE,
    **{c.name: c.name for c in CLOUDS.values() if c.drop_in},
}
"""Default socket name -> the dialect it serves (as ``spec.provider`` names them)."""


def cloud(name: str, where: str = "") -> Cloud:
    found = CLOUDS.get(name)
    if found is None:
        prefix = f"{where}: " if where else ""
        raise InvalidArgument(f"{prefix}unknown backend '{name}'{did_you_mean(name, CLOUDS)}")
    return found


def dialect_module(dialect: str) -> ModuleType:
    """The module whose ``parse(mount)`` reads a socket's parameters."""
    target = "provider.native" if dialect == NATIVE else None
    if dialect in CLOUDS and CLOUDS[dialect].drop_in:
        target = CLOUDS[dialect].module("dialect")
    try:
        if target is None:
            raise KeyError(dialect)
        return importlib.import_module(target)
    except (KeyError, ImportError) as exc:
        raise FailedPrecondition(f"dialect {dialect!r} is not available in this build") from exc


def import_part(name: str, part: str, where: str = "") -> ModuleType:
    """``provider.clouds.<name>.<part>``; FAILED_PRECONDITION naming the extra to install
    when its SDK is missing."""
    found = cloud(name, where)
    try:
        return importlib.import_module(found.module(part))
    except ImportError as exc:
        raise FailedPrecondition(
            f"backend {name!r} is not installed on this node ({exc.name} missing); "
            f"install keyferry[{name}]"
        ) from exc
