"""Run a fake's server on 127.0.0.1 and stop it at once.

``socketserver``'s ``serve_forever()`` looks for a shutdown request only between polls
(0.5 s by default), so every ``shutdown()`` of an idle fake used to wait up to half a
second; with a fake or two per test that was half the suite's wall time. :class:`Serving`
runs the same accept loop (``get_request``/``verify_request``/``process_request``, as
``serve_forever`` does) but also watches one end of a socket pair: :meth:`Serving.stop`
writes to the other end, so the loop leaves at once, without idle wake-ups in between.

:class:`HTTPServing` is what every HTTP fake here starts with: a threading HTTP server on
an ephemeral port (IPv4, or IPv6 for a ``::1`` host), optionally TLS, with a listen
backlog large enough for a burst of concurrent clients.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import socketserver
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Serving:
    """``server`` (any ``socketserver.TCPServer``) answering on a daemon thread until
    :meth:`stop`, which returns once the accept loop has ended and the listening socket
    is closed. Connections already accepted finish on their own (daemon) threads."""

    def __init__(self, server: socketserver.TCPServer, *, name: str) -> None:
        self.server = server
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            listening = selector.register(self.server.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fd == listening.fd and not self._stopping.is_set():
                        self._accept_one()
                self.server.service_actions()

    def _accept_one(self) -> None:
        """One turn of ``BaseServer._handle_request_noblock``, through public methods."""
        server = self.server
        try:
            request, client_address = server.get_request()
        except OSError:
            return
        if not server.verify_request(request, client_address):
            server.shutdown_request(request)
            return
        try:
            server.process_request(request, client_address)
        except Exception:
            server.handle_error(request, client_address)
            server.shutdown_request(request)

    def stop(self) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            self._wake_w.send(b"\0")
            self._thread.join(timeout=10)
            self.server.server_close()
            self._wake_r.close()
            self._wake_w.close()


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when many clients connect at once

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (it gave up on a slow answer, or a fault reset the
        connection) is not the fake's error; anything else is reported as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | OSError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class LoopbackHTTPServer6(LoopbackHTTPServer):
    address_family = socket.AF_INET6


class HTTPServing(Serving):
    """An HTTP(S) fake on ``host`` (``127.0.0.1`` or ``::1``), ephemeral port; ``url`` is
    its base URL (``http://127.0.0.1:<port>``, ``https://...`` with ``tls``)."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        name: str = "fake-http",
    ) -> None:
        server_class = LoopbackHTTPServer6 if ":" in host else LoopbackHTTPServer
        server = server_class((host, 0), handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        self.port: int = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls is not None else 'http'}://{shown}:{self.port}"
        super().__init__(server, name=name)


def relay(
    handler: BaseHTTPRequestHandler, host: str, port: int | None, body: bytes, *, keep_host: bool
) -> tuple[int, bytes]:
    """Send ``handler``'s request on to ``host:port`` and its answer back; returns the
    status and body. ``keep_host``: forward the client's Host header (a SigV4 signature
    covers it)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {k: v for k, v in handler.headers.items() if keep_host or k.lower() != "host"}
    conn.request(handler.command, handler.path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    handler.send_response(resp.status)
    for key, value in resp.getheaders():
        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
    conn.close()
    return resp.status, data
