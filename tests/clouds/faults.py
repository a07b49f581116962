"""What the per-cloud fault matrices share (``tests/clouds/<cloud>/test_faults.py``).

Each matrix runs one keyferry server per cloud with a small budget
(``mount_timeout_seconds``: :data:`BUDGET`), :data:`MAX_ATTEMPTS` attempts per call and
backoffs of a few milliseconds, and mounts through its socket while one endpoint of the
cloud's fakes misbehaves as a ``keyferry_fakes.faults.FAULTS`` entry says (Retry-After
and slow first bytes of :data:`SLOW`). :func:`expect` gives what must
come of it: the Mount's status and the attempts that must reach the endpoint, which the
tests read both from the fake's request log and from ``keyferry_backend_attempts_total``.
Nothing here measures time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import pytest

from keyferry_fakes.faults import FAULTS, Faults, Wire, arm
from keyferry_fakes.harness import Server, running_server

F = TypeVar("F")

BUDGET = 2.0
"""``mount_timeout_seconds`` of the servers under test."""
MAX_ATTEMPTS = 3
"""Attempts per call the servers under test allow (each cloud's setting)."""
SLOW = 0.1
"""A first byte this late is answered within the budget."""
SHORT_BUDGET = 1.0
"""The budget of a Mount that is meant to run out (``slow_past_budget``): the driver's gRPC
deadline sets it (keyferry keeps 2 s of that deadline for itself)."""


@dataclass(frozen=True)
class Endpoint(Generic[F]):
    """One endpoint of a cloud, as the matrix drives it through its fake ``F``."""

    operation: str
    """Its label in ``keyferry_backend_attempts_total``."""
    service: str
    """What error messages name it by."""
    wire: Wire
    faults: Callable[[F], Faults]
    seen: Callable[[F], int]
    """Requests it got so far, faults included."""
    calls: int
    """Calls one Mount (of two objects) makes to it."""
    where: str = ""
    """What its fake matches faults against."""
    shared: bool = False
    """The calls share one connection (gRPC): see :func:`expect`."""


@contextmanager
def serve(
    tmp: Path, providers: str, backends: Mapping[str, Mapping[str, Any]], kube: Mapping[str, Any]
) -> Iterator[Server]:
    """A server for a whole matrix: budget :data:`BUDGET`, nothing cached, and fail-fast
    off: each case measures one call's retries, and an outage case must not open the
    endpoint for the cases after it (fail-fast has its own tests, test_outage.py)."""
    with running_server(
        tmp,
        providers=providers,
        backends=backends,
        kubernetes=kube,
        cache_ttl_seconds=0,
        mount_timeout_seconds=BUDGET,
        fail_fast_threshold=0,
        log_level="warning",
    ) as server:
        yield server


def check(
    srv: Server,
    backend: str,
    fault: str,
    endpoint: Endpoint[F],
    fake: F,
    params: dict[str, str],
    names: list[str],
    **kwargs: object,
) -> None:
    """Mount ``params`` on the ``backend`` socket while ``endpoint`` misbehaves as ``fault``
    says, and check what :func:`expect` says: the status, a message naming the service,
    every object (``names``) and the attempts, and the attempts on the wire, counted by
    the fake and by keyferry's metrics alike."""
    e = endpoint
    arm(e.faults(fake), fault, e.wire, where=e.where, retry_after=SLOW, slow=SLOW)
    before = attempts(srv, backend, e.operation)

    code, message = mount(srv, backend, fault, params, **kwargs)

    want_code, want = expect(fault, e.calls, shared=e.shared)
    assert code == want_code, message
    seen = e.seen(fake)
    assert attempts_ok(fault, seen, want, e.calls, shared=e.shared), (seen, want)
    e.faults(fake).clear()  # let go what is held

    def counted() -> float:
        return sum(delta(attempts(srv, backend, e.operation), before).values())

    if fault == "reset" and e.shared:
        # A call sent on the connection just before the reset may never have reached the
        # server: keyferry counts it, the fake does not.
        got = settled(counted, lambda n: n >= seen)
        assert attempts_ok(fault, got, want, e.calls, shared=True), (got, want)
    else:
        got = settled(counted, lambda n: n == seen)
        assert got == seen, (got, seen)
    if code is not None:
        assert e.service in message and all(n in message for n in names), message
        assert "attempt" in message, message


def cases(endpoints: Iterable[str], primary: str) -> list[Any]:
    """(endpoint, fault) for every endpoint and fault; waiting out the budget
    (``slow_past_budget``, half a second each) is in ``make test`` for the ``primary``
    endpoint only, for the others in ``make test-load`` (marker ``load``)."""
    return [
        pytest.param(
            endpoint,
            fault,
            id=f"{endpoint}-{fault}",
            marks=[pytest.mark.load] if fault == "slow_past_budget" and endpoint != primary else [],
        )
        for endpoint in endpoints
        for fault in FAULTS
    ]


def expect(fault: str, calls: int, *, shared: bool = False) -> tuple[grpc.StatusCode | None, int]:
    """The Mount's status (``None``: it succeeds) and the attempts on the wire, for
    ``calls`` calls the Mount makes to the faulty endpoint (e.g. one per object).

    ``shared``: the calls share one connection (gRPC), so a reset fails every call in
    flight on it: up to ``calls`` more attempts, at least one (see :func:`attempts_ok`)."""
    if fault == "reset" and shared:
        return None, 2 * calls
    return {
        "throttled": (None, calls + 2),
        "throttled_retry_after": (None, calls + 1),
        "retry_after_past_budget": (grpc.StatusCode.DEADLINE_EXCEEDED, calls),
        "burst_5xx": (None, calls + 2),
        "reset": (None, calls + 1),
        "slow": (None, calls),
        # keyferry retried: DEADLINE_EXCEEDED, so that the driver does not retry on top.
        "outage": (grpc.StatusCode.DEADLINE_EXCEEDED, MAX_ATTEMPTS * calls),
        "slow_past_budget": (grpc.StatusCode.DEADLINE_EXCEEDED, calls),
    }[fault]


def attempts_ok(fault: str, got: float, want: int, calls: int, *, shared: bool = False) -> bool:
    """Whether ``got`` attempts are what :func:`expect` said: exactly, except for a reset
    of a shared connection, which fails the calls in flight on it (between one and all)."""
    if fault == "reset" and shared:
        return calls + 1 <= got <= want
    return got == want


def attempts(srv: Server, backend: str, operation: str) -> dict[str, float]:
    """``keyferry_backend_attempts_total`` of one operation, by outcome."""
    assert srv.emb.provider is not None
    found: dict[str, float] = {}
    for family in srv.emb.provider.metrics.backend_attempts.collect():
        for sample in family.samples:
            labels = sample.labels
            ours = labels["backend"] == backend and labels["operation"] == operation
            if ours and sample.name.endswith("_total"):
                found[labels["outcome"]] = sample.value
    return found


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """What changed between two :func:`attempts` readings (outcomes that moved)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def settled(
    read: Callable[[], float], done: Callable[[float], bool], seconds: float = 10.0
) -> float:
    """``read()`` once ``done`` with it, or its last value after ``seconds``: for an attempt
    still on the wire when the Mount answered (it is counted when it ends)."""
    ends = time.monotonic() + seconds
    got = read()
    while not done(got) and time.monotonic() < ends:
        time.sleep(0.02)
        got = read()
    return got


def mount(
    srv: Server, socket: str, fault: str, params: dict[str, str], **kwargs: object
) -> tuple[grpc.StatusCode | None, str]:
    """Mount through ``socket``: ``(None, "")`` on success, else the status and message.
    A Mount that waits for a first byte that does not come gets :data:`SHORT_BUDGET`."""
    timeout = (SHORT_BUDGET + 2.0) if fault == "slow_past_budget" else BUDGET + 8.0
    try:
        srv.mount(socket, params, timeout=timeout, **kwargs)  # type: ignore[arg-type]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return None, ""
