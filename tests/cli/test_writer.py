"""provider.cli.writer.write_atomic: the driver's (kubelet's atomic writer) on-disk layout."""

from __future__ import annotations

import os
import re
import stat
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from provider.cli import writer
from provider.model import OutputFile

# kubelet: ioutil.TempDir(target, "..2006_01_02_15_04_05.") -> a random suffix
PAYLOAD_NAME = re.compile(r"^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.[A-Za-z0-9_]+$")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def f(path: str, contents: bytes, mode: int = 0o644) -> OutputFile:
    return OutputFile(path=path, mode=mode, contents=contents, source="test")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def visible(target: Path) -> dict[str, bytes]:
    """What a container sees: every regular file reached through the top-level names."""
    out: dict[str, bytes] = {}
    for top in sorted(os.listdir(target)):
        if top.startswith(".."):
            continue
        root = target / top
        if root.is_file():
            out[top] = root.read_bytes()
            continue
        for dirpath, _, names in os.walk(root, followlinks=True):
            for name in names:
                full = Path(dirpath) / name
                out[str(full.relative_to(target))] = full.read_bytes()
    return out


def hidden(target: Path) -> set[str]:
    return {n for n in os.listdir(target) if n.startswith("..")}


# --- layout --------------------------------------------------------------------------------


def test_layout_matches_the_driver(tmp_path: Path) -> None:
    target = tmp_path / "mount"
    payload = writer.write_atomic(
        target,
        [f("db/password", b"pw", 0o400), f("db/user", b"alice", 0o440), f("token", b"t", 0o644)],
    )
    assert payload.parent == target
    assert PAYLOAD_NAME.match(payload.name), payload.name
    data = target / "..data"
    assert data.is_symlink()
    assert os.readlink(data) == payload.name  # relative, like kubelet
    for top in ("db", "token"):
        link = target / top
        assert link.is_symlink()
        assert os.readlink(link) == f"..data/{top}"
    assert sorted(os.listdir(target)) == sorted(["..data", payload.name, "db", "token"])
    assert (payload / "db").is_dir() and not (payload / "db").is_symlink()
    assert visible(target) == {"db/password": b"pw", "db/user": b"alice", "token": b"t"}


def test_deeply_nested_paths_are_created(tmp_path: Path) -> None:
    target = tmp_path / "m"
    writer.write_atomic(target, [f("a/b/c/d", b"deep"), f("a/x", b"x")])
    assert (target / "a" / "b" / "c" / "d").read_bytes() == b"deep"
    assert os.listdir(target / "a") == os.listdir(target / "..data" / "a")


def test_binary_and_empty_contents_are_written_exactly(tmp_path: Path) -> None:
    target = tmp_path / "m"
    blob = bytes(range(256)) * 4
    writer.write_atomic(target, [f("blob", blob), f("empty", b"")])
    assert (target / "blob").read_bytes() == blob
    assert (target / "empty").read_bytes() == b""


def test_target_directory_is_created(tmp_path: Path) -> None:
    target = tmp_path / "does" / "not" / "exist"
    writer.write_atomic(target, [f("a", b"1")])
    assert (target / "a").read_bytes() == b"1"


# --- modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o777])
def test_file_modes_are_exact_regardless_of_umask(tmp_path: Path, mask: int) -> None:
    modes = {"a": 0o644, "b": 0o400, "c": 0o777, "d": 0o000, "e/f": 0o640}
    with umask(mask):
        payload = writer.write_atomic(tmp_path / "m", [f(p, b"x", m) for p, m in modes.items()])
    for path, mode in modes.items():
        assert mode_of(payload / path) == mode, path


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_payload_directory_is_0755_regardless_of_umask(tmp_path: Path, mask: int) -> None:
    # docs/protocol.md §3.2: the timestamped payload directory is 0755 (kubelet chmods it), so
    # non-root containers can traverse it whatever umask the writer ran with.
    with umask(mask):
        payload = writer.write_atomic(tmp_path / "m", [f("a", b"x")])
    assert mode_of(payload) == 0o755


def test_nested_directories_are_0755_under_the_usual_umask(tmp_path: Path) -> None:
    with umask(0o022):
        payload = writer.write_atomic(tmp_path / "m", [f("a/b/c", b"x")])
    assert mode_of(payload / "a") == 0o755
    assert mode_of(payload / "a" / "b") == 0o755


# --- second write --------------------------------------------------------------------------


def test_second_write_swaps_content_and_removes_what_disappeared(tmp_path: Path) -> None:
    target = tmp_path / "m"
    first = writer.write_atomic(
        target, [f("keep", b"old"), f("gone", b"bye"), f("dir/x", b"1"), f("dir2/y", b"2")]
    )
    second = writer.write_atomic(
        target, [f("keep", b"new", 0o400), f("dir/z", b"3"), f("fresh", b"f")]
    )
    assert second != first
    assert not first.exists()
    assert os.readlink(target / "..data") == second.name
    assert visible(target) == {"keep": b"new", "dir/z": b"3", "fresh": b"f"}
    assert not (target / "gone").exists() and not (target / "gone").is_symlink()
    assert not (target / "dir2").is_symlink()
    assert hidden(target) == {"..data", second.name}
    assert mode_of(second / "keep") == 0o400


def test_many_writes_leave_one_payload(tmp_path: Path) -> None:
    target = tmp_path / "m"
    for i in range(5):
        payload = writer.write_atomic(target, [f("v", str(i).encode())])
    assert (target / "v").read_bytes() == b"4"
    assert hidden(target) == {"..data", payload.name}


def test_file_can_become_a_directory_between_writes(tmp_path: Path) -> None:
    target = tmp_path / "m"
    writer.write_atomic(target, [f("a", b"file")])
    writer.write_atomic(target, [f("a/b", b"nested")])
    assert (target / "a" / "b").read_bytes() == b"nested"
    writer.write_atomic(target, [f("a", b"file again")])
    assert (target / "a").read_bytes() == b"file again"


def test_provider_written_leftovers_are_replaced(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "a").write_bytes(b"legacy")
    (target / "d").mkdir()
    (target / "d" / "x").write_bytes(b"legacy")
    writer.write_atomic(target, [f("a", b"new"), f("d/y", b"new")])
    assert (target / "a").is_symlink() and (target / "a").read_bytes() == b"new"
    assert (target / "d").is_symlink()
    assert visible(target) == {"a": b"new", "d/y": b"new"}


def test_stale_tmp_link_does_not_block_a_write(tmp_path: Path) -> None:
    target = tmp_path / "m"
    writer.write_atomic(target, [f("a", b"1")])
    os.symlink("nowhere", target / "..data_tmp")
    writer.write_atomic(target, [f("a", b"2")])
    assert (target / "a").read_bytes() == b"2"
    assert not (target / "..data_tmp").is_symlink()


def test_two_writes_in_one_clock_tick_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kubelet makes the payload directory unique with a random suffix (os.MkdirTemp); a coarse
    # or repeated clock reading must not make the second write fail with FileExistsError.
    frozen = types.SimpleNamespace(
        time=lambda: 1_700_000_000.0, strftime=time.strftime, gmtime=time.gmtime
    )
    monkeypatch.setattr(writer, "time", frozen)
    target = tmp_path / "m"
    writer.write_atomic(target, [f("a", b"1")])
    writer.write_atomic(target, [f("a", b"2")])
    assert (target / "a").read_bytes() == b"2"
    assert len(hidden(target)) == 2
