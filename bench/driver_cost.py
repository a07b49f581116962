"""The CSI driver's own client against keyferry, the driver's Go e2e provider and a
trivial Python provider, side by side: ``driverclient -no-write bench`` at concurrency 1
(p50) and 8 (Mounts/s), and each provider process's CPU per Mount around both runs.

keyferry mounts the demo class (3 local objects: a JSON key, a JMESPath extraction and
a base64 decode, 5 files); the Go provider answers its own request (two fixed objects);
the trivial provider (bench/trivial_provider.py) parses the attributes and returns 5
fixed files. The binaries are the driver's (v1.6.0), found as tests/driver.py finds
them; without them this section is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.server import REPO, Served, cpu_seconds, driver_request_json
from bench.table import Row, Section
from provider.cli.manifest import load

DRIVER_DIR = (
    Path(os.environ["KEYFERRY_DRIVERCLIENT"]).parent
    if os.environ.get("KEYFERRY_DRIVERCLIENT")
    else REPO.parent / "shared" / "tools" / "driver"
)
DRIVERCLIENT = DRIVER_DIR / "driverclient"
E2E_PROVIDER = DRIVER_DIR / "e2eprovider"


def available() -> str:
    """Why the section cannot run, or ``""``."""
    for binary in (DRIVERCLIENT, E2E_PROVIDER):
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            return f"{binary} not found (the CSI driver's binaries; see tests/driver.py)"
    return ""


def bench(socket: Path, request: Path, n: int, concurrency: int) -> dict[str, Any]:
    argv = [str(DRIVERCLIENT), "-socket", str(socket), "-request", str(request)]
    argv += ["-n", str(n), "-concurrency", str(concurrency), "-no-write", "bench"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    if result["errors"]:
        raise RuntimeError(f"{socket.name}: {result['errors']} errors: {result['first_error']}")
    return result


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.01)


def _spawn(argv: list[str], socket: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(socket, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(workdir: Path, n: int = 2000) -> Section:
    why = available()
    if why:
        return Section("driver client (-no-write bench), demo class", [], note=f"skipped: {why}")
    workdir.mkdir(parents=True, exist_ok=True)
    demo = next(iter(load(REPO / "examples/demo/secretproviderclass.yaml")))
    assert not isinstance(demo, Exception)
    demo_request = workdir / "demo-request.json"
    demo_request.write_text(json.dumps(driver_request_json(demo.parameters, None, workdir / "t")))
    sockets = workdir / "providers"
    sockets.mkdir(exist_ok=True)
    served = Served(workdir / "keyferry", {"local_root": str(REPO / "examples/demo/secrets")})
    e2e_sock, trivial_sock = sockets / "e2e-provider.sock", sockets / "trivial.sock"
    e2e = _spawn([str(E2E_PROVIDER), "-endpoint", f"unix://{e2e_sock}", "-http-addr", ""], e2e_sock)
    trivial = _spawn([sys.executable, "bench/trivial_provider.py", str(trivial_sock)], trivial_sock)
    providers: dict[str, tuple[Path, Path, Callable[[], float]]] = {
        "keyferry": (served.socket("keyferry"), demo_request, lambda: served.cpu),
        "go": (e2e_sock, DRIVER_DIR / "e2e-request.json", lambda: cpu_seconds(e2e.pid)),
        "trivial": (trivial_sock, demo_request, lambda: cpu_seconds(trivial.pid)),
    }
    got: dict[tuple[str, int], dict[str, Any]] = {}
    cpu: dict[str, float] = {}
    try:
        for socket, request, _ in providers.values():
            bench(socket, request, 300, 8)  # warm-up: connections, caches, plans
        for name, (socket, request, clock) in providers.items():
            before = clock()
            for concurrency in (1, 8):
                got[(name, concurrency)] = bench(socket, request, n, concurrency)
            cpu[name] = (clock() - before) / (2 * n)
    finally:
        served.stop()
        _stop(e2e)
        _stop(trivial)
    p50 = {name: got[(name, 1)]["p50_us"] / 1000 for name in providers}
    rate = {name: got[(name, 8)]["per_sec"] for name in providers}
    rows = [
        Row(
            "p50 at concurrency 1, vs the Go e2e provider",
            f"{p50['keyferry']:.2f} ms",
            f"{p50['go']:.2f} ms",
            f"{p50['keyferry'] / p50['go']:.1f}x",
            "<= 3x",
            p50["keyferry"] <= 3 * p50["go"],
        ),
        Row(
            "   vs the trivial Python provider",
            "",
            f"{p50['trivial']:.2f} ms",
            f"{p50['keyferry'] / p50['trivial']:.1f}x",
        ),
        Row(
            "Mounts/s at concurrency 8, vs the Go e2e provider",
            f"{rate['keyferry']:.0f}",
            f"{rate['go']:.0f}",
            f"{rate['keyferry'] / rate['go']:.2f}",
            ">= 0.33",
            rate["keyferry"] >= rate["go"] / 3,
        ),
        Row(
            "   vs the trivial Python provider",
            "",
            f"{rate['trivial']:.0f}",
            f"{rate['keyferry'] / rate['trivial']:.2f}",
        ),
        Row(
            "provider CPU per Mount, vs the trivial Python one",
            f"{cpu['keyferry'] * 1000:.2f} ms",
            f"{cpu['trivial'] * 1000:.2f} ms",
            f"{cpu['keyferry'] / cpu['trivial']:.1f}x",
        ),
        Row("   the Go e2e provider", "", f"{cpu['go'] * 1000:.2f} ms"),
    ]
    return Section(f"driver client v1.6.0 (-no-write bench, n={n}), keyferry's demo class", rows)
