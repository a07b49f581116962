"""A fake Kubernetes API server (read-only core/v1 objects) on 127.0.0.1.

Serves ServiceAccounts, Pods and Nodes as the real API does, so the official
``kubernetes`` client parses them; unknown objects get a 404 Status. Counts
requests per path and can answer 403 for chosen paths.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.forbidden: set[str] = set()
        self.auth_headers: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.requests[path] += 1
                fake.auth_headers.append(self.headers.get("Authorization", ""))
                if path in fake.forbidden:
                    self._send(403, _status(403, "Forbidden", f"forbidden: {path}"))
                elif path in fake.objects:
                    self._send(200, fake.objects[path])
                else:
                    self._send(404, _status(404, "NotFound", f"{path} not found"))

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add_service_account(
        self, namespace: str, name: str, annotations: dict[str, str] | None = None
    ) -> None:
        self.objects[f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"] = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        }

    def add_pod(
        self, namespace: str, name: str, node: str, service_account: str = "default"
    ) -> None:
        self.objects[f"/api/v1/namespaces/{namespace}/pods/{name}"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "containers": [{"name": "app", "image": "app"}],
            },
        }

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.objects[f"/api/v1/nodes/{name}"] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
