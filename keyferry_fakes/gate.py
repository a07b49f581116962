"""A blocking fake: an HTTP proxy that holds chosen requests until the test opens it.

``Gate(upstream, hold="GetSecretValue")`` forwards every request to ``upstream`` (e.g.
:class:`keyferry_fakes.aws_faults.AwsFaults`), except that requests whose
``X-Amz-Target`` names ``hold`` wait until :meth:`Gate.open`. :meth:`Gate.wait_held`
returns once that many are waiting, so a test knows, without sleeping, that a keyferry
Mount is in flight inside its backend call.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from keyferry_fakes.serving import HTTPServing, relay


class Gate:
    def __init__(self, upstream: str, *, hold: str) -> None:
        self.hold = hold
        self.held = 0
        self._changed = threading.Condition()
        self._open = threading.Event()
        target = urlsplit(upstream)
        host, port = target.hostname or "127.0.0.1", target.port
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Target", "").endswith("." + gate.hold):
                    with gate._changed:
                        gate.held += 1
                        gate._changed.notify_all()
                    gate._open.wait(timeout=120)
                # the Host header stays: the request is signed for the gate's address
                relay(self, host, port, body, keep_host=True)

        self._serving = HTTPServing(Handler, name="fake-gate")
        self.url = self._serving.url

    def wait_held(self, count: int, timeout: float = 30) -> None:
        """Return once ``count`` requests are held (a hang guard, not a timing)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.held >= count, timeout=timeout):
                raise TimeoutError(f"{self.held} of {count} requests reached the gate")

    def open(self) -> None:
        """Let every held request, and every later one, through."""
        self._open.set()

    def close(self) -> None:
        self._open.set()
        self._serving.stop()
