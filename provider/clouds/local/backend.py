"""The ``local`` backend: files below a root directory from server configuration.

For development clusters and the demo. Disabled unless ``local_root`` is set.
A locator that escapes the root — through ``..``, an absolute path or a
symlink pointing outside — is rejected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...backend import FetchResult, Services
from ...errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from ...model import Deadline, Fetched, Mount
from .ref import LocalRef


class LocalBackend:
    name = "local"

    def __init__(self, root: Path | None, services: Services) -> None:
        self.root = root.resolve() if root else None
        self.services = services

    async def fetch(
        self, mount: Mount, refs: Sequence[LocalRef], deadline: Deadline
    ) -> list[FetchResult]:
        if self.root is None:
            raise FailedPrecondition(
                "the local backend is disabled on this node; set local_root in the keyferry "
                "server configuration (flag --local-root) to enable it"
            )
        out: list[FetchResult] = []
        for ref in refs:
            try:
                out.append(await self.services.timed("local", "read", self._read, ref))
            except Exception as exc:
                out.append(exc)
        return out

    def _read(self, ref: LocalRef) -> Fetched:
        assert self.root is not None
        candidate = self.root / ref.path
        resolved = Path(os.path.realpath(candidate))
        if resolved != self.root and self.root not in resolved.parents:
            raise InvalidArgument(
                f"local name {ref.path!r} resolves outside the local root (a symlink points "
                "elsewhere); only files inside the root can be mounted"
            )
        limit = self.services.config.max_response_bytes
        try:
            with open(resolved, "rb") as fh:
                if not os.path.isfile(resolved):
                    raise InvalidArgument(f"local name {ref.path!r} is not a regular file")
                data = fh.read(limit + 1)
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

    async def close(self) -> None:
        return None


def create(settings: Mapping[str, Any], services: Services) -> LocalBackend:
    return LocalBackend(services.config.local_root, services)
