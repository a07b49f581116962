"""What a template object costs per Mount: provider CPU per cache-hit Mount of a 5-object
local class, without a template and with one rendering all five values.

Run: ``.venv/bin/python -m bench.templates [--mounts 2000] [--rounds 3]``

A ``keyferry serve`` process (``bench.server.Served``) and its CPU time from /proc around
``--mounts`` identical Mounts of each class; the classes take turns for ``--rounds``
rounds and the median per class is printed, so the differences are measured side by side.
Every value is cached after the first Mount (the default 30 s value cache) and the plan
with its compiled template is reused, as on every rotation poll.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.server import Served
from keyferry_fakes.harness import driver_request

OBJECTS = 5
FIVE: list[dict[str, object]] = [
    {"backend": "local", "name": f"f{i}.json", "path": f"f{i}"} for i in range(OBJECTS)
]
ENV = "".join(f"V{i}={{{{ values['f{i}'] | shellquote }}}}\n" for i in range(OBJECTS))
LOOP = (
    "{% for k in ['f0', 'f1', 'f2', 'f3', 'f4'] %}{{ k | upper }}={{ loop.index }}\n{% endfor %}"
    + ENV
)


def hidden(objects: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{**o, "write": False} for o in objects]


CLASSES = {
    "5 objects, 5 files (no template)": FIVE,
    "5 objects + a template of 5 lines: 6 files": [*FIVE, {"template": ENV, "path": "app.env"}],
    "5 objects write: false + the template: 1 file": [
        *hidden(FIVE),
        {"template": ENV, "path": "app.env"},
    ],
    "the same with a for loop (rendered in a thread)": [
        *hidden(FIVE),
        {"template": LOOP, "path": "app.env"},
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kf-bench-templates-") as tmp:
        root = Path(tmp) / "local"
        root.mkdir()
        for i in range(OBJECTS):
            (root / f"f{i}.json").write_text(json.dumps({"index": i, "pad": "x" * 64}))
        config = {"providers": "keyferry", "local_root": str(root), "http_address": ""}
        with Served(Path(tmp) / "serve", config) as served:
            served.settle()
            requests = {
                name: driver_request({"objects": json.dumps(objects)})
                for name, objects in CLASSES.items()
            }
            for request in requests.values():
                for _ in range(20):  # values cached, plans parsed, templates compiled
                    served.send("keyferry", request)
            cpu: dict[str, list[float]] = {name: [] for name in CLASSES}
            wall: dict[str, list[float]] = {name: [] for name in CLASSES}
            for _ in range(args.rounds):
                for name, request in requests.items():
                    before, start = served.cpu, time.perf_counter()
                    for _ in range(args.mounts):
                        served.send("keyferry", request)
                    cpu[name].append((served.cpu - before) / args.mounts)
                    wall[name].append((time.perf_counter() - start) / args.mounts)
    base = statistics.median(cpu[next(iter(CLASSES))])
    print(
        f"provider CPU per cache-hit Mount, local backend, {args.mounts} Mounts x "
        f"{args.rounds} rounds (median)"
    )
    print(f"{'class':<52}{'CPU':>10}{'vs none':>10}{'wall':>10}")
    for name in CLASSES:
        per = statistics.median(cpu[name])
        print(
            f"{name:<52}{per * 1000:>8.3f}ms{(per - base) * 1000:>+8.3f}ms"
            f"{statistics.median(wall[name]) * 1000:>8.3f}ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
