"""Native ``backend: gcp`` version history keys: ``versionHistory: N`` and ``previous: true``
(:mod:`provider.history`), for Secret Manager names ending in ``/versions/latest``.
Pure parsing: no SDK, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ... import history
from ...errors import InvalidArgument
from .ref import GcpRef, SecretVersionRef

KEYS = history.KEYS


def apply(fields: Mapping[str, Any], where: str, ref: GcpRef) -> GcpRef:
    count, index = history.read(fields, where)
    if not count:
        return ref
    chosen = "previous" if index else "versionHistory"
    if not isinstance(ref, SecretVersionRef):
        raise InvalidArgument(
            f"{where}: '{chosen}' is for Secret Manager secrets; a Parameter Manager "
            "parameter version names one version"
        )
    if ref.version != "latest":
        raise InvalidArgument(
            f"{where}: '{chosen}' counts back from the newest enabled version; end the name "
            f"with '/versions/latest' instead of '/versions/{ref.version}'"
        )
    return replace(ref, history=count, index=index)
