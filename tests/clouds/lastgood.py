"""Helpers for the last-known-good listing tests of every cloud
(``tests/clouds/<cloud>/test_outage_listings.py``)."""

from __future__ import annotations

import json
import time
import types
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keyferry_fakes.harness import Clock, Server
from provider import cache


def cache_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Put the provider's caches (values, listings, tokens) on a clock the test moves:
    nothing expires, and nothing grows older, unless the test says so."""
    clock = Clock(time.monotonic())
    monkeypatch.setattr(cache, "time", types.SimpleNamespace(monotonic=clock))
    return clock


def stale_metrics(srv: Server, backend: str) -> dict[str, float]:
    """The non-zero stale counters of ``backend``: listings by kind, and ``values``
    (objects of Mounts served stale)."""
    out: dict[str, float] = {}
    for listing in ("selection", "history"):
        sample = f'keyferry_stale_listings_served_total{{backend="{backend}",listing="{listing}"}}'
        if got := srv.metric(sample):
            out[listing] = got
    if got := srv.metric(f'keyferry_stale_values_served_total{{backend="{backend}"}}'):
        out["values"] = got
    return out


def audit_stale(srv: Server) -> list[dict[str, Any]]:
    """The ``"stale"`` list of the last Mount's audit record."""
    records = [json.loads(line) for line in srv.logs if '"msg": "mount"' in line]
    stale: list[dict[str, Any]] = records[-1]["audit"].get("stale", [])
    return stale


OUTAGE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def only_within_the_rule(
    *,
    refused: Callable[[], grpc.StatusCode],
    refused_to_other: Callable[[], grpc.StatusCode],
    answer: Callable[[], None],
    answered: grpc.StatusCode,
    outage: Callable[[], None],
    clock: Clock,
    past_the_window: float,
) -> None:
    """During an outage whose last-known-good listing was just served: another principal
    is never served it, an answer of the store (``answer()``: a denial, NOT_FOUND) is
    never hidden, and once the window has passed (``past_the_window`` seconds on) the
    outage fails the Mount. ``refused`` mounts as the principal that listed before."""
    assert refused_to_other() in OUTAGE
    answer()
    assert refused() == answered
    outage()
    clock.now += past_the_window
    assert refused() in OUTAGE


def contents(resp: Any) -> dict[str, bytes]:
    return {f.path: f.contents for f in resp.files}


def served_through_outage(
    mount: Callable[[], Any],
    expected: dict[str, bytes],
    outage: Callable[[], None],
    clock: Clock,
    age: float,
) -> Any:
    """Mount before the outage, then ``age`` seconds into it: the same files and the same
    ObjectVersions (a rotation sees no change). The Mount during the outage."""
    first = mount()
    assert contents(first) == expected
    outage()
    clock.now += age
    resp = mount()
    assert contents(resp) == expected and resp.object_version == first.object_version
    return resp
