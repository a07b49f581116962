"""``keyferry serve`` in a process of its own, for the benchmarks that read its CPU time
and memory from /proc, and the clients that call it over its Unix sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from keyferry_fakes.harness import DEFAULT_POD, driver_request, volume_context
from provider._proto.v1alpha1 import service_pb2 as pb
from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Served:
    """``python -m provider serve --config FILE`` with ``config`` written to FILE; ready
    when a Version call answers on every socket (``ready_seconds`` after the start)."""

    def __init__(self, workdir: Path, config: Mapping[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir = workdir / "sockets"
        settings = {"socket_dir": str(self.socket_dir), "log_level": "info", **config}
        self.names = [
            p.split("=")[0] for p in str(settings.get("providers", "keyferry")).split(",")
        ]
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(json.loads(json.dumps(settings))))
        start = time.perf_counter()
        # Audit lines go to a pipe drained by nobody but the kernel: /dev/null, as a
        # container runtime's log pipe costs the same write per line.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provider", "serve", "--config", str(path)],
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()
        self.ready_seconds = time.perf_counter() - start
        self._channels: dict[str, grpc.Channel] = {}

    def socket(self, name: str) -> Path:
        return self.socket_dir / f"{name}.sock"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        pending = list(self.names)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyferry serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"keyferry serve not ready: {pending}")
            name = pending[0]
            if self.socket(name).exists():
                try:
                    with grpc.insecure_channel(f"unix:{self.socket(name)}") as ch:
                        pb_grpc.CSIDriverProviderStub(ch).Version(
                            pb.VersionRequest(version="v1alpha1"), timeout=2
                        )
                    pending.pop(0)
                    continue
                except grpc.RpcError:
                    pass
            time.sleep(0.002)

    def settle(self, window: float = 0.5, limit: float = 60.0) -> None:
        """Wait until the process is idle (under 2 % of a CPU over ``window``): the SDK
        imports that ``serve`` starts in the background for cloud sockets are done."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.cpu
            time.sleep(window)
            if self.cpu - before < 0.02 * window:
                return

    @property
    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    @property
    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def mount(
        self,
        name: str,
        params: Mapping[str, str],
        tokens: Mapping[str, str] | None = None,
    ) -> pb.MountResponse:
        return self.send(name, driver_request(params, tokens=tokens))

    def send(self, name: str, request: pb.MountRequest) -> pb.MountResponse:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = grpc.insecure_channel(f"unix:{self.socket(name)}")
        reply: pb.MountResponse = pb_grpc.CSIDriverProviderStub(channel).Mount(request, timeout=60)
        return reply

    def stop(self) -> None:
        for channel in self._channels.values():
            channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def driver_request_json(
    params: Mapping[str, str], tokens: Mapping[str, str] | None, target: Path
) -> dict[str, Any]:
    """The ``REQ.json`` of the driver's client for a class mounted by the default pod."""
    context = volume_context(DEFAULT_POD, tokens, spc_name="bench")
    return {"spc_parameters": dict(params), "volume_context": context, "target_path": str(target)}


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
