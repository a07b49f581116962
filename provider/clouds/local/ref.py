"""Locator for the ``local`` backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalRef:
    """A file below the configured local root, by relative path."""

    path: str
