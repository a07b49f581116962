"""Provider CPU per cache-hit Mount of a 5-object class, for the local backend and each
cloud: a ``keyferry serve`` process's CPU time (/proc) around ``mounts`` identical
Mounts of one pod, every value and identity already cached (the default 30 s value
cache; the first Mounts warm it). The client is another process."""

from __future__ import annotations

import time
from pathlib import Path

from bench.clouds import Clouds
from bench.server import Served
from bench.table import Row, Section
from keyferry_fakes.harness import driver_request

SOCKETS = {"local": "keyferry", "aws": "aws", "gcp": "gcp", "azure": "azure"}


def run(c: Clouds, workdir: Path, mounts: int = 1000) -> Section:
    rows = []
    with Served(workdir, c.config()) as served:
        served.settle()
        for cloud, socket in SOCKETS.items():
            request = driver_request(c.params(cloud, 5), tokens=c.tokens(cloud))
            for _ in range(20):
                assert len(served.send(socket, request).files) == 5
            calls = c.calls(cloud) if cloud != "local" else 0
            before, start = served.cpu, time.perf_counter()
            for _ in range(mounts):
                served.send(socket, request)
            per_mount = (served.cpu - before) / mounts
            wall = (time.perf_counter() - start) / mounts
            assert cloud == "local" or c.calls(cloud) == calls, f"{cloud}: not all cache hits"
            rows.append(
                Row(
                    f"{cloud} (Mount p50 wall {wall * 1000:.2f} ms)",
                    f"{per_mount * 1000:.2f} ms",
                    "",
                    "",
                    "<= 1 ms",
                    per_mount <= 0.001,
                )
            )
    return Section(f"provider CPU per cache-hit Mount, 5-object class ({mounts} Mounts each)", rows)
