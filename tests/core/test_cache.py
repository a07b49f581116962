"""provider.cache.TTLCache: coalescing, expiry, failures, identity isolation and the stale
window behind Services.last_known_good (stale_if_error_seconds)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from provider import cache as cache_module
from provider.backend import Services
from provider.cache import TTLCache
from provider.config import Config
from provider.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    KeyferryError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from provider.kube import KubeClient
from provider.model import Fetched
from provider.observe import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake clock for the cache module only (asyncio keeps the real one)."""
    fake = Clock()
    monkeypatch.setattr(cache_module, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


class Loader:
    """Counts calls; each call waits on ``gate`` (if set) then returns or raises."""

    def __init__(self, value: Any = "v", *, error: BaseException | None = None) -> None:
        self.calls = 0
        self.value = value
        self.error = error
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())  # type: ignore[arg-type]


# --- coalescing ----------------------------------------------------------------------------


def test_concurrent_loads_of_one_key_share_one_call() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        loader = Loader("value")
        loader.gate = asyncio.Event()
        tasks = [asyncio.create_task(c.get_or_load("k", loader)) for _ in range(20)]
        await loader.started.wait()
        await asyncio.sleep(0)
        loader.gate.set()
        results = await asyncio.gather(*tasks)
        assert results == ["value"] * 20
        assert loader.calls == 1
        assert c.misses == 1
        assert c.coalesced == 19

    run(scenario)


def test_coalescing_works_without_caching_when_ttl_is_zero() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(0)
        loader = Loader("v")
        loader.gate = asyncio.Event()
        tasks = [asyncio.create_task(c.get_or_load("k", loader)) for _ in range(5)]
        await loader.started.wait()
        loader.gate.set()
        assert await asyncio.gather(*tasks) == ["v"] * 5
        assert loader.calls == 1
        assert len(c) == 0
        await c.get_or_load("k", loader)
        assert loader.calls == 2

    run(scenario)


def test_cached_value_is_served_without_calling_the_loader() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        loader = Loader("v")
        assert await c.get_or_load("k", loader) == "v"
        assert await c.get_or_load("k", loader) == "v"
        assert loader.calls == 1
        assert c.hits == 1
        assert c.get("k") == "v"

    run(scenario)


# --- expiry --------------------------------------------------------------------------------


def test_values_expire_after_ttl(clock: Clock) -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(10)
        loader = Loader("v")
        await c.get_or_load("k", loader)
        clock.now += 9.9
        await c.get_or_load("k", loader)
        assert loader.calls == 1
        clock.now += 0.1
        await c.get_or_load("k", loader)
        assert loader.calls == 2

    run(scenario)


def test_get_and_put_respect_expiry(clock: Clock) -> None:
    c: TTLCache[str] = TTLCache(5)
    c.put("k", "v")
    assert c.get("k") == "v"
    clock.now += 5
    assert c.get("k") is None
    assert len(c) == 0


def test_per_put_ttl_overrides_default(clock: Clock) -> None:
    c: TTLCache[str] = TTLCache(5)
    c.put("long", "v", ttl=100)
    c.put("none", "v", ttl=0)
    clock.now += 50
    assert c.get("long") == "v"
    assert c.get("none") is None


def test_callable_ttl_is_computed_from_the_value(clock: Clock) -> None:
    async def scenario() -> None:
        c: TTLCache[dict[str, float]] = TTLCache(1000)
        short = Loader({"expires_in": 3.0})
        await c.get_or_load("a", short, ttl=lambda v: v["expires_in"])
        clock.now += 2.9
        await c.get_or_load("a", short, ttl=lambda v: v["expires_in"])
        assert short.calls == 1
        clock.now += 0.2
        await c.get_or_load("a", short, ttl=lambda v: v["expires_in"])
        assert short.calls == 2

        never = Loader({"expires_in": 0.0})
        await c.get_or_load("b", never, ttl=lambda v: v["expires_in"])
        await c.get_or_load("b", never, ttl=lambda v: v["expires_in"])
        assert never.calls == 2

    run(scenario)


