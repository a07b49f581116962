"""Fail fast while an endpoint is down: one circuit breaker per backend endpoint.

Every cloud call gate wraps its network call in :meth:`Breakers.guard`. After
``fail_fast_threshold`` calls in a row to one endpoint failed at the transport (no
connection, a reset, a timeout, a 5xx), the endpoint is *open*: calls to it fail at once
with UNAVAILABLE naming the backend and the endpoint, instead of each Mount waiting out
its budget. After ``fail_fast_seconds`` one Mount is let through as a probe (*half
open*); every call of that Mount goes out, the others still fail fast. The probe's
first verdict decides: a success closes the endpoint, a failure opens it again for
twice as long (at most ``fail_fast_max_seconds``). 4xx answers prove the endpoint
works (they close it); throttling and cancelled calls prove nothing either way.

Only endpoints that failed are remembered (at most :data:`MAX_ENDPOINTS`), so a
SecretProviderClass naming a thousand unreachable vaults costs memory once and only
ever trips its own endpoints. Metrics carry ``Endpoint.label``, which comes from server
configuration (a template such as ``{vault}.vault.azure.net``), never ``name``.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .errors import Code, KeyferryError, Unavailable
from .observe import Metrics, get_logger

log = get_logger("breaker")

MAX_ENDPOINTS = 1024
PROBE_TIMEOUT = 300.0
"""A probe that has not reported after this long is presumed lost; another may go."""


class State(enum.IntEnum):
    """The value of ``keyferry_endpoint_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Verdict(enum.Enum):
    """What one call's outcome says about its endpoint."""

    UP = "up"
    """It answered (a success, or a 4xx: the caller's problem)."""
    DOWN = "down"
    """Connection refused or reset, a timeout, a 5xx."""
    NEUTRAL = "neutral"
    """Nothing either way: throttling, a cancelled call, a local error."""


@dataclass(frozen=True)
class Endpoint:
    backend: str
    name: str
    """The endpoint as a message names it, e.g. ``myvault.vault.azure.net``; the key."""
    label: str
    """Its metric label: from server configuration only (``{vault}.vault.azure.net``)."""


@dataclass
class _Circuit:
    endpoint: Endpoint
    failures: int = 0
    state: State = State.CLOSED
    opened_at: float = 0.0
    open_for: float = 0.0
    probe: object | None = None
    probe_since: float = 0.0
    last: str = ""


def verdict_of(error: BaseException) -> Verdict:
    """The verdict on a call whose failure is already a :class:`KeyferryError` (Google's
    clients translate before they return): UNAVAILABLE and DEADLINE_EXCEEDED mean down,
    RESOURCE_EXHAUSTED (quota) and INTERNAL nothing, any other answer means up."""
    if isinstance(error, KeyferryError):
        if error.code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
            return Verdict.DOWN
        if error.code in (Code.RESOURCE_EXHAUSTED, Code.INTERNAL):
            return Verdict.NEUTRAL
        return Verdict.UP
    if isinstance(error, TimeoutError):
        return Verdict.DOWN
    return Verdict.NEUTRAL


