"""The HTTP listener beside the sockets: ``/healthz`` (the process is alive),
``/readyz`` (200, or 503 listing each problem the server reports; ``/readyz?verbose``
adds informational detail, such as backend endpoints failing fast, that never changes
the status) and ``/metrics`` (Prometheus). Plain WSGI on a thread per request, so a
slow scrape never holds up a probe, and nothing here touches the event loop that serves
Mounts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from .observe import get_logger

log = get_logger("http")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Threaded(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        t.start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


class ProbeServer:
    def __init__(
        self,
        metrics: CollectorRegistry,
        readiness: Callable[[], list[str]],
        detail: Callable[[], list[str]] | None = None,
    ) -> None:
        self._metrics = make_wsgi_app(metrics)
        self._readiness = readiness
        self._detail = detail
        self._httpd: WSGIServer | None = None
        self.port: int | None = None

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            status, body = "200 OK", b"ok\n"
        elif path == "/readyz":
            problems = self._readiness()
            status = "200 OK" if not problems else "503 Service Unavailable"
            lines = problems or ["ok"]
            if "verbose" in environ.get("QUERY_STRING", "").split("&") and self._detail:
                lines = [*lines, *self._detail()]
            body = ("\n".join(lines) + "\n").encode()
        else:
            status, body = "404 Not Found", b"not found\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    def start(self, address: str) -> None:
        """Listen on ``host:port`` (port 0: any free port, then see ``self.port``)."""
        host, _, port = address.rpartition(":")
        httpd = make_server(
            host or "0.0.0.0", int(port), self.app, server_class=_Threaded, handler_class=_Quiet
        )
        self._httpd = httpd
        self.port = httpd.server_port
        threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},  # a prompt stop on SIGTERM
            name="keyferry-http",
            daemon=True,
        ).start()
        log.info("http listening", extra={"address": f"{host}:{self.port}"})

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
