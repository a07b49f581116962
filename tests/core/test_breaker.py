"""provider.breaker: fail fast while an endpoint is down, probe to recover (injected clock).

The clouds' call gates are exercised end to end in each cloud's ``test_outage.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from keyferry_fakes.harness import Clock
from provider import breaker as breaker_module
from provider.breaker import Breakers, Endpoint, State, Verdict, verdict_of
from provider.errors import (
    DeadlineExceeded,
    Internal,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from provider.observe import Metrics

VAULT_A = Endpoint("azure", "kv-a.vault.example", "{vault}.vault.example")
VAULT_B = Endpoint("azure", "kv-b.vault.example", "{vault}.vault.example")
OTHER = Endpoint("gcp", "secretmanager.googleapis.com:443", "secretmanager.googleapis.com:443")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def breakers(clock: Clock, metrics: Metrics) -> Breakers:
    return Breakers(
        threshold=3, open_seconds=2.0, max_open_seconds=5.0, metrics=metrics, clock=clock
    )


def fail(b: Breakers, endpoint: Endpoint, times: int = 1, owner: object = None) -> None:
    for _ in range(times):
        b.admit(endpoint, owner)
        b.record(endpoint, owner, Verdict.DOWN, "ConnectionRefusedError")


def refused(b: Breakers, endpoint: Endpoint, owner: object = None) -> str:
    with pytest.raises(Unavailable) as info:
        b.admit(endpoint, owner)
    return info.value.message


def metric(metrics: Metrics, line_start: str) -> float | None:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


STATE_A = 'keyferry_endpoint_state{backend="azure",endpoint="{vault}.vault.example"}'
FAST_A = 'keyferry_endpoint_fail_fast_total{backend="azure",endpoint="{vault}.vault.example"}'


def test_consecutive_transport_failures_open_the_endpoint_and_it_fails_fast(
    breakers: Breakers, metrics: Metrics
) -> None:
    fail(breakers, VAULT_A, 2)
    breakers.admit(VAULT_A, None)  # below the threshold: calls still go out
    fail(breakers, VAULT_A)
    assert breakers.state(VAULT_A) is State.OPEN
    message = refused(breakers, VAULT_A)
    assert "azure endpoint kv-a.vault.example is down" in message
    assert "3 calls in a row failed (last: ConnectionRefusedError)" in message
    assert "kubelet retries" in message
    assert metric(metrics, STATE_A) == 2
    assert metric(metrics, FAST_A) == 1


def test_other_endpoints_are_not_affected(breakers: Breakers) -> None:
    fail(breakers, VAULT_A, 3)
    breakers.admit(VAULT_B, None)
    breakers.admit(OTHER, None)
    assert breakers.state(VAULT_B) is State.CLOSED


def test_a_success_or_a_4xx_resets_the_count_throttling_does_not_count(
    breakers: Breakers,
) -> None:
    fail(breakers, VAULT_A, 2)
    breakers.record(VAULT_A, None, Verdict.UP)  # e.g. a 404: the endpoint answered
    fail(breakers, VAULT_A, 2)
    breakers.record(VAULT_A, None, Verdict.NEUTRAL)  # throttled: proves nothing
    breakers.admit(VAULT_A, None)
    assert breakers.state(VAULT_A) is State.CLOSED
    fail(breakers, VAULT_A)
    assert breakers.state(VAULT_A) is State.OPEN


def test_after_the_interval_one_mount_probes_and_its_success_closes(
    breakers: Breakers, clock: Clock, metrics: Metrics
) -> None:
    fail(breakers, VAULT_A, 3)
    clock.now += 1.9
    refused(breakers, VAULT_A, "mount-1")
    clock.now += 0.2
    breakers.admit(VAULT_A, "mount-1")  # the probe
    breakers.admit(VAULT_A, "mount-1")  # the probe's other calls go out too
    assert breakers.state(VAULT_A) is State.HALF_OPEN
    assert "until the probe in flight answers" in refused(breakers, VAULT_A, "mount-2")
    assert metric(metrics, STATE_A) == 1
    breakers.record(VAULT_A, "mount-1", Verdict.UP)
    assert breakers.state(VAULT_A) is State.CLOSED
    breakers.admit(VAULT_A, "mount-2")
    assert metric(metrics, STATE_A) == 0  # the series stays, at closed
    closed = (
        'keyferry_endpoint_transitions_total{backend="azure",'
        'endpoint="{vault}.vault.example",state="closed"}'
    )
    assert metric(metrics, closed) == 1


def test_a_failed_probe_opens_again_for_twice_as_long_up_to_the_maximum(
    breakers: Breakers, clock: Clock
) -> None:
    fail(breakers, VAULT_A, 3)  # open for 2 s
    for interval in (2.0, 4.0, 5.0, 5.0):  # then 4 s, then 5 s: the maximum
        clock.now += interval - 0.1
        refused(breakers, VAULT_A, "probe")
        clock.now += 0.1
        fail(breakers, VAULT_A, owner="probe")
        assert breakers.state(VAULT_A) is State.OPEN


def test_recovery_resets_the_interval(breakers: Breakers, clock: Clock) -> None:
    fail(breakers, VAULT_A, 3)
    clock.now += 2.0
    fail(breakers, VAULT_A, owner="probe")  # now open for 4 s
    clock.now += 4.0
    breakers.admit(VAULT_A, "probe-2")
    breakers.record(VAULT_A, "probe-2", Verdict.UP)
    fail(breakers, VAULT_A, 3)
    clock.now += 2.0  # the first interval again, not 8 s
    breakers.admit(VAULT_A, "probe-3")


def test_a_probe_that_proves_nothing_hands_the_probe_to_the_next_mount(
    breakers: Breakers, clock: Clock
) -> None:
    fail(breakers, VAULT_A, 3)
    clock.now += 2.0
    breakers.admit(VAULT_A, "mount-1")
    breakers.record(VAULT_A, "mount-1", Verdict.NEUTRAL)  # cancelled or throttled
    breakers.admit(VAULT_A, "mount-2")
    refused(breakers, VAULT_A, "mount-1")


def test_a_lost_probe_is_replaced(breakers: Breakers, clock: Clock) -> None:
    fail(breakers, VAULT_A, 3)
    clock.now += 2.0
    breakers.admit(VAULT_A, "mount-1")
    refused(breakers, VAULT_A, "mount-2")
    clock.now += breaker_module.PROBE_TIMEOUT + 1
    breakers.admit(VAULT_A, "mount-2")


def test_a_late_failure_of_a_call_from_before_the_opening_does_not_extend_it(
    breakers: Breakers, clock: Clock
) -> None:
    for owner in ("a", "b", "c", "d"):
        breakers.admit(VAULT_A, owner)
    for owner in ("a", "b", "c", "d"):
        breakers.record(VAULT_A, owner, Verdict.DOWN, "ReadTimeout")
    clock.now += 2.0
    breakers.admit(VAULT_A, "probe")


def test_threshold_zero_turns_fail_fast_off(clock: Clock) -> None:
    b = Breakers(threshold=0, clock=clock)
    fail(b, VAULT_A, 10)
    b.admit(VAULT_A, None)
    assert b.state(VAULT_A) is State.CLOSED


def test_guard_judges_the_outcome_of_the_call(breakers: Breakers) -> None:
    async def call(error: BaseException | None) -> None:
        async with breakers.guard(VAULT_A, "m", verdict_of):
            if error is not None:
                raise error

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(Unavailable):
                await call(Unavailable("503"))
        with pytest.raises(Unavailable, match="is down"):
            await call(None)

    asyncio.run(scenario())
    assert breakers.state(VAULT_A) is State.OPEN


def test_fail_fast_message_never_quotes_another_mounts_error(breakers: Breakers) -> None:
    """The call that opened an endpoint may have been another tenant's: its message (a
    secret's name, say) is not repeated to whoever is refused next."""

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(Unavailable):
                async with breakers.guard(VAULT_A, "tenant-a"):
                    raise Unavailable("secret 'tenant-a-payroll' in vault kv-a: HTTP 503")

    asyncio.run(scenario())
    message = refused(breakers, VAULT_A, "tenant-b")
    assert "(last: UNAVAILABLE)" in message
    assert "payroll" not in message and "tenant-a" not in message