class Breakers:
    """The circuit breakers of one server, one per endpoint that has failed."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        open_seconds: float = 1.0,
        max_open_seconds: float = 30.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        """Calls in a row that must fail before an endpoint opens; 0 turns this off."""
        self.open_seconds = open_seconds
        self.max_open_seconds = max(max_open_seconds, open_seconds)
        self.metrics = metrics
        self.clock = clock
        self._circuits: OrderedDict[str, _Circuit] = OrderedDict()
        self._labels: set[tuple[str, str]] = set()
        """(backend, label) of every endpoint that ever failed: their gauge stays, at 0."""
        self._lock = threading.Lock()  # /metrics and /readyz read from their own threads
        if metrics is not None:
            metrics.endpoint_states = self.states

    # -- the gate --------------------------------------------------------------------

    @asynccontextmanager
    async def guard(
        self,
        endpoint: Endpoint | None,
        owner: object,
        verdict: Callable[[BaseException], Verdict] = verdict_of,
    ) -> AsyncIterator[None]:
        """Around one call to ``endpoint`` made for one Mount (``owner``: an object that
        is the same for every call of that Mount, e.g. its Deadline). Raises
        :class:`Unavailable` at once while the endpoint is open; ``verdict`` judges an
        exception the call raises (its success is :attr:`Verdict.UP`)."""
        if endpoint is None or self.threshold <= 0:
            yield
            return
        self.admit(endpoint, owner)
        try:
            yield
        except asyncio.CancelledError:
            self.record(endpoint, owner, Verdict.NEUTRAL)
            raise
        except BaseException as exc:
            self.record(endpoint, owner, verdict(exc), _describe(exc))
            raise
        self.record(endpoint, owner, Verdict.UP)

    def admit(self, endpoint: Endpoint, owner: object) -> None:
        """Return if a call to ``endpoint`` for ``owner`` may go out, else raise."""
        with self._lock:
            circuit = self._circuits.get(endpoint.name)
            if circuit is None or circuit.state is State.CLOSED:
                return
            now = self.clock()
            if circuit.state is State.OPEN and now >= circuit.opened_at + circuit.open_for:
                self._set(circuit, State.HALF_OPEN)
            if circuit.state is State.HALF_OPEN:
                if circuit.probe is owner:
                    return
                if circuit.probe is None or now - circuit.probe_since > PROBE_TIMEOUT:
                    circuit.probe, circuit.probe_since = owner, now
                    log.info("probing endpoint", extra=_fields(circuit))
                    return
                wait = "until the probe in flight answers"
            else:
                wait = f"for {circuit.opened_at + circuit.open_for - now:.1f}s more"
            if self.metrics is not None:
                self.metrics.endpoint_fail_fast.labels(endpoint.backend, endpoint.label).inc()
            raise Unavailable(
                f"{endpoint.backend} endpoint {endpoint.name} is down: {circuit.failures} "
                f"calls in a row failed (last: {circuit.last}); keyferry fails calls to it at "
                f"once {wait}, then lets one Mount probe it; kubelet retries the mount"
            )

    def record(self, endpoint: Endpoint, owner: object, verdict: Verdict, reason: str = "") -> None:
        """Take one call's outcome into account."""
        if self.threshold <= 0:
            return
        with self._lock:
            circuit = self._circuits.get(endpoint.name)
            if verdict is Verdict.UP:
                if circuit is not None:
                    del self._circuits[endpoint.name]
                    if circuit.state is not State.CLOSED:
                        self._set(circuit, State.CLOSED)
                return
            if verdict is Verdict.NEUTRAL:
                if circuit is not None and circuit.probe is owner:
                    circuit.probe = None  # the next call probes instead
                return
            if circuit is None:
                circuit = self._circuits[endpoint.name] = _Circuit(endpoint)
                self._labels.add((endpoint.backend, endpoint.label))
                self._forget_oldest()
            self._circuits.move_to_end(endpoint.name)
            circuit.failures += 1
            circuit.last = reason or "failure"
            if circuit.state is State.HALF_OPEN and circuit.probe is owner:
                self._open(circuit, min(circuit.open_for * 2, self.max_open_seconds))
            elif circuit.state is State.CLOSED and circuit.failures >= self.threshold:
                self._open(circuit, self.open_seconds)

    # -- state -------------------------------------------------------------------------

    def state(self, endpoint: Endpoint) -> State:
        with self._lock:
            circuit = self._circuits.get(endpoint.name)
            return State.CLOSED if circuit is None else circuit.state

    def snapshot(self) -> list[tuple[Endpoint, State, int]]:
        """``(endpoint, state, failures in a row)`` of every endpoint failing now."""
        with self._lock:
            return [(c.endpoint, c.state, c.failures) for c in self._circuits.values()]

    def states(self) -> dict[tuple[str, str], int]:
        """The worst state (an int) under each (backend, label) that ever failed; the
        labels stay, at 0, once their endpoints are up again."""
        with self._lock:
            worst = dict.fromkeys(self._labels, 0)
            for c in self._circuits.values():
                key = (c.endpoint.backend, c.endpoint.label)
                worst[key] = max(worst[key], int(c.state))
            return worst

    def detail(self) -> list[str]:
        """Lines for ``/readyz?verbose``: endpoints that are not closed, by label."""
        worst: dict[tuple[str, str], list[State]] = {}
        for endpoint, state, _ in self.snapshot():
            if state is not State.CLOSED:
                worst.setdefault((endpoint.backend, endpoint.label), []).append(state)
        if not worst:
            return ["endpoints: every backend endpoint is up (no calls failing in a row)"]
        return [
            f"endpoint {backend} {label}: {sum(s is State.OPEN for s in states)} open, "
            f"{sum(s is State.HALF_OPEN for s in states)} probing (fail fast; see the logs "
            "for which)"
            for (backend, label), states in sorted(worst.items())
        ]

    def _open(self, circuit: _Circuit, seconds: float) -> None:
        circuit.opened_at, circuit.open_for, circuit.probe = self.clock(), seconds, None
        self._set(circuit, State.OPEN)

    def _set(self, circuit: _Circuit, state: State) -> None:
        circuit.state = state
        if self.metrics is not None:
            endpoint = circuit.endpoint
            self.metrics.endpoint_transitions.labels(
                endpoint.backend, endpoint.label, state.name.lower()
            ).inc()
        if state is State.OPEN:
            log.warning(
                "endpoint down: failing its calls fast",
                extra={**_fields(circuit), "open_seconds": circuit.open_for},
            )
        elif state is State.CLOSED:
            log.info("endpoint up again", extra=_fields(circuit))

    def _forget_oldest(self) -> None:
        """Keep at most MAX_ENDPOINTS: drop the least recently failed closed ones first."""
        while len(self._circuits) > MAX_ENDPOINTS:
            victim = next(
                (k for k, c in self._circuits.items() if c.state is State.CLOSED),
                next(iter(self._circuits)),
            )
            del self._circuits[victim]


def _fields(circuit: _Circuit) -> dict[str, object]:
    e = circuit.endpoint
    return {"backend": e.backend, "endpoint": e.name, "failures": circuit.failures}


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if isinstance(exc, KeyferryError):
        return exc.code.value
    return f"{type(exc).__name__}" + (f" HTTP {status}" if isinstance(status, int) else "")