def test_invalidate_and_clear() -> None:
    c: TTLCache[str] = TTLCache(30)
    c.put("a", "1")
    c.put("b", "2")
    c.invalidate("a")
    c.invalidate("missing")
    assert c.get("a") is None and c.get("b") == "2"
    c.clear()
    assert len(c) == 0


def test_max_entries_bounds_the_cache() -> None:
    c: TTLCache[int] = TTLCache(30, max_entries=3)
    for i in range(10):
        c.put(i, i)
    assert len(c) <= 3
    assert c.get(9) == 9


# --- failures ------------------------------------------------------------------------------


def test_failure_reaches_every_waiter_and_is_not_cached() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        failing = Loader(error=RuntimeError("backend down"))
        failing.gate = asyncio.Event()
        tasks = [asyncio.create_task(c.get_or_load("k", failing)) for _ in range(5)]
        await failing.started.wait()
        await asyncio.sleep(0)
        failing.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert failing.calls == 1
        assert all(isinstance(r, RuntimeError) and str(r) == "backend down" for r in results)
        assert len(c) == 0
        ok = Loader("recovered")
        assert await c.get_or_load("k", ok) == "recovered"
        assert ok.calls == 1

    run(scenario)


def test_no_inflight_entry_is_left_after_a_failure() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        with pytest.raises(ValueError):
            await c.get_or_load("k", Loader(error=ValueError("x")))
        assert await c.get_or_load("k", Loader("v")) == "v"

    run(scenario)


def test_cancelled_waiter_does_not_cancel_the_load_for_others() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        loader = Loader("v")
        loader.gate = asyncio.Event()
        first = asyncio.create_task(c.get_or_load("k", loader))
        await loader.started.wait()
        second = asyncio.create_task(c.get_or_load("k", loader))
        third = asyncio.create_task(c.get_or_load("k", loader))
        await asyncio.sleep(0)
        second.cancel()
        await asyncio.sleep(0)
        loader.gate.set()
        assert await first == "v"
        assert await third == "v"
        assert second.cancelled()
        assert loader.calls == 1

    run(scenario)


def test_cancelling_the_loading_caller_does_not_cancel_coalesced_waiters() -> None:
    # One pod's Mount being cancelled (client gone, deadline) must not cancel other pods'
    # Mounts that merely joined the same load: they should get a value (e.g. by loading
    # again), not a CancelledError they never asked for.
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        loader = Loader("v")
        loader.gate = asyncio.Event()
        first = asyncio.create_task(c.get_or_load("k", loader))
        await loader.started.wait()
        waiter = asyncio.create_task(c.get_or_load("k", loader))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        loader.gate.set()
        result = await asyncio.wait_for(asyncio.gather(waiter, return_exceptions=True), 5)
        assert first.cancelled()
        assert not waiter.cancelled()
        assert list(result) == ["v"]  # typeshed calls gather()'s list a tuple

    run(scenario)


# --- identity isolation --------------------------------------------------------------------


def test_keys_isolate_identities() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        alice = Loader("alice's secret")
        bob = Loader("bob's secret")
        ref = ("aws", "eu-west-1", "db/password")
        assert await c.get_or_load(("role/alice", ref), alice) == "alice's secret"
        assert await c.get_or_load(("role/bob", ref), bob) == "bob's secret"
        assert await c.get_or_load(("role/alice", ref), bob) == "alice's secret"
        assert await c.get_or_load(("role/bob", ref), alice) == "bob's secret"
        assert (alice.calls, bob.calls) == (1, 1)

    run(scenario)


def test_concurrent_loads_of_different_keys_are_not_coalesced() -> None:
    async def scenario() -> None:
        c: TTLCache[str] = TTLCache(30)
        a, b = Loader("a"), Loader("b")
        a.gate = b.gate = asyncio.Event()
        ta = asyncio.create_task(c.get_or_load(("alice", "x"), a))
        tb = asyncio.create_task(c.get_or_load(("bob", "x"), b))
        await asyncio.sleep(0)
        a.gate.set()
        assert list(await asyncio.gather(ta, tb)) == ["a", "b"]
        assert (a.calls, b.calls) == (1, 1)
        assert c.coalesced == 0

    run(scenario)


