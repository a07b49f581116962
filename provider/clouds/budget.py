"""The Mount's budget inside each SDK's own retry machinery.

Every cloud retries with its SDK (botocore's standard retry handler, azure-core's
``RetryPolicy``, google-api-core's ``retry_target``), and only there: one layer. What the
SDKs do not know is the Mount's deadline, so each backend call starts a :class:`Call`
(:func:`begin`) that the SDK's hooks find in the worker thread (:func:`current`, a context
variable the executor carries over). The hooks report every attempt on the wire
(:meth:`Call.attempt`, counted in ``keyferry_backend_attempts_total``) and ask
:meth:`Call.wait` before each retry: the larger of the SDK's jittered backoff and what the
service asked for (``Retry-After``, ``RetryInfo``), or no retry at all when that wait would
end past the budget or the attempts are used up.

How a failure that outlived its retries is reported (:meth:`Call.outcome`): UNAVAILABLE
makes the CSI driver call the Mount again, twice at most, about a second apart, each call
repeating every attempt. So once keyferry has retried (or the budget ended the retries, or
the last attempt got no answer in time) the answer is DEADLINE_EXCEEDED, which the driver
does not retry: one layer retries, and a Mount never runs past its budget. UNAVAILABLE is
left for a passing failure keyferry did not retry itself (``max_attempts: 1``, the SDK's
retry quota spent), and only when the driver's tries fit in what is left of the budget.
Messages say how many attempts were made and why they stopped.
"""

from __future__ import annotations

import email.utils
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from ..errors import DeadlineExceeded, KeyferryError, Unavailable
from ..model import Deadline
from ..observe import Metrics

Outcome = Literal["ok", "throttled", "server_error", "network_error", "timeout", "rejected"]
"""One attempt: answered, throttled (429, ThrottlingException, RESOURCE_EXHAUSTED), a 5xx
or UNAVAILABLE, no answer (refused, reset, broken), timed out, or refused for good (4xx)."""
TRANSIENT: frozenset[str] = frozenset({"throttled", "server_error", "network_error", "timeout"})
Stop = Literal["", "budget", "attempts", "quota"]
RESERVE = 0.5
"""Seconds of the Mount's budget a backend keeps for naming what failed and answering."""
DRIVER_TRIES = 3
DRIVER_BACKOFF = 2.1
"""The CSI driver calls a Mount that answered UNAVAILABLE again, twice at most, after up
to 1 s and then 1.1 s (its gRPC retry policy, docs/protocol.md §4.3)."""
_ATTR = "_keyferry_call"

_current: ContextVar[Call | None] = ContextVar("keyferry_backend_call", default=None)


