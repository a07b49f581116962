"""The Secrets Store CSI Driver's own provider client, as a test helper.

``driverclient`` is the driver's ``pkg/secrets-store/provider_client.go`` (v1.6.0)
built unchanged, with what ``NodePublishVolume`` does around it: the same dialer
(authority ``localhost``), service config (waitForReady, retries on UNAVAILABLE),
4 MiB receive limit, ``MountContent``, the driver's file validation and its atomic
writer (the ``..data`` symlink swap, per-file modes). :func:`mount` runs it against
a keyferry socket and returns what it reported; :func:`volume` reads what it wrote.

The binary is looked up at ``$KEYFERRY_DRIVERCLIENT``, else at
``shared/tools/driver/driverclient`` in the directory that holds the clone (CI keeps it there).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyferry_fakes.harness import volume_context

DRIVERCLIENT = Path(
    os.environ.get("KEYFERRY_DRIVERCLIENT")
    or Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "driver" / "driverclient"
)

requires_driverclient = pytest.mark.skipif(
    not (DRIVERCLIENT.is_file() and os.access(DRIVERCLIENT, os.X_OK)),
    reason=f"the CSI driver's client binary is not at {DRIVERCLIENT} (set KEYFERRY_DRIVERCLIENT)",
)

DATA_DIR = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+")
"""The timestamped directory the driver's atomic writer creates (``..2026_01_02_...``)."""


@dataclass
class Mounted:
    """One ``driverclient mount``: what the driver concluded and what it was sent back."""

    raw: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.raw["driver_MountContent"]["ok"])

    @property
    def error(self) -> str:
        return str(self.raw["driver_MountContent"].get("error") or "")

    @property
    def error_code(self) -> str:
        return str(self.raw["driver_MountContent"].get("error_code") or "")

    @property
    def object_versions(self) -> dict[str, str]:
        """The id -> version map MountContent returned (what the driver stores in
        SecretProviderClassPodStatus)."""
        return dict(self.raw["driver_MountContent"].get("object_versions") or {})

    @property
    def grpc_error(self) -> str:
        return str(self.raw.get("grpc_error") or "")

    @property
    def code(self) -> str:
        """The gRPC status code name the driver got (``NotFound``...), else ``""``."""
        m = re.match(r"rpc error: code = (\w+) desc = ", self.grpc_error)
        return m.group(1) if m else ""

    @property
    def message(self) -> str:
        """The gRPC status message the driver got."""
        m = re.match(r"rpc error: code = \w+ desc = (.*)", self.grpc_error, re.DOTALL)
        return m.group(1) if m else ""

    @property
    def response_files(self) -> dict[str, int]:
        """path -> mode of the files in the provider's MountResponse."""
        return {f["path"]: f["mode"] for f in (self.raw.get("response") or {}).get("files") or []}

    @property
    def written(self) -> dict[str, str]:
        """path -> octal mode the driver's writer reported writing."""
        return {f["path"]: f["mode_octal"] for f in self.raw.get("written_files") or []}


def mount(
    socket: Path,
    params: Mapping[str, str],
    target: Path,
    *,
    pod: tuple[str, str, str, str],
    tokens: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    old_versions: Mapping[str, str] | None = None,
    spc_name: str = "test-class",
    timeout: str = "30s",
) -> Mounted:
    """``driverclient -socket SOCKET -request REQ.json mount`` into ``target``."""
    request: dict[str, Any] = {
        "spc_parameters": dict(params),
        "volume_context": volume_context(pod, tokens, spc_name=spc_name),
        "target_path": str(target),
    }
    if secrets is not None:
        request["secrets"] = dict(secrets)
    if old_versions is not None:
        request["old_object_versions"] = dict(old_versions)
    target.mkdir(parents=True, exist_ok=True)
    req_file = target.parent / f"{target.name}.request.json"
    req_file.write_text(json.dumps(request), encoding="utf-8")
    argv = [str(DRIVERCLIENT), "-socket", str(socket), "-timeout", timeout]
    argv += ["-request", str(req_file), "mount"]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    req_file.unlink()
    try:
        raw = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"driverclient exited {proc.returncode} without a JSON report:\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
        ) from exc
    assert isinstance(raw, dict) and "driver_MountContent" in raw, proc.stdout[-2000:]
    return Mounted(raw)


@dataclass
class Volume:
    """The target directory as the driver's atomic writer left it."""

    data_dir: str
    """The ``..YYYY_MM_DD_hh_mm_ss.N`` directory ``..data`` points to."""
    files: dict[str, tuple[bytes, int]]
    """Every regular file under it: relative path -> (bytes, permission bits)."""


def volume(target: Path) -> Volume:
    """Read ``target`` and check the writer's layout: exactly ``..data`` (a symlink to
    the one timestamped directory), that directory, and one symlink
    ``<name> -> ..data/<name>`` per top-level name of the payload; nothing else."""
    entries = sorted(os.listdir(target))
    data_link = target / "..data"
    assert data_link.is_symlink(), f"no ..data symlink in {entries}"
    data_dir = os.readlink(data_link)
    assert DATA_DIR.fullmatch(data_dir), f"..data -> {data_dir!r}"
    assert (target / data_dir).is_dir() and not (target / data_dir).is_symlink()
    files: dict[str, tuple[bytes, int]] = {}
    top: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(target / data_dir):
        for d in dirnames:
            assert not Path(dirpath, d).is_symlink(), Path(dirpath, d)
        for f in filenames:
            full = Path(dirpath, f)
            rel = full.relative_to(target / data_dir).as_posix()
            st = os.lstat(full)
            assert stat.S_ISREG(st.st_mode), f"{rel} is not a regular file"
            files[rel] = (full.read_bytes(), stat.S_IMODE(st.st_mode))
            top.add(rel.split("/", 1)[0])
    assert entries == sorted({"..data", data_dir} | top), f"stray entries: {entries}"
    for name in top:
        link = target / name
        assert link.is_symlink(), f"{name} is not a symlink"
        assert os.readlink(link) == f"..data/{name}", f"{name} -> {os.readlink(link)}"
    # what a container reads through the user-visible names
    for rel, (data, mode) in files.items():
        assert (target / rel).read_bytes() == data
        assert stat.S_IMODE(os.stat(target / rel).st_mode) == mode
    return Volume(data_dir=data_dir, files=files)
