"""Locator for the ``local`` backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalRef:
    """A file below the configured local root, by relative path."""

    path: str


@dataclass(frozen=True)
class LocalSelection:
    """The regular files in a directory below the local root (``""``: the root itself),
    and with ``recursive`` in its subdirectories."""

    directory: str
    recursive: bool = False
