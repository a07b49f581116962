"""Dialects turn SecretProviderClass parameters into one :class:`~provider.model.Plan`.

Pure functions, no I/O. The socket a request arrived on decides the dialect.
Each dialect module exposes ``parse(mount) -> Plan``. Cloud dialect modules
also expose ``NATIVE_KEYS`` and ``native_ref(fields, where)`` so the native
dialect can describe objects of that backend (see :mod:`.native`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import FailedPrecondition
from ..model import Mount, Plan

MODULES = {
    "native": "provider.dialects.native",
    "aws": "provider.dialects.aws",
    "gcp": "provider.dialects.gcp",
    "azure": "provider.dialects.azure",
}


def module(dialect: str) -> ModuleType:
    try:
        return importlib.import_module(MODULES[dialect])
    except (KeyError, ImportError) as exc:
        raise FailedPrecondition(f"dialect {dialect!r} is not available in this build") from exc


def parse(mount: Mount) -> Plan:
    plan: Plan = module(mount.dialect).parse(mount)
    return plan
