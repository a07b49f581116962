"""azure-core's retry policy held to the Mount's budget: the one layer that retries, for
Key Vault and for Entra ID token requests alike."""

from __future__ import annotations

import random
import time
from typing import Any

from azure.core.exceptions import ServiceRequestTimeoutError, ServiceResponseTimeoutError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from .. import budget


class BudgetRetryPolicy(RetryPolicy):  # type: ignore[type-arg]
    """azure-core's retry policy, held to the Mount's budget, as the only layer retrying.

    azure-core decides what is retried (408, 429, 5xx, connection and read errors) and
    how often (``retry_total``); this adds full jitter to its exponential backoff, waits
    at least what ``Retry-After`` asks, never waits past the budget (the current
    :class:`..budget.Call`, else the ``timeout`` option) and counts every attempt
    (``operation``: the metric label, e.g. ``token`` for Entra ID; empty: the call's).
    """

    def __init__(self, operation: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._operation = operation

    def _configure_timeout(
        self, request: Any, absolute_timeout: float, is_response_error: bool
    ) -> None:
        """azure-core bounds each attempt's connection time by what is left of the
        ``timeout`` option; this bounds its read time too, by what is left of the budget,
        so that no worker thread waits on an answer the Mount no longer can use."""
        super()._configure_timeout(request, absolute_timeout, is_response_error)
        call = budget.current()
        if call is None:
            return
        left = max(0.01, call.remaining())
        options = request.context.options
        for key in ("read_timeout", "connection_timeout"):
            options[key] = min(float(options.get(key) or left), left)

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["keyferry_deadline"] = time.monotonic() + float(settings["timeout"])
        return settings

    def _attempt(self, outcome: budget.Outcome) -> None:
        call = budget.current()
        if call is not None:
            call.attempt(outcome, self._operation)

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        self._attempt(attempt_outcome(response.http_response.status_code))
        return bool(super().is_retry(settings, response))

    def increment(
        self,
        settings: dict[str, Any],
        response: Any = None,
        error: Exception | None = None,
    ) -> bool:
        if error is not None:
            self._attempt(error_outcome(error))
        call = budget.current()
        own = call is not None and (not self._operation or self._operation == call.operation)
        if not super().increment(settings, response=response, error=error):
            if call is not None and own:
                call.stop("attempts")
            return False
        asked = _asked(response) if isinstance(response, PipelineResponse) else None
        backoff = random.uniform(0.0, self.get_backoff_time(settings))
        if call is not None and own:
            wait = call.wait(backoff, asked)
        else:
            wait = max(backoff, asked or 0.0)
            ends = call.ends if call is not None else settings["keyferry_deadline"]
            wait = wait if time.monotonic() + wait < ends else None
        if wait is None:
            return False
        settings["keyferry_wait"] = wait
        return True

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        """Wait what :meth:`increment` chose (backoff or Retry-After, within the budget)."""
        transport.sleep(settings.get("keyferry_wait", 0.0))


def attempt_outcome(status: int) -> budget.Outcome:
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "ok" if status < 400 else "rejected"


def error_outcome(error: BaseException) -> budget.Outcome:
    if isinstance(error, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return "timeout"
    return "network_error"


def _asked(response: PipelineResponse[Any, Any]) -> float | None:
    """The wait an answer asks for, as azure-core reads it (``retry-after-ms``,
    ``x-ms-retry-after-ms``, then ``Retry-After``), but a value it cannot read counts as
    none instead of failing the call."""
    headers = response.http_response.headers
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        millis = budget.retry_after(headers.get(name))
        if millis is not None:
            return millis / 1000.0
    return budget.retry_after(headers.get("Retry-After"))
