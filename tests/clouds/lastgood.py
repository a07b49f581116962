"""Helpers for the last-known-good listing tests of every cloud
(``tests/clouds/<cloud>/test_outage_listings.py``)."""

from __future__ import annotations

import json
import time
import types
from typing import Any

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
