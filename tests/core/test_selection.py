"""``select:`` in the native dialect (provider/selection.py), with the local backend as the
first implementation: end to end over the real socket, and the hostile inputs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyferry_fakes.harness import Server
from provider.clouds.local.backend import MAX_DEPTH, WALK_FACTOR
from provider.errors import KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan
from tests.core.test_server import objects

CANARY = "CANARY-selected-7d41b2"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "app" / "nested" / "deeper").mkdir(parents=True)
    (r / "app" / "db-password").write_text(CANARY)
    (r / "app" / "api-key").write_text("key-1")
    (r / "app" / "nested" / "tls.crt").write_text("cert")
    (r / "app" / "nested" / "deeper" / "x").write_text("deep")
    (r / "other.txt").write_text("other")
    return r


@pytest.fixture
def srv(serve: Callable[..., Server], root: Path) -> Server:
    return serve(local_root=root)


SELECT_APP = objects("- {backend: local, select: {directory: app}, path: secrets}")


def refused(srv: Server, params: dict[str, str]) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a Mount that must fail."""
    with pytest.raises(grpc.RpcError) as err:
        srv.mount("keyferry", params)
    return err.value.code(), err.value.details() or ""


def files_of(resp: object) -> dict[str, tuple[int, bytes]]:
    return {f.path: (f.mode, f.contents) for f in resp.files}  # type: ignore[attr-defined]


def versions_of(resp: object) -> dict[str, str]:
    return {v.id: v.version for v in resp.object_version}  # type: ignore[attr-defined]


def test_a_selection_writes_each_file_under_the_directory_with_mode_and_versions(
    srv: Server,
) -> None:
    params = objects(
        "- {backend: local, select: {directory: app}, path: secrets, mode: '0600'}",
        "- {backend: local, name: other.txt}",
    )
    resp = srv.mount("keyferry", params)
    assert files_of(resp) == {
        "secrets/api-key": (0o600, b"key-1"),
        "secrets/db-password": (0o600, CANARY.encode()),
        "other.txt": (0o644, b"other"),
    }
    versions = versions_of(resp)
    assert set(versions) == {"secrets", "secrets/api-key", "secrets/db-password", "other.txt"}
    assert all(v.startswith("hmac-sha256:") for v in versions.values())
    assert all(CANARY not in v for v in versions.values())


def test_recursive_selection_names_files_by_their_path_below_the_directory(srv: Server) -> None:
    resp = srv.mount(
        "keyferry", objects("- {backend: local, select: {directory: app, recursive: true}}")
    )
    assert sorted(files_of(resp)) == [
        "app/api-key",
        "app/db-password",
        "app/nested/deeper/x",
        "app/nested/tls.crt",
    ]


def test_the_selection_version_changes_when_a_file_is_added_or_removed_not_otherwise(
    srv: Server, root: Path
) -> None:
    first = versions_of(srv.mount("keyferry", SELECT_APP))
    assert versions_of(srv.mount("keyferry", SELECT_APP)) == first
    (root / "app" / "new").write_text("new")
    added = versions_of(srv.mount("keyferry", SELECT_APP))
    assert added["secrets"] != first["secrets"] and "secrets/new" in added
    assert added["secrets/api-key"] == first["secrets/api-key"]
    (root / "app" / "new").unlink()
    assert versions_of(srv.mount("keyferry", SELECT_APP)) == first
    (root / "app" / "api-key").write_text("key-2")
    rotated = versions_of(srv.mount("keyferry", SELECT_APP))
    assert rotated["secrets/api-key"] != first["secrets/api-key"]
    assert rotated["secrets"] != first["secrets"]