# --- the stale window (stale_if_error_seconds) ----------------------------------------------


def test_stale_window_keeps_an_expired_value_for_stale_only(clock: Clock) -> None:
    cache: TTLCache[str] = TTLCache(10, stale_seconds=60)
    cache.put(("p", "k"), "v")
    clock.now += 30
    assert cache.get(("p", "k")) is None  # no longer fresh
    assert cache.stale(("p", "k")) == ("v", 30)
    clock.now += 30
    assert cache.stale(("p", "k")) == ("v", 60)
    clock.now += 0.1
    assert cache.stale(("p", "k")) is None


def test_stale_window_keeps_values_even_when_nothing_is_cached_fresh(clock: Clock) -> None:
    cache: TTLCache[str] = TTLCache(0, stale_seconds=60)
    cache.put("k", "v")
    assert cache.get("k") is None
    assert cache.stale("k") == ("v", 0)


def test_without_a_stale_window_nothing_is_kept_or_served_stale(clock: Clock) -> None:
    cache: TTLCache[str] = TTLCache(10)
    cache.put("k", "v")
    assert cache.stale("k") is None  # even while fresh: stale serving is off
    nothing: TTLCache[str] = TTLCache(0)
    nothing.put("k", "v")
    assert len(nothing) == 0


def test_stale_age_counts_from_the_last_fetch(clock: Clock) -> None:
    cache: TTLCache[str] = TTLCache(5, stale_seconds=60)
    cache.put("k", "old")
    clock.now += 50
    cache.put("k", "new")
    clock.now += 20
    assert cache.stale("k") == ("new", 20)


def test_stale_entries_are_evicted_once_past_the_window(clock: Clock) -> None:
    cache: TTLCache[str] = TTLCache(1, max_entries=2, stale_seconds=10)
    cache.put("a", "1")
    clock.now += 11
    cache.put("b", "2")
    cache.put("c", "3")  # full: "a" is past its window and goes first
    assert cache.stale("a") is None
    assert cache.stale("b") == ("2", 0) and cache.stale("c") == ("3", 0)


def services(stale_seconds: float) -> Services:
    config = Config(stale_if_error_seconds=stale_seconds)
    return Services(
        config=config,
        metrics=Metrics(),
        executor=ThreadPoolExecutor(1),
        kube=KubeClient(config.kubernetes),
        values=TTLCache[Fetched](0, stale_seconds=stale_seconds),
    )


@pytest.mark.parametrize("error", [Unavailable("503"), DeadlineExceeded("no answer")])
def test_last_known_good_is_served_for_an_outage_within_its_age(
    clock: Clock, error: KeyferryError
) -> None:
    svc = services(60)
    svc.values.put(("aws", "principal-1", "ref"), Fetched(b"v", version="1"))
    clock.now += 60
    got = svc.last_known_good(("aws", "principal-1", "ref"), error)
    assert got == Fetched(b"v", version="1", stale_seconds=60)
    clock.now += 0.5
    assert svc.last_known_good(("aws", "principal-1", "ref"), error) is None  # too old


ANSWERS: list[Exception] = [
    PermissionDenied("revoked"),
    NotFound("deleted"),
    Unauthenticated("x"),
    InvalidArgument("x"),
    ResourceExhausted("too big"),
    Internal("x"),
    ValueError("not a keyferry error"),
]
"""Failures that are the backend's answer, not its absence: never served stale."""


@pytest.mark.parametrize("error", [*ANSWERS, None])
def test_last_known_good_is_never_served_for_an_answer(clock: Clock, error: object) -> None:
    svc = services(60)
    svc.values.put("key", Fetched(b"v"))
    assert svc.last_known_good("key", error) is None


def test_last_known_good_is_keyed_by_principal(clock: Clock) -> None:
    svc = services(60)
    svc.values.put(("gcp", "principal-1", "ref"), Fetched(b"v"))
    assert svc.last_known_good(("gcp", "principal-2", "ref"), Unavailable("x")) is None


def test_last_known_good_is_off_by_default(clock: Clock) -> None:
    svc = services(0)
    svc.values.put("key", Fetched(b"v"))
    assert svc.last_known_good("key", Unavailable("x")) is None
