"""provider/lastgood.py: the last-known-good window of listings follows the rule of values
(Services.last_known_good): an outage only, the same key only, within the window only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from keyferry_fakes.harness import Clock
from provider.config import Config
from provider.errors import (
    DeadlineExceeded,
    KeyferryError,
    Unavailable,
)
from provider.lastgood import KnownGood
from provider.observe import Metrics
from tests.clouds.lastgood import cache_clock
from tests.core.test_cache import ANSWERS, services


def listings(stale_seconds: float) -> tuple[KnownGood[tuple[str, ...]], Metrics]:
    svc = services(stale_seconds)  # cache_ttl_seconds: the default
    known: KnownGood[tuple[str, ...]] = KnownGood(
        svc, cache="test-listings", backend="test", listing="selection"
    )
    return known, svc.metrics


def served(metrics: Metrics) -> float:
    return float(metrics.stale_listings_served.labels("test", "selection")._value.get())


async def listed(names: tuple[str, ...]) -> tuple[str, ...]:
    return names


def failing(error: Exception) -> Callable[[], Awaitable[tuple[str, ...]]]:
    async def load() -> tuple[str, ...]:
        raise error

    return load


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return cache_clock(monkeypatch)


@pytest.mark.parametrize("error", [Unavailable("503"), DeadlineExceeded("no answer")])
def test_an_outage_is_served_the_same_keys_last_listing_within_the_window(
    clock: Clock, error: KeyferryError
) -> None:
    known, metrics = listings(60)

    async def scenario() -> None:
        assert await known.get(("alice", "q"), lambda: listed(("a", "b"))) == (("a", "b"), None)
        clock.now += 59.5
        got = await known.get(("alice", "q"), failing(error))
        assert got[0] == ("a", "b") and got[1] == pytest.approx(59.5)
        with pytest.raises(type(error)):  # another principal, the same query
            await known.get(("bob", "q"), failing(error))
        with pytest.raises(type(error)):  # the same principal, another query
            await known.get(("alice", "q2"), failing(error))
        clock.now += 1
        with pytest.raises(type(error)):  # past the window
            await known.get(("alice", "q"), failing(error))

    asyncio.run(scenario())
    assert served(metrics) == 1


@pytest.mark.parametrize("error", ANSWERS)
def test_an_answer_is_never_served_stale(clock: Clock, error: Exception) -> None:
    known, metrics = listings(60)

    async def scenario() -> None:
        await known.get("k", lambda: listed(("a",)))
        clock.now += Config().cache_ttl_seconds  # no longer fresh, within the window
        with pytest.raises(type(error)):
            await known.get("k", failing(error))

    asyncio.run(scenario())
    assert served(metrics) == 0


def test_without_a_window_an_outage_fails(clock: Clock) -> None:
    known, metrics = listings(0)

    async def scenario() -> None:
        await known.get("k", lambda: listed(("a",)))
        assert await known.get("k", failing(Unavailable("x"))) == (("a",), None)
        clock.now += Config().cache_ttl_seconds
        with pytest.raises(Unavailable):
            await known.get("k", failing(Unavailable("x")))

    asyncio.run(scenario())
    assert served(metrics) == 0