def test_an_empty_selection_is_not_found_unless_optional(srv: Server, root: Path) -> None:
    (root / "empty").mkdir()
    code, details = refused(srv, objects("- {backend: local, select: {directory: empty}}"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "objects[0] (local: select empty)" in details
    assert "matches no objects" in details
    resp = srv.mount(
        "keyferry",
        objects(
            "- {backend: local, select: {directory: empty}, optional: true}",
            "- {backend: local, name: other.txt}",
        ),
    )
    assert list(files_of(resp)) == ["other.txt"]


def test_more_matches_than_the_cap_fail_naming_the_count_and_the_setting(
    serve: Callable[..., Server], root: Path
) -> None:
    s = serve(local_root=root, max_selected_objects=1)
    code, details = refused(s, SELECT_APP)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 1 objects" in details and "max_selected_objects" in details


def test_the_cap_bounds_all_the_selections_of_a_mount_together(
    serve: Callable[..., Server], root: Path
) -> None:
    """Each selection under the cap, together over it: the cap bounds what one Mount
    reads and holds, or K selections would read K times the cap."""
    s = serve(local_root=root, max_selected_objects=2)
    app = "- {backend: local, select: {directory: app}, path: a}"
    nested = "- {backend: local, select: {directory: app/nested}, path: n}"
    assert len(files_of(s.mount("keyferry", objects(app)))) == 2
    assert len(files_of(s.mount("keyferry", objects(nested)))) == 1
    code, details = refused(s, objects(f"{app}\n{nested}"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the selections of this class match 3 objects together" in details
    assert "max_selected_objects (2)" in details


def test_max_matches_lowers_the_cap_for_one_object(srv: Server) -> None:
    item = "- {backend: local, select: {directory: app}, path: s, maxMatches: 1}"
    code, details = refused(srv, objects(item))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "matches 2 objects, over maxMatches 1" in details


def test_a_member_that_collides_with_another_member_fails_naming_both(
    srv: Server, root: Path
) -> None:
    # app/nested is a directory of the recursive selection; a second selection writing a
    # file named like it under the same directory cannot share the directory.
    params = objects(
        "- {backend: local, select: {directory: app}, path: s}",
        "- {backend: local, name: other.txt, path: s/api-key}",
    )
    code, details = refused(srv, params)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "objects[1]" in details


def test_a_fifo_in_the_directory_is_an_error_naming_it_not_a_hang_or_a_skip(
    srv: Server, root: Path
) -> None:
    os.mkfifo(root / "app" / "pipe")
    code, details = refused(srv, SELECT_APP)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'pipe' is not a regular file" in details


def test_symlinks_never_lead_a_selection_outside_the_root(
    srv: Server, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("outside the root")
    (root / "away").symlink_to(outside)
    code, details = refused(srv, objects("- {backend: local, select: {directory: away}, path: a}"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "symlink" in details
    (root / "app" / "leak").symlink_to(outside / "secret")
    code, details = refused(srv, SELECT_APP)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the local root" in details
    assert "outside the root" not in details


def test_a_mounted_kubernetes_secret_directory_selects_its_keys(
    srv: Server, root: Path, tmp_path: Path
) -> None:
    # The layout kubelet writes: each key -> ..data/<key>, ..data -> a timestamped directory.
    secret = root / "mounted"
    (secret / "..2026_11_29").mkdir(parents=True)
    (secret / "..2026_11_29" / "token").write_text("t")
    (secret / "..2026_11_29" / "ca.crt").write_text("c")
    (secret / "..data").symlink_to("..2026_11_29")
    (secret / "token").symlink_to("..data/token")
    (secret / "ca.crt").symlink_to("..data/ca.crt")
    (secret / "dangling").symlink_to("..data/gone")
    code, details = refused(srv, objects("- {backend: local, select: {directory: mounted}}"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # named, not skipped
    assert "'dangling' is a symlink to a missing file" in details
    (secret / "dangling").unlink()
    for recursive in ("false", "true"):
        item = f"- {{backend: local, select: {{directory: mounted, recursive: {recursive}}}}}"
        resp = srv.mount("keyferry", objects(item))
        expected = {"mounted/ca.crt": (0o644, b"c"), "mounted/token": (0o644, b"t")}
        if recursive == "true":  # the real directory is walked; the ..data link is not
            expected |= {
                "mounted/..2026_11_29/ca.crt": (0o644, b"c"),
                "mounted/..2026_11_29/token": (0o644, b"t"),
            }
        assert files_of(resp) == expected


def test_a_name_that_is_not_a_safe_file_name_fails_naming_it(srv: Server, root: Path) -> None:
    (root / "app" / "bell\x07").write_text("x")
    code, details = refused(srv, SELECT_APP)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "selected object 'bell\\x07'" in details and "control character" in details
    assert "objects[0] (local: select app): 1 selected names are not safe paths" in details


def test_a_recursive_walk_is_bounded_in_depth(srv: Server, root: Path) -> None:
    deep = root / "deep"
    (deep / "/".join(["d"] * (MAX_DEPTH + 1))).mkdir(parents=True)
    code, details = refused(
        srv, objects("- {backend: local, select: {directory: deep, recursive: true}}")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"more than {MAX_DEPTH} directories deep" in details


def test_a_recursive_walk_reads_a_bounded_number_of_entries(
    serve: Callable[..., Server], root: Path
) -> None:
    """A tree of empty directories (no file counts toward the cap) cannot make a Mount
    walk without end: past WALK_FACTOR x max_selected_objects entries, RESOURCE_EXHAUSTED
    naming the directory; a tree just within the bound is listed."""
    srv = serve(local_root=root, max_selected_objects=3)
    bound = WALK_FACTOR * 3
    wide = root / "wide"
    for i in range(bound // 3):  # 10 directories of 2 entries each: 30 entries in all
        (wide / f"d{i:02}" / "a").mkdir(parents=True)
        if i:
            (wide / f"d{i:02}" / "b").mkdir()
    (wide / "d00" / "only-file").write_text(CANARY)
    select = objects("- {backend: local, select: {directory: wide, recursive: true}}")
    assert files_of(srv.mount("keyferry", select)) == {
        "wide/d00/only-file": (0o644, CANARY.encode())
    }

    (wide / "d09" / "c").mkdir()  # one entry more than the bound
    code, details = refused(srv, select)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "local directory 'wide'" in details and f"more than {bound} entries" in details
    assert "'d09'" in details and CANARY not in details
    flat = objects("- {backend: local, select: {directory: wide/d09}}")  # within the bound
    assert refused(srv, flat)[0] == grpc.StatusCode.NOT_FOUND  # no file: no match


def plan_error(text: str) -> str:
    mount = Mount(pod=Pod("ns", "p"), parameters={"objects": text})
    with pytest.raises(KeyferryError) as err:
        make_plan(mount)
    return err.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- {backend: local, name: a, select: {directory: app}}", "either 'name'"),
        ("- {backend: local, select: {directry: app}}", "did you mean 'directory'"),
        ("- {backend: local, select: {}}", "'select' must be a mapping"),
        ("- {backend: local, select: app}", "'select' must be a mapping"),
        ("- {backend: local, select: {directory: ''}}", "select directory is empty"),
        ("- {backend: local, select: {directory: ../up}, path: x}", "without '..'"),
        ("- {backend: local, select: {directory: .}}", "'path' is required"),
        ("- {backend: local, select: {directory: app}, path: ../x}", "'..' element"),
        ("- {backend: local, select: {directory: app}, maxMatches: 0}", "maxMatches '0'"),
        ("- {backend: local, select: {directory: app}, maxMatches: 5000}", "from 1 to 1000"),
        ("- {backend: local, select: {directory: app}, maxMatches: \u00b9}", "maxMatches '\u00b9'"),
        ("- {backend: local, select: {directory: app}, maxMatches: \u0665}", "maxMatches '\u0665'"),
        ("- {backend: local, name: a, maxMatches: 5}", "only to objects with 'select'"),
        (
            "- {backend: local, select: {directory: app}, extract: [{path: p, jsonKey: k}]}",
            "'extract' does not apply to 'select'",
        ),
        (
            "- {backend: local, select: {directory: app}, path: s}\n"
            "- {backend: local, name: other.txt, path: s/x}",
            "needs a directory 's'",
        ),
    ],
)
def test_bad_selections_are_invalid_argument_naming_the_field(text: str, expected: str) -> None:
    assert expected in plan_error(text)


def test_a_directory_swapped_for_a_symlink_while_a_member_is_read_is_refused(
    srv: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The walk opens every directory with O_NOFOLLOW; a member is then read by its path.
    # Someone who can write below the root swaps app/ for a symlink to a directory outside
    # it between the check of app/ and the open of app/api-key (made deterministic here).
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "api-key").write_text("OUTSIDE-the-root-3c9d")
    (outside / "db-password").write_text("OUTSIDE-the-root-3c9d")
    lstat = os.lstat

    def racing_lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = lstat(path, *args, **kwargs)
        if str(path) == str(root / "app") and not (root / "app.real").exists():
            (root / "app").rename(root / "app.real")
            (root / "app").symlink_to(outside)
        return result

    monkeypatch.setattr(os, "lstat", racing_lstat)
    code, details = refused(srv, SELECT_APP)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the local root" in details
    assert "OUTSIDE-the-root" not in details
