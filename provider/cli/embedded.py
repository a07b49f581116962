"""Run a real keyferry server in a background thread, on real Unix sockets.

Used by ``keyferry mount`` without ``--socket``, by ``keyferry demo`` and by the
tests: requests still travel over gRPC on a socket exactly as from the driver.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..config import Config
from ..server import Provider

T = TypeVar("T")


class EmbeddedProvider:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.provider: Provider | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> EmbeddedProvider:
        self._thread.start()

        async def build() -> Provider:
            provider = Provider(self.config)
            await provider.start()
            return provider

        self.provider = self.run(build())
        return self

    def socket(self, name: str) -> Path:
        return self.config.socket_dir / f"{name}.sock"

    def stop(self, grace: float = 1.0) -> None:
        if self.provider is not None:
            self.run(self.provider.stop(grace))
            self.provider = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> EmbeddedProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
