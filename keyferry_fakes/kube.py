"""A fake Kubernetes API server (read-only core/v1 objects) on 127.0.0.1.

As strict as the real API server where keyferry depends on it:

- every request needs ``Authorization: Bearer <token>``; no header, or a token
  the server did not issue (or has revoked), is ``401 Unauthorized``;
- a valid token whose user the RBAC rules do not grant ``get`` on the resource
  is ``403 Forbidden`` (the provider's ServiceAccount is granted ``get`` on
  serviceaccounts, pods and nodes unless a test narrows ``granted``);
- ``tls=True`` serves HTTPS with a certificate from a private CA (``ca_file``),
  for the in-cluster path (KUBERNETES_SERVICE_HOST/PORT + the mounted ca.crt).

The provider's token is written to ``token_file`` (as kubelet projects it);
``rotate_token()`` writes a new one and revokes the old, as kubelet's rotation
and expiry do. ``settings()`` is the ``kubernetes`` section of the server
configuration that reaches this fake. Objects are served as the real API does,
so Kubernetes clients parse them; unknown objects get a 404 Status. ``reset()``
forgets everything a test set up or caused, so one server can serve a whole session.
"""

from __future__ import annotations

import json
import secrets
import ssl
import tempfile
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from keyferry_fakes.serving import HTTPServing

PROVIDER_USER = "system:serviceaccount:kube-system:keyferry"
PROVIDER_GRANTS = frozenset({"serviceaccounts", "pods", "nodes"})


class FakeKube:
    def __init__(self, *, tls: bool = False) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fakekube-")
        self.token_file = str(Path(self._dir.name) / "token")
        self.ca_file = ""
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                header = self.headers.get("Authorization", "")
                fake.auth_headers.append(header)
                code, body = fake.answer(path, header)
                if code != 200:
                    fake.rejected[code] += 1
                else:
                    fake.requests[path] += 1
                self._send(code, body)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ctx = None
        if tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(ctx)
            self.ca_file = str(Path(self._dir.name) / "ca.crt")
            ca.cert_pem.write_to_path(self.ca_file)
        # a real API server does not drop a burst's SYNs (HTTPServing's backlog is 128)
        self._serving = HTTPServing(Handler, tls=ctx, name="fake-kube")
        self.port = self._serving.port
        self.url = self._serving.url

    def reset(self) -> None:
        """Back to the state of a new fake: no objects, no denials, nothing counted, only
        the provider's user (with its default grants) and a fresh provider token in
        ``token_file``. The server, its URL and its CA stay."""
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.forbidden: set[str] = set()
        """Paths answered 403 whoever asks (a namespace-scoped deny)."""
        self.auth_headers: list[str] = []
        self.rejected: Counter[int] = Counter()
        self.users: dict[str, str] = {}
        """Bearer token -> user name, for every token the API server accepts."""
        self.granted: dict[str, set[str]] = {PROVIDER_USER: set(PROVIDER_GRANTS)}
        """User -> resources it may ``get`` (the ClusterRole binding)."""
        self.provider_token = ""
        self.rotate_token()

    # -- authentication and authorisation ------------------------------------------

    def issue_token(self, user: str) -> str:
        token = "kube-" + secrets.token_urlsafe(24)
        self.users[token] = user
        return token

    def rotate_token(self) -> str:
        """kubelet projects a fresh token; the old one stops being accepted."""
        self.users.pop(self.provider_token, None)
        self.provider_token = self.issue_token(PROVIDER_USER)
        Path(self.token_file).write_text(self.provider_token + "\n", encoding="utf-8")
        return self.provider_token

    def answer(self, path: str, header: str) -> tuple[int, dict[str, Any]]:
        scheme, _, token = header.partition(" ")
        user = self.users.get(token) if scheme == "Bearer" else None
        if user is None:
            return 401, _status(401, "Unauthorized", "Unauthorized")
        resource = resource_of(path)
        if path in self.forbidden or resource not in self.granted.get(user, set()):
            return 403, _status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "{user}" cannot get resource "{resource}"',
            )
        if path in self.objects:
            return 200, self.objects[path]
        return 404, _status(404, "NotFound", f"{path} not found")

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The server configuration's ``kubernetes`` section for this fake."""
        values: dict[str, Any] = {"api_url": self.url, "token_file": self.token_file}
        if self.ca_file:
            values["ca_file"] = self.ca_file
        else:
            values["insecure"] = True
        values.update(extra)
        return values

    # -- objects ----------------------------------------------------------------------

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
        self._serving.stop()
        self._dir.cleanup()


def resource_of(path: str) -> str:
    """The resource a GET path names: core (``/api/v1/...``) and named groups
    (``/apis/<group>/<version>/...``), namespaced or cluster-scoped."""
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        return rest[2]
    return rest[0] if rest else ""


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
