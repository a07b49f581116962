"""K objects per Mount, every value read taking 20 ms at the fake, value cache off:
keyferry's Mount beside the cloud's parallel floor (K reads in flight at once through
its own SDK against the same fake, one thread each) and beside the sequential pattern
(K reads one after another, as the official AWS and Azure providers fetch). keyferry
runs in this process, as the floor does, so both share the CPU with the fakes alike."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.clouds import CLOUDS, Clouds
from bench.table import Row, Section
from keyferry_fakes.harness import driver_request, running_server

DELAY = 0.02
KS = (1, 5, 20, 50)


def run(c: Clouds, workdir: Path, runs: int = 7) -> Section:
    rows = []
    c.delay(DELAY)
    config = c.config(cache_ttl_seconds=0, log_level="warning", providers="aws,gcp,azure")
    providers, backends = config.pop("providers"), config.pop("backends")
    try:
        with running_server(workdir, providers=providers, backends=backends, **config) as srv:
            for cloud in CLOUDS:
                for k in KS:
                    request = driver_request(c.params(cloud, k), tokens=c.tokens(cloud))
                    for _ in range(2):  # identity, clients, connections
                        assert len(srv.send(cloud, request).files) == k
                    mounts, floors = [], []
                    with c.floor(cloud, k) as timed:
                        for _ in range(runs):  # alternately, so both see the same load
                            start = time.perf_counter()
                            srv.send(cloud, request)
                            mounts.append(time.perf_counter() - start)
                            floors.append(timed(True))
                        sequential = timed(False)
                    ours, floor = statistics.median(mounts), statistics.median(floors)
                    rows.append(
                        Row(
                            f"{cloud:5} K={k:<2}  (sequential: {sequential * 1000:.0f} ms)",
                            f"{ours * 1000:.0f} ms",
                            f"floor {floor * 1000:.0f} ms",
                            f"{ours / floor:.2f}x",
                            "<= 1.3x" if k == 50 else "",
                            ours <= 1.3 * floor if k == 50 else None,
                        )
                    )
    finally:
        c.delay(0.0)
    return Section(
        f"K objects per Mount at {DELAY * 1000:.0f} ms per read, value cache off "
        f"(median of {runs}, alternating with the floor), vs the parallel floor through the SDK",
        rows,
    )
