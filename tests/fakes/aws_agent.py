"""A stand-in for the EKS Pod Identity agent on a loopback address.

``GET /v1/credentials`` with ``Authorization: <the pod's token>`` returns the
container-credentials JSON botocore expects; any other token gets 400, as the
real agent does. Records every Authorization header it saw.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class PodIdentityAgent:
    def __init__(self, token: str, *, host: str = "127.0.0.1", status: int = 200) -> None:
        self.token = token
        self.status = status
        self.seen: list[str] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                agent.seen.append(auth)
                if self.path != "/v1/credentials":
                    self._send(404, {"message": "not found"})
                elif auth != agent.token:
                    self._send(400, {"message": "Service account token cannot be empty or invalid"})
                elif agent.status != 200:
                    self._send(agent.status, {"message": "injected"})
                else:
                    expires = datetime.now(UTC) + timedelta(hours=6)
                    self._send(
                        200,
                        {
                            "AccessKeyId": "ASIAPODIDENTITY0001",
                            "SecretAccessKey": "pod-identity-secret",
                            "Token": "pod-identity-session-token",
                            "AccountId": "123456789012",
                            "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        },
                    )

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server_cls = _Server6 if ":" in host else _Server
        self._server = server_cls((host, 0), Handler)
        port = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/v1/credentials"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url(host: str = "127.0.0.1") -> str:
    """An agent URL nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1/credentials"


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
