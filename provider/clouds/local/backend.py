"""The ``local`` backend: files below a root directory from server configuration.

For development clusters and the demo. Disabled unless ``local_root`` is set.
A locator that escapes the root — through ``..``, an absolute path or a
symlink pointing outside — is rejected.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ...backend import FetchResult, Services
from ...errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from ...model import Deadline, Fetched, Mount
from ...selection import Listing, Member, too_many
from .ref import LocalRef, LocalSelection

T = TypeVar("T")
R = TypeVar("R")


class LocalBackend:
    name = "local"

    def __init__(self, root: Path | None, services: Services) -> None:
        self.root = root.resolve() if root else None
        self._root_text = str(self.root).rstrip("/")  # "" for a root of "/"
        self.services = services

    async def fetch(
        self, mount: Mount, refs: Sequence[LocalRef], deadline: Deadline
    ) -> list[FetchResult]:
        self._enabled()
        # Read on the event loop: a small file under a node-local root takes a few
        # microseconds, a hop to a worker thread costs ~100 times that. (The local backend
        # serves development clusters and the demo; a root on a network filesystem that
        # can stall belongs to no production node.)
        plain_dirs: set[str] = set()  # directories this Mount found not to be symlinks
        return self._each("read", refs, lambda ref: self._read(ref, plain_dirs))

    def _each(
        self, operation: str, items: Sequence[T], fn: Callable[[T], R]
    ) -> list[R | Exception]:
        """``fn`` of every item, a failure as that item's result; timed and counted as one
        ``operation`` in the backend request metrics."""
        start = time.monotonic()
        out: list[R | Exception] = []
        for item in items:
            try:
                out.append(fn(item))
            except Exception as exc:
                out.append(exc)
        outcome = "error" if any(isinstance(r, Exception) for r in out) else "ok"
        self.services.metrics.backend_call("local", operation, outcome, time.monotonic() - start)
        return out

    def _read(self, ref: LocalRef, plain_dirs: set[str]) -> Fetched:
        limit = self.services.config.max_response_bytes
        try:
            fd = self._open(ref, plain_dirs)
            try:
                self._check_opened(fd, ref)
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidArgument(f"local name {ref.path!r} is not a regular file")
                data = _read_at_most(fd, st.st_size, limit + 1)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise NotFound(f"local file {ref.path!r} does not exist under the local root") from None
        except IsADirectoryError:
            raise InvalidArgument(f"local name {ref.path!r} is a directory, not a file") from None
        except PermissionError:
            raise PermissionDenied(f"keyferry may not read local file {ref.path!r}") from None
        except OSError as exc:  # ENAMETOOLONG, ELOOP, ...
            raise InvalidArgument(
                f"local file {ref.path!r} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        if len(data) > limit:
            raise ResourceExhausted(
                f"local file {ref.path!r} is larger than the {limit}-byte budget"
            )
        return Fetched(content=data, version=None, served_by="local")

    def _open(self, ref: LocalRef, plain_dirs: set[str]) -> int:
        """The file opened for reading; it must lie inside the root. Without a symlink
        below the root (the directories checked one at a time, the file opened with
        O_NOFOLLOW) the joined path is its real path; with one, ``realpath`` follows it
        and the result is checked before anything is opened."""
        assert self.root is not None
        *directories, name = ref.path.split("/")
        path = self._root_text
        for part in directories:
            path = f"{path}/{part}"
            if path in plain_dirs:
                continue
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return self._open_resolved(ref)
            plain_dirs.add(path)
        try:
            return os.open(f"{path}/{name}", _OPEN_FLAGS | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # ELOOP: the file itself is a symlink
                raise
        return self._open_resolved(ref)

    def _check_opened(self, fd: int, ref: LocalRef) -> None:
        """Refuse a file opened outside the root. The checks in :meth:`_open` come before
        the open, so a directory swapped for a symlink in between (by whoever may write
        below the root) would lead outside; the opened file's own path, as the kernel
        has it, settles it. Without ``/proc`` (not Linux) the checks before stand alone."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if not real.startswith(f"{self._root_text}/"):
            raise InvalidArgument(
                f"local name {ref.path!r} resolves outside the local root (a directory or "
                "symlink changed while it was read); only files inside the root can be mounted"
            )

    def _open_resolved(self, ref: LocalRef) -> int:
        assert self.root is not None
        resolved = Path(os.path.realpath(self.root / ref.path))
        if resolved != self.root and self.root not in resolved.parents:
            raise InvalidArgument(
                f"local name {ref.path!r} resolves outside the local root (a symlink points "
                "elsewhere); only files inside the root can be mounted"
            )
        return os.open(resolved, _OPEN_FLAGS)

    async def select(
        self, mount: Mount, queries: Sequence[LocalSelection], deadline: Deadline, limit: int
    ) -> list[Listing | Exception]:
        """The files of each directory, listed on the event loop like reads (bounded by
        ``limit``); not cached: the next Mount sees a file added or removed at once."""
        self._enabled()
        return self._each("list", queries, lambda query: self._list(query, limit))

    def _list(self, query: LocalSelection, limit: int) -> Listing:
        """Every regular file (or symlink to one, checked when it is read) in the directory,
        with paths relative to it. The directory and every directory walked are opened with
        O_NOFOLLOW one element at a time: a symlink to a directory is a directory that is
        never entered (the layout of a mounted Kubernetes Secret: ``..data`` -> a
        directory, each key -> ``..data/<key>``). FIFOs, sockets and devices are errors
        naming them, never skipped."""
        assert self.root is not None
        shown = query.directory or "."
        what = f"local directory {shown!r}"
        try:
            fd = os.open(self._root_text or "/", _DIR_FLAGS)
            try:
                for part in query.directory.split("/") if query.directory else ():
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = child
                members: list[Member] = []
                budget = [WALK_FACTOR * limit]  # entries this walk may still read
                self._walk(fd, "", query, members, limit, what, budget)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise NotFound(f"{what} does not exist under the local root") from None
        except NotADirectoryError:
            raise InvalidArgument(
                f"{what} is not a directory (a selection lists real directories below the "
                "local root; a symlink to a directory is not followed)"
            ) from None
        except PermissionError:
            raise PermissionDenied(f"keyferry may not list {what}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidArgument(
                    f"{what} is or passes through a symlink; a selection lists real "
                    "directories below the local root only"
                ) from None
            raise InvalidArgument(
                f"{what} cannot be listed: {exc.strerror or type(exc).__name__}"
            ) from None
        return tuple(members)

    def _walk(
        self,
        fd: int,
        prefix: str,
        query: LocalSelection,
        members: list[Member],
        limit: int,
        what: str,
        budget: list[int],
    ) -> None:
        base = f"{query.directory}/" if query.directory else ""
        if prefix.count("/") >= MAX_DEPTH:
            raise InvalidArgument(
                f"{what}: {prefix.rstrip('/')!r} is more than {MAX_DEPTH} directories deep; "
                "select a directory further down"
            )
        most = min(budget[0], MAX_ENTRIES)
        with os.scandir(fd) as entries:
            listed = sorted(
                (e.name, e.is_dir(follow_symlinks=False), e)
                for e in itertools.islice(entries, most + 1)
            )
        if len(listed) > budget[0]:
            where = prefix.rstrip("/") or "."
            raise ResourceExhausted(
                f"{what}: listing it reads more than {WALK_FACTOR * limit} entries (files and "
                f"directories: {WALK_FACTOR} times the server's max_selected_objects, "
                f"{limit}) before the end of {where!r}; select a smaller directory or one "
                "with fewer subdirectories (nothing was mounted)"
            )
        if len(listed) > MAX_ENTRIES:
            raise ResourceExhausted(
                f"{what}: a directory holds more than {MAX_ENTRIES} entries; select a smaller one"
            )
        budget[0] -= len(listed)
        for name, is_dir, entry in listed:
            relative = f"{prefix}{name}"
            if is_dir:
                if query.recursive:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    try:
                        self._walk(child, f"{relative}/", query, members, limit, what, budget)
                    finally:
                        os.close(child)
                continue
            if entry.is_symlink() and entry.is_dir():
                continue  # a directory, never entered through a symlink (e.g. a Secret's ..data)
            if entry.is_symlink() and not entry.is_file():
                raise FailedPrecondition(
                    f"{what}: {relative!r} is a symlink to a missing file or to something that "
                    "is not a regular file; remove it or make it point to a file"
                )
            if not (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
                raise InvalidArgument(
                    f"{what}: {relative!r} is not a regular file (a FIFO, socket or device); "
                    "remove it or select a directory that holds only files"
                )
            members.append(Member(relative, LocalRef(path=f"{base}{relative}")))
            if len(members) > limit:
                raise too_many(f"select of {what}", limit)

    def _enabled(self) -> None:
        if self.root is None:
            raise FailedPrecondition(
                "the local backend is disabled on this node; set local_root in the keyferry "
                "server configuration (flag --local-root) to enable it"
            )

    async def close(self) -> None:
        return None


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 32
"""Directories a recursive selection walks down, at most."""
MAX_ENTRIES = 10_000
"""Entries read from one directory, at most (a selection's files are capped lower)."""
WALK_FACTOR = 10
"""Entries (files and directories) one selection's walk reads, at most: this many times
the server's ``max_selected_objects`` (1,000 by default, 10,000 at most), so a tree of
empty directories below the root cannot make a Mount walk without end."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""O_NONBLOCK: opening a FIFO placed under the root returns at once (and is refused as
not a regular file) instead of waiting for a writer."""


def _read_at_most(fd: int, size_hint: int, most: int) -> bytes:
    """Up to ``most`` bytes of an open file: one read of the size ``fstat`` gave (a read
    of ``most`` bytes would allocate the whole budget for a small file), then more until
    end of file or ``most``, in case the file grew."""
    want = min(size_hint + 1, most)
    chunks = [os.read(fd, want)]
    total = len(chunks[0])
    if total < want:  # a short read of a regular file is its end
        return chunks[0]
    while chunks[-1] and total < most:
        chunks.append(os.read(fd, min(1024 * 1024, most - total)))
        total += len(chunks[-1])
    return b"".join(chunks)


def create(settings: Mapping[str, Any], services: Services) -> LocalBackend:
    return LocalBackend(services.config.local_root, services)