def test_guard_counts_a_cancelled_call_as_nothing(breakers: Breakers) -> None:
    async def scenario() -> None:
        fail(breakers, VAULT_A, 2)

        async def hang() -> None:
            async with breakers.guard(VAULT_A, "m"):
                await asyncio.Event().wait()

        task = asyncio.ensure_future(hang())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    breakers.admit(VAULT_A, None)
    assert breakers.state(VAULT_A) is State.CLOSED


def test_without_an_endpoint_the_guard_does_nothing(breakers: Breakers) -> None:
    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(Unavailable):
                async with breakers.guard(None, "m"):
                    raise Unavailable("x")

    asyncio.run(scenario())
    assert breakers.snapshot() == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Unavailable("x"), Verdict.DOWN),
        (DeadlineExceeded("x"), Verdict.DOWN),
        (TimeoutError(), Verdict.DOWN),
        (ResourceExhausted("quota"), Verdict.NEUTRAL),
        (Internal("x"), Verdict.NEUTRAL),
        (ValueError("local"), Verdict.NEUTRAL),
        (NotFound("x"), Verdict.UP),
        (PermissionDenied("x"), Verdict.UP),
    ],
)
def test_verdict_of_keyferry_errors(error: BaseException, expected: Verdict) -> None:
    assert verdict_of(error) is expected


def test_memory_is_bounded_and_open_endpoints_are_kept_longest(
    breakers: Breakers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(breaker_module, "MAX_ENDPOINTS", 4)
    fail(breakers, VAULT_A, 3)
    for i in range(10):
        fail(breakers, Endpoint("azure", f"kv{i}.vault.example", "{vault}.vault.example"))
    assert len(breakers.snapshot()) == 4
    assert breakers.state(VAULT_A) is State.OPEN


def test_metrics_and_readyz_detail_carry_the_label_never_the_endpoint_name(
    breakers: Breakers, metrics: Metrics
) -> None:
    assert breakers.detail() == [
        "endpoints: every backend endpoint is up (no calls failing in a row)"
    ]
    fail(breakers, VAULT_A, 3)
    fail(breakers, VAULT_B, 1)
    refused(breakers, VAULT_A)
    text = generate_latest(metrics.registry).decode()
    assert "kv-a" not in text and "kv-b" not in text
    assert metric(metrics, STATE_A) == 2
    (line,) = breakers.detail()
    assert line.startswith("endpoint azure {vault}.vault.example: 1 open, 0 probing")
    assert "kv-a" not in line
