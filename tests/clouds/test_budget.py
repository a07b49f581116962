"""``provider.clouds.budget``: what every cloud's retry hooks decide with, without a
network (the fault matrices in ``tests/clouds/<cloud>/test_faults.py`` drive it through
the SDKs)."""

from __future__ import annotations

import email.utils
import time

import pytest

from provider.clouds import budget
from provider.errors import Code, DeadlineExceeded, NotFound, Unavailable
from provider.model import Deadline
from provider.observe import Metrics


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.25", 0.25),
        (" 3 ", 3.0),
        ("-4", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
    ],
)
def test_retry_after_reads_seconds_and_dates_and_ignores_the_rest(
    header: str | None, seconds: float | None
) -> None:
    assert budget.retry_after(header) == seconds


def test_retry_after_a_date_in_the_future_is_the_time_until_then() -> None:
    header = email.utils.formatdate(time.time() + 120, usegmt=True)
    got = budget.retry_after(header)
    assert got is not None and 100 < got <= 120


def call(seconds: float = 60.0, max_attempts: int = 3) -> budget.Call:
    return budget.begin("aws", "Op", Deadline(seconds), max_attempts=max_attempts, metrics=None)


def test_a_wait_is_the_backoff_or_what_the_service_asked_whichever_is_longer() -> None:
    c = call()
    c.attempt("throttled")
    assert c.wait(0.5) == 0.5
    assert c.wait(0.5, asked=2.0) == 2.0
    assert c.wait(3.0, asked=2.0) == 3.0
    assert c.stopped == ""


def test_once_keyferry_retried_the_driver_must_not_retry_on_top() -> None:
    c = call(max_attempts=2)
    c.attempt("server_error")
    assert c.wait(0.0) is not None
    c.attempt("server_error")
    assert c.wait(0.0) is None and c.stopped == "attempts"
    err = c.outcome(Unavailable("Key Vault failed (HTTP 503)"))
    assert err.code is Code.DEADLINE_EXCEEDED  # UNAVAILABLE would make the driver call twice more
    assert err.message == "Key Vault failed (HTTP 503) (2 attempts, the most allowed)"


def test_a_failure_keyferry_did_not_retry_is_left_to_the_driver_when_its_tries_fit() -> None:
    c = call(seconds=60.0, max_attempts=1)
    c.attempt("throttled")
    assert c.wait(0.0) is None and c.stopped == "attempts"
    err = c.outcome(Unavailable("throttled (HTTP 429)"))
    assert err.code is Code.UNAVAILABLE
    assert err.message == "throttled (HTTP 429) (1 attempt, the most allowed)"


def test_but_not_when_the_drivers_tries_would_not_fit() -> None:
    # UNAVAILABLE makes the CSI driver call twice more, about a second apart: with 1.5 s
    # left those calls would run past the budget.
    c = call(seconds=1.5, max_attempts=1)
    c.attempt("server_error")
    assert c.wait(0.0) is None
    err = c.outcome(Unavailable("Key Vault failed (HTTP 503)"))
    assert err.code is Code.DEADLINE_EXCEEDED
    assert "1 attempt, the most allowed" in err.message
    assert "the driver's 2 further tries would not fit" in err.message


def test_a_wait_past_the_budget_stops_the_retries_and_makes_a_deadline_exceeded() -> None:
    c = call(seconds=5.0)
    c.attempt("throttled")
    assert c.wait(0.1, asked=600.0) is None and c.stopped == "budget"
    err = c.outcome(Unavailable("throttled (HTTP 429)"))
    assert err.code is Code.DEADLINE_EXCEEDED
    assert "1 attempt; the service asked to retry after 600s" in err.message
    assert "past the mount's budget" in err.message


def test_an_attempt_without_an_answer_in_time_is_a_deadline_exceeded() -> None:
    c = call()
    c.attempt("timeout")
    assert c.outcome(Unavailable("no answer")).code is Code.DEADLINE_EXCEEDED


def test_errors_that_are_not_passing_keep_their_code_and_text() -> None:
    c = call()
    c.attempt("rejected")
    missing = NotFound("no such secret")
    assert c.outcome(missing) is missing


def test_nested_calls_count_on_their_own_label_not_against_the_call() -> None:
    metrics = Metrics()
    c = budget.begin("azure", "get_secret", Deadline(60), max_attempts=3, metrics=metrics)
    c.attempt("ok", "token")
    c.attempt("ok")
    assert c.attempts == 1
    counter = metrics.backend_attempts
    assert counter.labels("azure", "token", "ok")._value.get() == 1
    assert counter.labels("azure", "get_secret", "ok")._value.get() == 1
    child = c.child("token", 2)
    assert child.ends == c.ends and child.attempts == 0 and child.max_attempts == 2


def test_the_call_is_found_where_the_work_runs_and_travels_on_errors() -> None:
    c = call()
    assert budget.current() is c
    err = DeadlineExceeded("slow")
    budget.attach(err, c)
    assert budget.attached(err) is c
    assert budget.attached(DeadlineExceeded("other")) is None
