"""Backend registry. Backends are imported only when a plan needs them, so a
node that only mounts AWS objects never loads the Google or Azure SDKs."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from ..errors import FailedPrecondition, InvalidArgument, did_you_mean
from .base import Backend, Services

# name -> "module:factory"; the factory takes (settings, services).
FACTORIES: dict[str, str] = {
    "local": "provider.backends.local:create",
    "aws": "provider.backends.aws:create",
    "gcp": "provider.backends.gcp:create",
    "azure": "provider.backends.azure:create",
}


class Registry:
    """Creates each backend once, on first use, and keeps it for the server's life."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._backends: dict[str, Backend] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is not None:
            return backend
        async with self._lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = self._create(name)
                self._backends[name] = backend
            return backend

    def _create(self, name: str) -> Backend:
        target = FACTORIES.get(name)
        if target is None:
            raise InvalidArgument(f"unknown backend {name!r}{did_you_mean(name, FACTORIES)}")
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise FailedPrecondition(
                f"backend {name!r} is not installed on this node ({exc.name} missing); "
                f"install keyferry[{name}]"
            ) from exc
        settings: dict[str, Any] = dict(self.services.config.backends.get(name, {}))
        backend: Backend = getattr(module, attr)(settings, self.services)
        return backend

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()
