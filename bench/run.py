"""``make bench``: every measurement of keyferry's Mount cost, side by side with its
reference from the same run, printed as one table (docs/benchmarks.md keeps it).

    .venv/bin/python -m bench.run [--quick]

Sections: the CSI driver's own client against keyferry, the driver's Go e2e provider
and a trivial Python provider (skipped without the driver's binaries); provider CPU per
cache-hit Mount for the local backend and each cloud; K = 1, 5, 20, 50 objects at 20 ms
per read beside each cloud's parallel floor and the sequential pattern; a rotation
wave; start-up and memory. Every fake runs on 127.0.0.1. Wall-clock numbers move with
the load on the machine: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cpu_cost, driver_cost, fanout, footprint, wave
from bench.clouds import clouds
from bench.table import Section, render


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer Mounts per measurement")
    args = parser.parse_args()
    scale = 4 if args.quick else 1
    start = time.perf_counter()
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmp:
        work = Path(tmp)
        sections.append(driver_cost.run(work / "driver", n=4000 // scale))
        with clouds(objects=max(fanout.KS)) as c:
            sections.append(cpu_cost.run(c, work / "cpu", mounts=2000 // scale))
            sections.append(fanout.run(c, work / "fanout", runs=7 if scale == 1 else 3))
            sections.append(wave.run(c, work / "wave"))
            sections.append(footprint.run(c, work / "footprint"))
    took = time.perf_counter() - start
    print(
        f"keyferry Mount cost — python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {took:.0f} s"
    )
    print(render(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
