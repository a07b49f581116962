"""Output paths, modes and the size budget.

One validator for every dialect: the driver's own rules (docs/protocol.md §3.1)
plus stricter ones, because the driver's validator lets ``.`` through (which
empties the volume), lets duplicates overwrite each other and fails late on a
file/directory clash. Every error names the object the file came from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence

from .errors import InvalidArgument, MountFailed, ResourceExhausted
from .model import OutputFile

MAX_PATH = 4096
MAX_ELEMENT = 255
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_path(path: str, where: str) -> None:
    """Raise InvalidArgument unless ``path`` is a clean, relative, safe file path."""
    problem = path_problem(path)
    if problem:
        raise InvalidArgument(f"{where}: output path {path!r} {problem}")


def path_problem(path: str) -> str:
    """Why ``path`` would be rejected, or ``""`` when it is acceptable."""
    if not isinstance(path, str) or path == "":
        return "is empty; give a relative file name"
    if len(path) <= 512:  # the usual file name, asked again on every Mount
        return _cached_path_problem(path)
    return _path_problem(path)


def _path_problem(path: str) -> str:
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        return f"is longer than {MAX_PATH} bytes"
    if "\x00" in path:
        return "contains a NUL byte"
    if _CONTROL.search(path):
        return "contains a control character"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if path.startswith("/"):
        return "is absolute; use a path relative to the volume root"
    elements = path.split("/")
    if any(e == ".." for e in elements):
        return "contains a '..' element; paths must stay inside the volume"
    if path == "." or any(e == "." for e in elements):
        return "contains a '.' element; name a file, not the volume directory"
    if any(e == "" for e in elements):
        return "is not in clean form (empty element, leading or trailing '/' or '//')"
    if any(len(e.encode("utf-8")) > MAX_ELEMENT for e in elements):
        return f"has an element longer than {MAX_ELEMENT} bytes"
    if elements[0].startswith("..") and len(elements[0]) > 2:
        return "starts with '..', which the driver reserves for its atomic writer (e.g. '..data')"
    return ""


_cached_path_problem = functools.lru_cache(maxsize=4096)(_path_problem)


DEFAULT_FIX = "give one of them a different path or alias"


def check_file_set(files: Sequence[OutputFile], fix: str = DEFAULT_FIX) -> None:
    """Every path valid, no duplicates, no file that is also a directory."""
    shape = tuple((f.path, f.mode) for f in files)
    if shape in _valid_sets:  # the verdict depends on paths and modes alone
        return
    errors = file_set_problems(files, fix)
    if errors:
        raise MountFailed(errors, summary="invalid output files")
    if len(_valid_sets) >= 1024:
        _valid_sets.clear()
    _valid_sets.add(shape)


_valid_sets: set[tuple[tuple[str, int], ...]] = set()
"""(path, mode) sets that passed: every Mount of a class checks the same set again."""


def file_set_problems(files: Sequence[OutputFile], fix: str = DEFAULT_FIX) -> list[InvalidArgument]:
    """What :func:`check_file_set` would reject, one error per problem; ``fix`` ends the
    duplicate and clash messages (dialects name their own field, e.g. objectAlias)."""
    errors: list[InvalidArgument] = []
    seen: dict[str, str] = {}
    for f in files:
        problem = path_problem(f.path)
        if problem:
            errors.append(InvalidArgument(f"{f.source}: output path {f.path!r} {problem}"))
            continue
        if not 0 <= f.mode <= 0o777:
            errors.append(InvalidArgument(f"{f.source}: mode {oct(f.mode)} is outside 0..0o777"))
        if f.path in seen:
            errors.append(
                InvalidArgument(
                    f"{f.source}: output path {f.path!r} is also written by {seen[f.path]}; {fix}"
                )
            )
            continue
        seen[f.path] = f.source
    errors.extend(directory_clashes(seen, fix))
    return errors


def directory_clashes(owners: Mapping[str, str], fix: str = DEFAULT_FIX) -> list[InvalidArgument]:
    """Paths that need a directory where another entry of ``owners`` (path -> who
    writes it) puts a file."""
    errors: list[InvalidArgument] = []
    for path, source in owners.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in owners:
                errors.append(
                    InvalidArgument(
                        f"{source}: output path {path!r} needs a directory {parent!r}, but "
                        f"{owners[parent]} writes a file there; {fix}"
                    )
                )
    return errors


def check_budget(files: Iterable[OutputFile], total: int, budget: int) -> None:
    """Fail with the largest files named when the encoded response exceeds the budget."""
    if total <= budget:
        return
    largest = sorted(files, key=lambda f: len(f.contents), reverse=True)[:3]
    names = ", ".join(f"{f.path} ({len(f.contents)} bytes, {f.source})" for f in largest)
    raise ResourceExhausted(
        f"the mount would return {total} bytes, over the {budget}-byte budget "
        f"(the driver's gRPC receive limit is 4 MiB, and syncing to a Kubernetes Secret "
        f"needs under 1 MiB); largest files: {names}. Split the SecretProviderClass or "
        "extract only the keys you need"
    )
