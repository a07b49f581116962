"""Start-up and memory of ``keyferry serve``: time until a Version call answers on the
socket, resident memory idle (native socket only: no SDK loaded; all four sockets once
their SDKs are imported) and with all four sockets after a Mount on each cloud. The
references are the figures before this work (the issue's; 83.3 MiB from the previous
docs/benchmarks.md); deploy/'s memory request is checked against the idle figures."""

from __future__ import annotations

import time
from pathlib import Path

from bench.clouds import Clouds
from bench.server import Served, median
from bench.table import Row, Section


def run(c: Clouds, workdir: Path) -> Section:
    ready = []
    for i in range(3):
        with Served(workdir / f"start-{i}", {"providers": "keyferry", "http_address": ""}) as s:
            ready.append(s.ready_seconds)
            if i == 0:
                time.sleep(3)
                idle = s.rss
    sockets = {"providers": "keyferry,aws,gcp,azure", "http_address": ""}
    with Served(workdir / "preloaded", sockets) as s:
        s.settle()  # the background SDK imports of the cloud sockets are done
        preloaded = s.rss
    with Served(workdir / "all", c.config()) as s:
        for cloud in ("local", "aws", "gcp", "azure"):
            s.mount("keyferry" if cloud == "local" else cloud, c.params(cloud, 5), c.tokens(cloud))
        time.sleep(1)
        active = s.rss
    return Section(
        "footprint of keyferry serve (reference: the issue's figures before this work)",
        [
            Row(
                "ready: spawn to a Version answer (median of 3)",
                f"{median(ready):.2f} s",
                "0.3 s",
                f"{median(ready) / 0.3:.2f}",
                "<= 1.1",
                median(ready) <= 0.33,
            ),
            Row(
                "RSS idle, socket keyferry only",
                f"{idle:.1f} MiB",
                "44 MiB",
                f"{idle / 44:.2f}",
                "<= 1.1",
                idle <= 44 * 1.1,
            ),
            Row(
                "RSS idle, sockets keyferry,aws,gcp,azure (SDKs loaded)",
                f"{preloaded:.1f} MiB",
                "83.3 MiB",
                f"{preloaded / 83.3:.2f}",
                "<= 1.1",
                preloaded <= 83.3 * 1.1,
            ),
            Row(
                "RSS, four sockets, a Mount on each cloud",
                f"{active:.1f} MiB",
                "135 MiB",
                f"{active / 135:.2f}",
                "<= 1.1",
                active <= 135 * 1.1,
            ),
        ],
    )
