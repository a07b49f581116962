"""Write a MountResponse's files the way the driver does (kubelet's atomic writer).

Used by ``keyferry mount --out`` and the demo, so what users inspect locally is
the layout their pods see: a hidden timestamped directory holding the payload,
``..data`` pointing at it, one ``name -> ..data/name`` symlink per top-level
entry, per-file modes applied exactly, and the swap done with a rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..model import OutputFile

DATA = "..data"


def write_atomic(target: Path, files: Sequence[OutputFile]) -> Path:
    """Replace the content of ``target`` with ``files``; return the new payload dir."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    # Like kubelet: the timestamp plus a random suffix, so two writes in one tick differ.
    payload = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    os.chmod(payload, 0o755)
    for f in files:
        dest = payload / f.path
        for parent in reversed(dest.relative_to(payload).parents[:-1]):
            sub = payload / parent
            if not sub.is_dir():
                sub.mkdir()
                os.chmod(sub, 0o755)
        with open(dest, "wb") as fh:
            fh.write(f.contents)
        os.chmod(dest, f.mode)  # exactly the mode sent, umask ignored, as the driver does
    old_payload = None
    data_link = target / DATA
    if data_link.is_symlink():
        old_payload = target / os.readlink(data_link)
    tmp_link = target / "..data_tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(payload.name, tmp_link)
    os.rename(tmp_link, data_link)
    wanted = {f.path.split("/", 1)[0] for f in files}
    for name in wanted:
        link = target / name
        if link.is_symlink():
            continue
        if link.exists():  # a provider-written leftover: the driver deletes it too
            if link.is_dir():
                shutil.rmtree(link)
            else:
                link.unlink()
        os.symlink(f"{DATA}/{name}", link)
    for entry in target.iterdir():
        if entry.name.startswith("..") or entry.name in wanted:
            continue
        if entry.is_symlink():
            entry.unlink()
    if old_payload is not None and old_payload.exists() and old_payload != payload:
        shutil.rmtree(old_payload)
    return payload
