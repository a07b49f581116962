"""Parsed plans, reused while everything the dialect read to build them is unchanged.

The driver sends a pod's parameters again on every rotation poll (every 2 minutes by
default), and the pods of one Deployment send the same class: parsing the YAML and
checking every object each time was most of a Mount's CPU. A plan is a pure function
of what its dialect reads of the :class:`~provider.model.Mount`. The parameters are
always read; anything else a dialect looks at (a nodePublishSecretRef key that holds
a service principal's client id, whether the pod sent a token for some audience) is
recorded while it parses, and a cached plan is handed out only to a Mount that gives
the same answers to exactly those reads. So one pod never gets a plan built from
another pod's secrets or tokens, and classes whose dialect reads nothing else share
one plan across pods.

Only successful plans are kept (an invalid class is parsed again and fails again).
The key holds the parameters themselves (they are not secret); the answers to the
recorded reads are held as SHA-256 digests, never as values. The cache is bounded in
entries and in the parameter characters behind them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, cast

from .model import Mount, Plan

Read = tuple[str, object, bool]
"""(Mount attribute, key within it or ``_WHOLE``, whether only the key's presence was
asked (``key in mount.tokens``) rather than its value)."""

_WHOLE = "\x00whole"
_ABSENT = "\x00absent"
_KEYED = ("dialect", "parameters")
"""What every cache key holds already, so reading it is not recorded."""

MAX_ENTRIES = 1024
MAX_VARIANTS = 8
"""Plans kept for one parameter set whose dialect read request data (e.g. per token)."""
MAX_BYTES = 16 * 1024 * 1024
"""Parameter characters behind the kept plans: a plan is about as large as its
parameters."""


class _RecordingMap(Mapping[str, Any]):
    """A Mount mapping that notes which keys were looked at, or that all were."""

    def __init__(self, name: str, data: Mapping[str, Any], reads: set[Read]) -> None:
        self._name = name
        self._data = data
        self._reads = reads

    def __getitem__(self, key: str) -> Any:
        self._reads.add((self._name, key, False))
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        self._reads.add((self._name, key, True))
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self._reads.add((self._name, _WHOLE, False))
        return iter(self._data)

    def __len__(self) -> int:
        self._reads.add((self._name, _WHOLE, False))
        return len(self._data)


class _RecordingMount:
    """Stands in for a Mount while a dialect parses it, recording what it reads."""

    def __init__(self, mount: Mount) -> None:
        self._mount = mount
        self.reads: set[Read] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._mount, name)
        if name in _KEYED:
            return value
        if isinstance(value, Mapping):
            return _RecordingMap(name, value, self.reads)
        self.reads.add((name, _WHOLE, False))
        return value


def _plain(value: Any) -> Any:
    """``value`` as nested tuples of str/int/bool/None: dataclasses with *every* field
    (``repr=False`` ones, such as a token, included), so equal digests mean equal data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            *(_plain(getattr(value, f.name)) for f in dataclasses.fields(value)),
        )
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return (type(value).__name__, repr(value))  # not expected in a Mount


def _answers(mount: Mount, reads: tuple[Read, ...]) -> bytes:
    """The digest of what ``mount`` answers to ``reads``."""
    out = []
    for name, key, presence in reads:
        value = getattr(mount, name)
        if key == _WHOLE:
            out.append(_plain(value))
        elif key not in value:
            out.append(_ABSENT)
        elif presence:
            out.append(True)
        else:
            out.append((1, _plain(value[key])))
    return hashlib.sha256(repr(out).encode("utf-8", "surrogatepass")).digest()


def _key(mount: Mount) -> tuple[Hashable, int]:
    """(the dialect and parameters, their size in characters). Parameters are not secret
    (they are the SecretProviderClass as anyone who may read it sees it), so the key holds
    them as they are; the bound on kept bytes covers them."""
    items = tuple(mount.parameters.items())
    return (mount.dialect, items), sum(len(k) + len(v) for k, v in items)


def _holds(value: Any, kinds: tuple[type, ...], depth: int = 0) -> bool:
    """Whether ``value`` keeps a reference to the request itself (a ref or a transform
    holding the Mount it was parsed from): such a plan is never kept, since it would
    carry this request's data to the next one."""
    if isinstance(value, kinds):
        return True
    if depth > 12 or value is None or isinstance(value, str | bytes | int | float | bool | type):
        return False
    if dataclasses.is_dataclass(value):
        children: Iterable[Any] = (getattr(value, f.name) for f in dataclasses.fields(value))
    elif isinstance(value, Mapping):
        children = (*value.keys(), *value.values())
    elif isinstance(value, list | tuple | set | frozenset):
        children = value
    elif isinstance(value, functools.partial):
        children = (value.func, *value.args, *value.keywords.values())
    elif isinstance(value, types.MethodType):
        children = (value.__self__, value.__func__)
    elif isinstance(value, types.FunctionType):
        children = (c.cell_contents for c in value.__closure__ or () if _filled(c))
    else:
        return False
    return any(_holds(child, kinds, depth + 1) for child in children)


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


@dataclasses.dataclass
class _Variant:
    reads: tuple[Read, ...]
    answers: bytes
    plan: Plan


@dataclasses.dataclass
class _Entry:
    size: int
    variants: list[_Variant]


class PlanCache:
    """``get(mount)`` returns the plan ``parse(mount)`` would build, parsing only when no
    kept plan's reads give the same answers for this Mount."""

    def __init__(
        self,
        parse: Callable[[Mount], Plan],
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.parse = parse
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, mount: Mount) -> tuple[Plan, bool]:
        """(the plan, whether it came from the cache)."""
        key, size = _key(mount)
        entry = self._entries.get(key)
        if entry is not None:
            for variant in entry.variants:
                if not variant.reads or _answers(mount, variant.reads) == variant.answers:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return variant.plan, True
        self.misses += 1
        recorder = _RecordingMount(mount)
        plan = self.parse(cast(Mount, recorder))
        if not _holds(plan, (_RecordingMount, _RecordingMap)):
            reads = tuple(sorted(recorder.reads, key=repr))
            self._keep(key, size, _Variant(reads, _answers(mount, reads), plan))
        return plan, False

    def _keep(self, key: Hashable, size: int, variant: _Variant) -> None:
        if size > self.max_bytes // 4:
            return  # a huge class is parsed each time rather than crowd out the others
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(size, [])
            self._bytes += size
        entry.variants.insert(0, variant)
        del entry.variants[MAX_VARIANTS:]
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.size

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
