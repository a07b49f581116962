"""Mount latency over the Unix socket, concurrency, and idle memory.

Run: ``make bench`` (or ``.venv/bin/python bench/mount_latency.py``).

Prints, from one run on this machine:
1. latency of the demo class (5 files, 3 local objects) over a real gRPC socket,
   serial, and throughput with 8 concurrent clients;
2. a class of 10 objects on a backend with 50 ms injected latency, fetched with
   max_concurrent_fetches=1 (one at a time, as the official AWS/Azure providers
   do) and =16, side by side, as a ratio;
3. resident memory of an idle ``keyferry serve`` process.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyferry_fakes.harness import driver_request  # noqa: E402
from provider import config, registry  # noqa: E402
from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc  # noqa: E402
from provider.backend import Services  # noqa: E402
from provider.cli.embedded import EmbeddedProvider  # noqa: E402
from provider.cli.manifest import load  # noqa: E402
from provider.model import Deadline, Fetched, Mount  # noqa: E402

SLOW_SECONDS = 0.05


class SlowBackend:
    """Sleeps in the shared blocking pool like a real SDK call would."""

    name = "slow"

    def __init__(self, settings: Mapping[str, Any], services: Services) -> None:
        self.services = services

    async def fetch(self, mount: Mount, refs: Sequence[Hashable], deadline: Deadline) -> list[Any]:
        async def one(ref: Hashable) -> Fetched:
            await self.services.run_blocking(time.sleep, SLOW_SECONDS)
            return Fetched(content=repr(ref).encode(), version="1")

        return list(await asyncio.gather(*(one(r) for r in refs)))

    async def close(self) -> None:
        return None


class SlowHook:
    NATIVE_KEYS = ("name",)

    @staticmethod
    def native_ref(fields: Mapping[str, Any], where: str, mount: Mount) -> tuple[Hashable, str]:
        return str(fields["name"]), str(fields["name"])


def _register_slow() -> None:
    """A cloud named ``slow``: one registry line and its two modules, as for a real one."""
    slow = registry.Cloud("slow", drop_in=False)
    registry.CLOUDS[slow.name] = slow
    backend, dialect = type(sys)(slow.module("backend")), type(sys)(slow.module("dialect"))
    backend.create = SlowBackend  # type: ignore[attr-defined]
    dialect.NATIVE_KEYS = SlowHook.NATIVE_KEYS  # type: ignore[attr-defined]
    dialect.native_ref = SlowHook.native_ref  # type: ignore[attr-defined]
    sys.modules[backend.__name__], sys.modules[dialect.__name__] = backend, dialect


def _stub(emb: EmbeddedProvider) -> pb_grpc.CSIDriverProviderStub:
    return pb_grpc.CSIDriverProviderStub(grpc.insecure_channel(f"unix:{emb.socket('keyferry')}"))


def _timed(stub: pb_grpc.CSIDriverProviderStub, request: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        stub.Mount(request, timeout=30)
        out.append(time.perf_counter() - t)
    return out


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"p50 {statistics.median(values) * 1000:.2f} ms, p95 {q[18] * 1000:.2f} ms"


def demo_latency(tmp: Path) -> None:
    spc = next(s for s in load(REPO / "examples/demo/secretproviderclass.yaml"))
    assert not isinstance(spc, Exception)
    request = driver_request(spc.parameters)
    cfg = config.load(
        None,
        env={},
        overrides={
            "socket_dir": tmp / "s1",
            "http_address": "",
            "local_root": REPO / "examples/demo/secrets",
        },
    )
    with EmbeddedProvider(cfg) as emb:
        stub = _stub(emb)
        _timed(stub, request, 20)  # warm up
        serial = _timed(stub, request, 300)
        clients = 8
        per_client = 100
        with ThreadPoolExecutor(clients) as pool:
            t = time.perf_counter()
            list(pool.map(lambda _: _timed(_stub(emb), request, per_client), range(clients)))
            wall = time.perf_counter() - t
    print("1. demo class (3 objects, 5 files) over the Unix socket")
    print(f"   serial:        {_ms(serial)}  ({len(serial) / sum(serial):.0f} mounts/s)")
    print(f"   {clients} clients:     {clients * per_client / wall:.0f} mounts/s in total")


def concurrency_ratio(tmp: Path) -> None:
    _register_slow()
    items = "\n".join(f"- {{backend: slow, name: obj-{i}}}" for i in range(10))
    request = driver_request({"objects": items})
    results = {}
    for workers in (1, 16):
        cfg = config.load(
            None,
            env={},
            overrides={
                "socket_dir": tmp / f"c{workers}",
                "http_address": "",
                "max_concurrent_fetches": workers,
            },
        )
        with EmbeddedProvider(cfg) as emb:
            stub = _stub(emb)
            _timed(stub, request, 2)
            results[workers] = statistics.median(_timed(stub, request, 15))
    print(f"2. 10 objects, {SLOW_SECONDS * 1000:.0f} ms backend latency each")
    print(f"   one at a time (max_concurrent_fetches=1):  {results[1] * 1000:.0f} ms per mount")
    print(f"   concurrent    (max_concurrent_fetches=16): {results[16] * 1000:.0f} ms per mount")
    print(f"   ratio: {results[1] / results[16]:.1f}x faster")


def _serve_rss(sockets: Path, providers: str) -> float:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provider",
            "serve",
            "--socket-dir",
            str(sockets),
            "--http-address",
            "127.0.0.1:0",
            "--providers",
            providers,
        ],
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    try:
        last = sockets / f"{providers.split(',')[-1]}.sock"
        for _ in range(200):
            if last.exists():
                break
            time.sleep(0.05)
        time.sleep(3.0)  # let the background SDK preload finish
        with open(f"/proc/{proc.pid}/status") as fh:
            rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rss / 1024


def idle_rss(tmp: Path) -> None:
    native = _serve_rss(tmp / "rss1", "keyferry")
    clouds = _serve_rss(tmp / "rss4", "keyferry,aws,gcp,azure")
    print("3. idle `keyferry serve` resident memory")
    print(f"   socket keyferry only (SDKs load on first use):        {native:.1f} MiB")
    print(f"   sockets keyferry,aws,gcp,azure (SDKs preloaded):      {clouds:.1f} MiB")


def main() -> None:
    print(f"keyferry mount benchmark — python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmp:
        demo_latency(Path(tmp))
        concurrency_ratio(Path(tmp))
        idle_rss(Path(tmp))


if __name__ == "__main__":
    main()
