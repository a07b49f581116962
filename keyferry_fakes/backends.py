"""Backends that exist only for tests and benchmarks, registered as a cloud is: one
``registry.CLOUDS`` entry and its ``dialect`` and ``backend`` modules.

``gated_cloud()`` adds ``backend: gated``, whose fetches wait at a :class:`Gate` until
the test opens it: the server's behaviour while Mounts are in flight (deadlines,
admission control) is then shown with events, never with timing.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from provider import registry
from provider.backend import FetchResult, Services
from provider.model import Deadline, Fetched, Mount

NATIVE_KEYS = ("name",)


def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
    name = str(fields["name"])
    return name, name


@contextmanager
def registered_cloud(
    name: str, create: Callable[[Mapping[str, Any], Services], Any]
) -> Iterator[None]:
    """``backend: <name>`` in the native dialect while the block runs: ``name`` is its
    locator and output path, ``create`` makes its backend."""
    cloud = registry.Cloud(name, drop_in=False)
    backend = types.ModuleType(cloud.module("backend"))
    dialect = types.ModuleType(cloud.module("dialect"))
    backend.create = create  # type: ignore[attr-defined]
    dialect.NATIVE_KEYS = NATIVE_KEYS  # type: ignore[attr-defined]
    dialect.native_ref = native_ref  # type: ignore[attr-defined]
    registry.CLOUDS[name] = cloud
    sys.modules[backend.__name__] = backend
    sys.modules[dialect.__name__] = dialect
    try:
        yield
    finally:
        del registry.CLOUDS[name]
        del sys.modules[backend.__name__], sys.modules[dialect.__name__]


class Gate:
    """Where ``gated`` fetches wait. ``entered`` counts the fetches that reached it."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._cond = threading.Condition()
        self.entered = 0

    def arrive(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.notify_all()

    def wait_entered(self, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` fetches wait at the gate (AssertionError after ``timeout``
        seconds: a hang guard, not a timing assertion)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.entered >= count, timeout):
                raise AssertionError(f"{self.entered} fetches reached the gate, not {count}")

    def open(self) -> None:
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()


class GatedBackend:
    name = "gated"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def fetch(
        self, mount: Mount, refs: Sequence[Hashable], deadline: Deadline
    ) -> list[FetchResult]:
        self.gate.arrive()
        while not self.gate.is_open:  # cancellable, unlike a thread blocked on the event
            await asyncio.sleep(0.002)
        return [Fetched(content=f"value of {ref}".encode(), version="1") for ref in refs]

    async def close(self) -> None:
        return None


@contextmanager
def gated_cloud() -> Iterator[Gate]:
    """``backend: gated``; the gate is opened on the way out so nothing stays blocked."""
    gate = Gate()
    try:
        with registered_cloud("gated", lambda settings, services: GatedBackend(gate)):
            yield gate
    finally:
        gate.open()
