"""botocore's standard retries, held to the Mount's budget: the only layer that retries.

botocore gives every client a retry handler (``needs-retry.<service>``, unique id
``retry-config-<service>``): the standard retry conditions (throttling, 5xx, transient
errors and network failures, ``max_attempts``), exponential backoff with full jitter and
the retry quota that stops retry storms. :func:`install` builds that same handler with
botocore's own ``register_retry_handler`` and wraps it so that, for each attempt, it

- counts the attempt in ``keyferry_backend_attempts_total`` (:mod:`..budget`);
- honours a ``Retry-After`` (or ``x-amz-retry-after``) the service sent, if longer than
  the backoff;
- does not retry when that wait would end past the Mount's budget, and remembers why the
  retries ended, for the error message and its code.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.retries import standard

from .. import budget
from .errors import THROTTLING_CODES


def install(client: Any, max_attempts: int, max_backoff: float = 20.0) -> None:
    """Replace ``client``'s retry handler by the budget-aware one (backoff truncated at
    ``max_backoff`` seconds; botocore's own truncation is 20)."""
    events = client.meta.events
    service = client.meta.service_model.service_id.hyphenize()
    event, unique_id = f"needs-retry.{service}", f"retry-config-{service}"
    events.unregister(event, unique_id=unique_id)
    handler = standard.register_retry_handler(client, max_attempts=max_attempts)
    events.unregister(event, unique_id=unique_id)
    events.register(event, _Budgeted(handler, max_attempts, max_backoff), unique_id=unique_id)


class _Budgeted:
    def __init__(
        self, handler: standard.RetryHandler, max_attempts: int, max_backoff: float
    ) -> None:
        self._handler = handler
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff

    def __call__(self, **kwargs: Any) -> float | bool | None:
        delay: float | bool | None = self._handler.needs_retry(**kwargs)
        call = budget.current()
        if call is None:
            return delay
        operation = getattr(kwargs.get("operation"), "name", "") or call.operation
        response = kwargs.get("response")
        outcome = attempt_outcome(response, kwargs.get("caught_exception"))
        nested = operation != call.operation  # e.g. an STS refresh inside a data call
        call.attempt(outcome, operation if nested else "")
        if delay is None or delay is False:
            if outcome in budget.TRANSIENT and not nested:
                attempts = int(kwargs.get("attempts") or 0)
                call.stop("attempts" if attempts >= self._max_attempts else "quota")
            return delay
        asked = _asked(response)
        backoff = min(float(delay), self._max_backoff)
        if nested:
            wait = max(backoff, asked or 0.0)
            return wait if wait < call.remaining() else False
        chosen = call.wait(backoff, asked)
        return False if chosen is None else chosen


def attempt_outcome(response: Any, exc: BaseException | None) -> budget.Outcome:
    """What one attempt got: botocore's ``(http_response, parsed)`` or its exception."""
    if exc is not None:
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return "timeout"
        return "network_error"
    if not isinstance(response, tuple) or len(response) < 2:
        return "network_error"
    status = int(getattr(response[0], "status_code", 0) or 0)
    code = str(((response[1] or {}).get("Error") or {}).get("Code", ""))
    if code in THROTTLING_CODES or status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    if status >= 300:
        return "rejected"
    return "ok"


def _asked(response: Any) -> float | None:
    """The wait the answer asked for: ``Retry-After`` (seconds or a date), else botocore's
    ``x-amz-retry-after`` (milliseconds)."""
    if not isinstance(response, tuple) or not response:
        return None
    headers = getattr(response[0], "headers", None) or {}
    asked = budget.retry_after(headers.get("Retry-After"))
    if asked is None:
        millis = budget.retry_after(headers.get("x-amz-retry-after"))
        asked = None if millis is None else millis / 1000.0
    return asked
