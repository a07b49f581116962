"""provider.files: the driver's path rules (docs/protocol.md §3.1), keyferry's stricter ones,
file-set checks and the size budget."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provider import files
from provider.errors import Code, InvalidArgument, MountFailed, ResourceExhausted
from provider.model import OutputFile


def long_path(total: int, element: int = 200, char: str = "a") -> str:
    """A path of exactly ``total`` characters whose elements are at most ``element`` long."""
    parts: list[str] = []
    length = 0
    while length < total:
        sep = 1 if parts else 0
        room = total - length - sep
        take = min(element, room)
        if take <= 0:  # pragma: no cover - only when total is tiny
            break
        parts.append(char * take)
        length += take + sep
    path = "/".join(parts)
    assert len(path) == total
    return path


# --- docs/protocol.md §3.1, "Rejected" table plus keyferry's stricter rules -----------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/abs", "absolute"),
        ("/", "absolute"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../b", "'..'"),
        ("a/..", "'..'"),
        ("..data", "reserves"),
        ("..x/y", "reserves"),
        ("...", "reserves"),
        ("..\\x", "reserves"),  # a backslash is not a separator: one element '..\x'
        ("./a", "'.'"),
        ("a/", "clean"),
        ("a//b", "clean"),
        ("a/./b", "'.'"),
        ("a/.", "'.'"),
        (".", "'.'"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a\tb", "control"),
        ("a\x1fb", "control"),
        ("a\x7fb", "control"),
        ("\ud800", "UTF-8"),
        ("a" * 256, "255"),
        ("ok/" + "b" * 256, "255"),
    ],
)
def test_path_problem_rejects(path: str, reason: str) -> None:
    problem = files.path_problem(path)
    assert problem, f"{path!r} should be rejected"
    assert reason in problem


def test_path_longer_than_4096_characters_is_rejected() -> None:
    assert files.path_problem(long_path(4097)) != ""
    assert "4096" in files.path_problem(long_path(4097))


def test_path_of_exactly_4096_characters_is_accepted() -> None:
    assert files.path_problem(long_path(4096)) == ""


def test_element_of_exactly_255_bytes_is_accepted() -> None:
    assert files.path_problem("a" * 255) == ""
    assert files.path_problem("x/" + "a" * 255) == ""


def test_element_limit_counts_utf8_bytes() -> None:
    # 128 two-byte characters = 256 bytes: the driver (Go, len() in bytes) rejects it.
    assert files.path_problem("é" * 128) != ""
    assert files.path_problem("é" * 127) == ""


def test_path_limit_counts_utf8_bytes_like_the_driver() -> None:
    # 2559 characters but 5099 bytes: Go's len(path) > 4096 rejects it in the driver, so
    # keyferry must reject it too instead of failing late in the driver's writer.
    path = "/".join(["é" * 127] * 20)
    assert len(path) <= files.MAX_PATH < len(path.encode())
    assert files.path_problem(path) != ""


# --- docs/protocol.md §3.1, "Accepted" table ----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c",
        "ok/..hidden",
        "ok/..data",
        "dir\\x",
        ".hidden",
        ".a/b",
        "a.b",
        "a..b",
        "é/ü",
        "with space",
        "-dash",
    ],
)
def test_path_problem_accepts(path: str) -> None:
    assert files.path_problem(path) == ""


def test_check_path_names_where_and_path() -> None:
    with pytest.raises(InvalidArgument) as err:
        files.check_path("../x", "objects[3] (db) path")
    assert err.value.message.startswith("objects[3] (db) path: ")
    assert "'../x'" in err.value.message
    assert err.value.code is Code.INVALID_ARGUMENT


def test_check_path_accepts_a_good_path() -> None:
    files.check_path("db/password", "objects[0]")


# --- property ------------------------------------------------------------------------------

_PIECES = st.sampled_from(["/", ".", "..", "a", "b", "\\", "é", " ", "\x00", "\n", "..a", "//"])
_PATHS = st.one_of(st.lists(_PIECES, max_size=10).map("".join), st.text(max_size=30))


@settings(max_examples=500, deadline=None)
@given(_PATHS)
@example("..")
@example("a/.")
@example(".")
@example("./")
@example("..a/b")
def test_accepted_paths_are_relative_clean_and_inside_the_volume(path: str) -> None:
    if files.path_problem(path) != "":
        return
    assert path
    assert not path.startswith("/")
    assert posixpath.normpath(path) == path
    elements = path.split("/")
    assert ".." not in elements
    assert "." not in elements
    assert not (elements[0].startswith("..") and len(elements[0]) > 2)
    assert "\x00" not in path
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in path)


_SAFE_ELEMENT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="/\x7f"),
    min_size=1,
    max_size=12,
).filter(lambda e: e not in (".", ".."))


@settings(max_examples=300, deadline=None)
@given(st.lists(_SAFE_ELEMENT, min_size=1, max_size=5))
def test_clean_relative_paths_are_accepted(elements: list[str]) -> None:
    if elements[0].startswith(".."):
        elements[0] = "x" + elements[0]
    path = "/".join(elements)
    assert files.path_problem(path) == ""


# --- check_file_set ------------------------------------------------------------------------


def of(path: str, source: str, mode: int = 0o644) -> OutputFile:
    return OutputFile(path=path, mode=mode, contents=b"", source=source)


def test_valid_file_set_passes() -> None:
    files.check_file_set([of("a", "o1"), of("b/c", "o2"), of("b/d", "o3"), of("ok/..x", "o4")])


def test_empty_file_set_passes() -> None:
    files.check_file_set([])


def test_duplicate_paths_are_rejected_naming_both_objects() -> None:
    with pytest.raises(MountFailed) as err:
        files.check_file_set(
            [of("db/password", "objects[0] (a)"), of("db/password", "objects[1] (b)")]
        )
    message = err.value.message
    assert "objects[0] (a)" in message
    assert "objects[1] (b)" in message
    assert "'db/password'" in message
    assert err.value.code is Code.INVALID_ARGUMENT


def test_file_directory_clash_is_rejected_naming_both_objects() -> None:
    with pytest.raises(MountFailed) as err:
        files.check_file_set([of("a", "objects[0] (file)"), of("a/b", "objects[1] (nested)")])
    assert "objects[0] (file)" in err.value.message
    assert "objects[1] (nested)" in err.value.message


def test_file_directory_clash_is_found_in_either_order_and_deeper() -> None:
    for batch in (
        [of("a/b/c", "deep"), of("a", "top")],
        [of("a/b", "top"), of("a/b/c/d", "deep")],
    ):
        with pytest.raises(MountFailed) as err:
            files.check_file_set(batch)
        assert "top" in err.value.message and "deep" in err.value.message


def test_sibling_prefixes_are_not_a_clash() -> None:
    files.check_file_set([of("a", "x"), of("ab/c", "y"), of("a.b/c", "z")])


@pytest.mark.parametrize(
    "path", [".", "", "/abs", "../x", "a\x00b", "..data", "a//b", "a\x01", "a" * 256]
)
def test_bad_path_in_file_set_names_the_object(path: str) -> None:
    with pytest.raises(MountFailed) as err:
        files.check_file_set([of("good", "objects[0]"), of(path, "objects[7] (bad-one)")])
    assert "objects[7] (bad-one)" in err.value.message
    assert "objects[0]" not in err.value.message


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755, 2**31 - 1])
def test_mode_outside_0_to_0777_is_rejected(mode: int) -> None:
    with pytest.raises(MountFailed) as err:
        files.check_file_set([of("a", "objects[2] (m)", mode)])
    assert "objects[2] (m)" in err.value.message


@pytest.mark.parametrize("mode", [0, 0o400, 0o644, 0o777])
def test_mode_inside_range_is_accepted(mode: int) -> None:
    files.check_file_set([of("a", "o", mode)])


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(MountFailed) as err:
        files.check_file_set(
            [of("../x", "first"), of("dup", "second"), of("dup", "third"), of(".", "fourth")]
        )
    assert len(err.value.errors) == 3
    for name in ("first", "third", "fourth"):
        assert name in err.value.message


# --- check_budget --------------------------------------------------------------------------


def sized(path: str, size: int, source: str) -> OutputFile:
    return OutputFile(path=path, mode=0o644, contents=b"S" * size, source=source)


def test_budget_within_limit_passes() -> None:
    files.check_budget([sized("a", 10, "o")], total=100, budget=100)


def test_budget_exceeded_names_the_three_largest_files_largest_first() -> None:
    batch = [
        sized("small", 1, "o-small"),
        sized("big", 300, "o-big"),
        sized("medium", 200, "o-medium"),
        sized("huge", 400, "o-huge"),
    ]
    with pytest.raises(ResourceExhausted) as err:
        files.check_budget(batch, total=901, budget=900)
    message = err.value.message
    assert err.value.code is Code.RESOURCE_EXHAUSTED
    assert "901" in message and "900" in message
    assert message.index("huge") < message.index("big") < message.index("medium")
    assert "o-huge" in message and "400 bytes" in message
    assert "small" not in message
    assert "SSSS" not in message  # sizes, never contents