@dataclass
class Call:
    """One backend call (with its retries) inside a Mount's budget."""

    backend: str
    operation: str
    ends: float
    """``time.monotonic()`` by which the last attempt must have answered."""
    max_attempts: int
    metrics: Metrics | None = field(default=None, repr=False)
    attempts: int = 0
    stopped: Stop = ""
    asked: float | None = None
    """The wait the service asked for with its last answer, in seconds."""
    left: float = 0.0
    """Seconds of the budget left when the retries stopped."""
    last: str = ""
    """The outcome of the last attempt."""
    started: float = field(default_factory=time.monotonic)
    took: float = 0.0
    """Seconds from the first attempt to the end of the retries."""

    def remaining(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def attempt(self, outcome: Outcome, operation: str = "") -> None:
        """Count one attempt on the wire (``operation``: a nested call's own, e.g. the token
        request a Key Vault call makes; it does not count against this call)."""
        if self.metrics is not None:
            op = operation or self.operation
            self.metrics.backend_attempts.labels(self.backend, op, outcome).inc()
        if not operation or operation == self.operation:
            self.attempts += 1
            self.last = outcome

    def wait(self, backoff: float, asked: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or ``None``: stop retrying.

        The wait is the SDK's ``backoff`` or, when the service asked for more
        (``asked``), that; a wait that would end past the budget stops the retries."""
        self.asked = asked
        if self.attempts >= self.max_attempts:
            self.stop("attempts")
            return None
        wait = max(backoff, asked or 0.0)
        if wait >= self.ends - time.monotonic():
            self.stop("budget")
            return None
        return wait

    def stop(self, why: Stop) -> None:
        """The retries end (``budget``: the next wait would not fit; ``attempts``: the most
        allowed were made; ``quota``: the SDK's retry quota after many failures)."""
        now = time.monotonic()
        self.stopped, self.left, self.took = why, max(0.0, self.ends - now), now - self.started

    def relayable(self) -> bool:
        """Whether the driver's further tries of the Mount, each about as long as this
        call took, fit in what is left of the budget."""
        if not self.stopped:
            self.stop("")
        return self.left >= (DRIVER_TRIES - 1) * self.took + DRIVER_BACKOFF

    def child(self, operation: str, max_attempts: int) -> Call:
        """A nested call (a token request inside a data call) sharing this budget."""
        return Call(self.backend, operation, self.ends, max_attempts, self.metrics)

    def why(self) -> str:
        """How the retries ended, for messages."""
        n = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.stopped == "attempts":
            return f"{n}, the most allowed"
        if self.stopped == "quota":
            return f"{n}; retries are paused after many recent failures (the SDK's retry quota)"
        if self.stopped == "budget" and self.asked is not None and self.asked >= self.left:
            return (
                f"{n}; the service asked to retry after {self.asked:g}s, which is past the "
                f"mount's budget ({self.left:.1f}s left)"
            )
        if self.stopped == "budget":
            return f"{n}; the next retry would not fit in the mount's budget"
        return n

    def _unrelayable(self) -> str:
        return (
            f"{self.why()} in {self.took:.1f}s; the driver's {DRIVER_TRIES - 1} further "
            f"tries would not fit in what is left of the mount's budget ({self.left:.1f}s)"
        )

    def outcome(self, error: KeyferryError) -> KeyferryError:
        """The error to report for a failure that ended this call: a transient one with its
        attempts, as DEADLINE_EXCEEDED when the budget ended its retries or its last
        attempt got no answer in time."""
        if not isinstance(error, Unavailable | DeadlineExceeded):
            return error
        text = f"{error.message} ({self.why()})"
        if (
            self.attempts > 1  # keyferry retried: the driver must not retry on top
            or self.stopped == "budget"
            or self.last == "timeout"
            or isinstance(error, DeadlineExceeded)
        ):
            return DeadlineExceeded(text)
        if not self.relayable():
            return DeadlineExceeded(f"{error.message} ({self._unrelayable()})")
        return Unavailable(text)


def begin(
    backend: str,
    operation: str,
    deadline: Deadline,
    *,
    max_attempts: int,
    metrics: Metrics | None,
    reserve: float = 0.0,
    limit: float | None = None,
) -> Call:
    """A new call within ``deadline`` (less ``reserve`` seconds kept for the answer, and
    at most ``limit`` seconds), made current for this task and the worker threads it
    hands work to."""
    seconds = deadline.remaining() - reserve
    if limit is not None:
        seconds = min(seconds, limit)
    call = Call(backend, operation, time.monotonic() + seconds, max(1, max_attempts), metrics)
    _current.set(call)
    return call


def current() -> Call | None:
    """The call the running code is part of (in a worker thread: the one that submitted it)."""
    return _current.get()


def enter(call: Call) -> object:
    """Make ``call`` current (for a nested call in a worker thread); see :func:`leave`."""
    return _current.set(call)


def leave(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def attach(error: BaseException, call: Call | None) -> None:
    """Remember on ``error`` the call (and so the attempts) it ended."""
    if call is not None:
        setattr(error, _ATTR, call)


def attached(error: BaseException) -> Call | None:
    """The call ``error`` ended, if :func:`attach` recorded one."""
    found = getattr(error, _ATTR, None)
    return found if isinstance(found, Call) else None


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), else ``None``."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None  # NaN: none
