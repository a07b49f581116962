"""Version history in the native dialect: ``versionHistory: N`` and ``previous: true``.

Every cloud spells them the same way. A cloud's ``native_ref`` reads them with
:func:`read` and puts them on its ref as ``history`` (how many versions) and ``index``
(which one, 0 = the current version); :func:`expand` then turns an object with
``versionHistory: N`` into N objects, one per version, written to ``<path>/0`` ..
``<path>/N-1`` with ObjectVersion ids ``<id>/0`` .. ``<id>/N-1`` (Azure's
``objectVersionHistory`` layout). Slots beyond the versions that exist are skipped (the
backend answers :class:`~provider.errors.Absent`), so when a version is added, the set of
ObjectVersions changes and the driver's rotation rewrites the files.

``previous: true`` is one object: the version before the current one (``history=2,
index=1``; AWS Secrets Manager reads the ``AWSPREVIOUS`` stage instead). It is not
optional: with no previous version the Mount fails with NOT_FOUND naming the object,
unless the object says ``optional: true``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from .dialect import parse_bool
from .errors import InvalidArgument
from .model import ObjectSpec

MAX_HISTORY = 50
"""Each version is one file and one read; Azure's objectVersionHistory has the same limit."""
KEYS = ("versionHistory", "previous")
_SLOT = " version history ["
"""How a slot's label goes on from its object's (:func:`expand`)."""
_COUNT = re.compile(r"^[0-9]{1,6}$")


def read(fields: Mapping[str, Any], where: str) -> tuple[int, int]:
    """``(history, index)`` for a ref from the object's ``versionHistory`` / ``previous``:
    ``(0, 0)`` when neither is given."""
    raw = fields.get("versionHistory")
    previous = parse_bool(fields.get("previous", False), f"{where} previous")
    if raw is None:
        return (2, 1) if previous else (0, 0)
    if previous:
        raise InvalidArgument(
            f"{where}: give either 'versionHistory' (the N most recent versions) or "
            "'previous: true' (the version before the current one), not both"
        )
    text = str(raw).strip() if not isinstance(raw, bool) else ""
    if not _COUNT.match(text) or not 1 <= int(text) <= MAX_HISTORY:
        raise InvalidArgument(
            f"{where}: versionHistory must be a whole number from 1 to {MAX_HISTORY} (how "
            f"many of the most recent versions to write, as <path>/0 .. <path>/N-1), got "
            f"{str(raw)[:40]!r}"
        )
    return int(text), 0


def expand(spec: ObjectSpec) -> list[ObjectSpec]:
    """One object per version slot for a ref with ``history`` and ``index`` 0; any other
    object as it is."""
    history = int(getattr(spec.ref, "history", 0) or 0)
    if history <= 0 or getattr(spec.ref, "index", 0) != 0:
        return [spec]
    return [
        ObjectSpec(
            label=f"{spec.label}{_SLOT}{i}]",
            backend=spec.backend,
            ref=replace(cast(Any, spec.ref), index=i),
            outputs=tuple(replace(o, path=f"{o.path}/{i}") for o in spec.outputs),
            ids=tuple(f"{object_id}/{i}" for object_id in spec.ids),
            # Fewer than N versions is normal: the missing slots are skipped.
            optional=spec.optional or i > 0,
        )
        for i in range(history)
    ]


def describe_slot(index: int, count: int, what: str) -> str:
    """The message for a slot beyond the versions that exist."""
    if index == 1:
        return (
            f"{what} has no version before the current one ({count} version"
            f"{'' if count == 1 else 's'}); for 'previous: true' set optional: true to "
            "mount without it until the first rotation"
        )
    return f"{what}: version history entry {index} does not exist (only {count} versions)"


def id_clashes(specs: Sequence[ObjectSpec]) -> list[InvalidArgument]:
    """An object whose id is also a version slot's (``<id>/<i>``). The pipeline fails a
    Mount where two objects report one id with different versions, but a slot beyond the
    versions that exist is skipped: the clash would surface only at the rotation that adds
    a version. So it is refused when the class is parsed."""
    slots = {i: s.label for s in specs if _is_slot(s) for i in s.ids}
    return [
        InvalidArgument(
            f"{spec.label}: id {object_id!r} is also the id of {slots[object_id]}; give one "
            "of them a different 'id'"
        )
        for spec in specs
        if not _is_slot(spec)
        for object_id in spec.ids
        if object_id in slots
    ]


def _is_slot(spec: ObjectSpec) -> bool:
    return bool(getattr(spec.ref, "history", 0)) and _SLOT in spec.label
