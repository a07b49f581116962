"""A TCP proxy in front of a gRPC (HTTP/2) fake that can reset a connection in the middle
of a response, as a load balancer or a crashing server does.

gRPC hides the connection from its servicers, so a fake cannot cut its own answer. The
proxy can: it forwards bytes both ways and reads the server's HTTP/2 frames (a 9-byte
header: length, type, flags, stream). Once :meth:`ResetProxy.arm` was called, the next
DATA frame that carries a response body goes out only half, and then both connections
are reset (TCP RST). The client sees the call fail with UNAVAILABLE and has to reconnect.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

_DATA = 0x0
_HEADER = 9


class ResetProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream_port)
        self._lock = threading.Lock()
        self._armed = 0
        self.resets = 0
        """Responses cut so far."""
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self.endpoint = f"{host}:{self.port}"
        self._closed = False
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="fake-reset-proxy", daemon=True).start()

    def arm(self, times: int = 1) -> None:
        """Cut the next ``times`` response bodies (one per connection reset)."""
        with self._lock:
            self._armed += times

    def disarm(self) -> None:
        with self._lock:
            self._armed = 0

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def _take(self) -> bool:
        with self._lock:
            if self._armed <= 0:
                return False
            self._armed -= 1
            self.resets += 1
            return True

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.update((client, server))
            threading.Thread(
                target=self._upstream_bytes, args=(client, server), daemon=True
            ).start()
            threading.Thread(target=self._downstream, args=(client, server), daemon=True).start()

    def _upstream_bytes(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server, as is."""
        try:
            while chunk := client.recv(65536):
                server.sendall(chunk)
        except OSError:
            pass
        self._drop(client, server, reset=False)

    def _downstream(self, client: socket.socket, server: socket.socket) -> None:
        """Server to client, frame by frame, cutting a DATA frame when armed."""
        buffer = b""
        try:
            while chunk := server.recv(65536):
                buffer += chunk
                out = b""
                while len(buffer) >= _HEADER:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < _HEADER + length:
                        break
                    frame, buffer = buffer[: _HEADER + length], buffer[_HEADER + length :]
                    stream = int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
                    if frame[3] == _DATA and stream and length and self._take():
                        client.sendall(out + frame[: _HEADER + length // 2])
                        self._drop(client, server, reset=True)
                        return
                    out += frame
                if out:
                    client.sendall(out)
        except OSError:
            pass
        self._drop(client, server, reset=False)

    def _drop(self, client: socket.socket, server: socket.socket, *, reset: bool) -> None:
        if reset:
            with contextlib.suppress(OSError):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Closing a socket another thread is blocked reading does not end that read (nor
        # the connection); shutting down its reading side does, and sends nothing.
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            self._conns.discard(client)
            self._conns.discard(server)
