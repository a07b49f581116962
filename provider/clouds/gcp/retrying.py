"""google-api-core's retry loop, held to the Mount's budget: the only layer that retries.

Secret Manager and Parameter Manager calls (gRPC) and the token exchanges at STS and IAM
Credentials (HTTP, through google-auth, which does not retry them) all go through
:func:`run`: api-core's ``retry_target`` with its exponential sleep generator (full
jitter), where each sleep is what :meth:`..budget.Call.wait` allows: at least what the
service asked for (``RetryInfo`` on a gRPC status, ``Retry-After`` on an HTTP answer),
never past the budget, at most ``max_attempts`` attempts. Each attempt is counted in
``keyferry_backend_attempts_total``. What is retried: UNAVAILABLE and RESOURCE_EXHAUSTED
(Google's own default for these methods), an HTTP 429 or 5xx, or no answer at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.api_core import exceptions as core_exceptions
from google.api_core import retry as core_retry
from google.rpc import error_details_pb2

from ..budget import TRANSIENT, Call, Outcome

T = TypeVar("T")

_CONNECTION_TEXTS = ("socket closed", "connection reset", "failed to connect", "connection refused")


def run(
    target: Callable[[], T],
    call: Call,
    *,
    initial: float,
    maximum: float,
    outcome_of: Callable[[Exception], Outcome],
    asked_of: Callable[[Exception], float | None],
    on_retry: Callable[[Exception], None] | None = None,
) -> T:
    """``target()`` until it succeeds, fails for good, or the attempts or the budget end;
    then its last exception (``call`` says how the retries ended)."""
    last: dict[str, Any] = {}

    def attempt() -> T:
        try:
            result = target()
        except Exception as exc:
            last["outcome"] = outcome_of(exc)
            last["asked"] = asked_of(exc)
            call.attempt(last["outcome"])
            raise
        call.attempt("ok")
        return result

    def retryable(exc: Exception) -> bool:
        return last.get("outcome") in TRANSIENT and last.get("outcome") != "timeout"

    def sleeps() -> Iterator[float]:
        for backoff in core_retry.exponential_sleep_generator(initial, maximum, 2.0):
            wait = call.wait(backoff, last.get("asked"))
            yield math.inf if wait is None else wait  # inf: past any deadline, so no retry

    def last_exception(
        errors: list[Exception], reason: object, timeout: float | None, **_: Any
    ) -> tuple[Exception, Exception | None]:
        return errors[-1], None

    result: T = core_retry.retry_target(
        attempt,
        retryable,
        sleeps(),
        timeout=max(0.0, call.remaining()),
        on_error=on_retry,
        exception_factory=last_exception,
    )
    return result


def rpc_outcome(exc: Exception) -> Outcome:
    """One gRPC attempt's outcome, from google-api-core's exception."""
    if isinstance(exc, core_exceptions.TooManyRequests):  # RESOURCE_EXHAUSTED
        return "throttled"
    if isinstance(exc, core_exceptions.ServiceUnavailable):
        text = str(getattr(exc, "message", "") or exc).lower()
        return "network_error" if any(t in text for t in _CONNECTION_TEXTS) else "server_error"
    if isinstance(exc, core_exceptions.DeadlineExceeded):
        return "timeout"
    return "rejected"  # INTERNAL included: not retried, as Google's own defaults do


def rpc_asked(exc: Exception) -> float | None:
    """The delay a gRPC error's ``google.rpc.RetryInfo`` asks for."""
    for detail in getattr(exc, "details", None) or ():
        if isinstance(detail, error_details_pb2.RetryInfo):
            delay = detail.retry_delay
            return float(delay.seconds) + float(delay.nanos) / 1e9
    return None


def http_outcome(status: int | None, timed_out: bool = False) -> Outcome:
    """One HTTP attempt's outcome from its status (``None``: no answer)."""
    if status is None:
        return "timeout" if timed_out else "network_error"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "ok" if status < 300 else "rejected"
