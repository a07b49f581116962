"""AWS test doubles on 127.0.0.1: a shared moto server and a fault-injecting proxy.

``moto_url()`` starts one ``moto.server.ThreadedMotoServer`` for the whole test
run (tests use unique secret names, so they never see each other's data).

:class:`AwsFaults` is an HTTP proxy in front of moto. It records every request
(operation, region from the SigV4 credential scope, headers, body) so tests can
count API calls and see exactly what was sent (e.g. the WebIdentityToken), and
answers chosen operations with chosen errors (AccessDenied, throttling, 5xx),
optionally only in one region and only a number of times.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_moto: Any = None
_moto_url = ""
_lock = threading.Lock()

ACCOUNT = "123456789012"


def moto_url() -> str:
    """URL of the shared moto server, started on first use."""
    global _moto, _moto_url
    with _lock:
        if _moto is None:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            _moto, _moto_url = server, f"http://{host}:{port}"
        return _moto_url


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs under concurrent clients


@dataclass
class Recorded:
    operation: str
    region: str
    service: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Rule:
    operation: str
    status: int
    code: str
    message: str = "injected by AwsFaults"
    region: str | None = None
    times: int | None = None
    """How many requests to answer; ``None`` means every one."""
    hits: int = 0


@dataclass
class AwsFaults:
    upstream: str
    requests: list[Recorded] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    url: str = ""
    delay: dict[str, float] = field(default_factory=dict)
    """operation -> seconds to hold the request before forwarding (latency injection)."""

    def __post_init__(self) -> None:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = proxy._record(self.headers, body)
                rule = proxy._match(rec)
                if rec.operation in proxy.delay:
                    time.sleep(proxy.delay[rec.operation])
                if rule is not None:
                    self._error(rule, rec)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _error(self, rule: Rule, rec: Recorded) -> None:
                if rec.service == "sts" or not self.headers.get("X-Amz-Target"):
                    data = (
                        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                        f"<Error><Type>Sender</Type><Code>{rule.code}</Code>"
                        f"<Message>{rule.message}</Message></Error>"
                        "<RequestId>injected</RequestId></ErrorResponse>"
                    ).encode()
                    ctype = "text/xml"
                else:
                    data = json.dumps({"__type": rule.code, "message": rule.message}).encode()
                    ctype = "application/x-amz-json-1.1"
                self.send_response(rule.status)
                self.send_header("Content-Type", ctype)
                self.send_header("x-amzn-ErrorType", rule.code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._mutex = threading.Lock()

    def _record(self, headers: Any, body: bytes) -> Recorded:
        target = headers.get("X-Amz-Target", "")
        operation = target.rsplit(".", 1)[-1] if target else ""
        service = ""
        region = ""
        m = _SCOPE.search(headers.get("Authorization", ""))
        if m:
            region, service = m.group(1), m.group(2)
        if not operation:
            form = parse_qs(body.decode("utf-8", "replace"))
            operation = (form.get("Action") or [""])[0]
            if operation.startswith("AssumeRole"):
                service = "sts"
        rec = Recorded(operation, region, service, dict(headers.items()), body)
        with self._mutex:
            self.requests.append(rec)
        return rec

    def _match(self, rec: Recorded) -> Rule | None:
        with self._mutex:
            for rule in self.rules:
                if rule.operation != rec.operation:
                    continue
                if rule.region is not None and rule.region != rec.region:
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                rule.hits += 1
                return rule
        return None

    def fail(
        self,
        operation: str,
        code: str,
        status: int = 400,
        *,
        region: str | None = None,
        times: int | None = None,
        message: str = "injected by AwsFaults",
    ) -> Rule:
        rule = Rule(operation, status, code, message, region, times)
        with self._mutex:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._mutex:
            self.rules.clear()
            self.requests.clear()

    def count(self, operation: str | None = None, region: str | None = None) -> int:
        with self._mutex:
            return sum(
                1
                for r in self.requests
                if (operation is None or r.operation == operation)
                and (region is None or r.region == region)
            )

    def operations(self) -> list[str]:
        with self._mutex:
            return [r.operation for r in self.requests]

    def sts_calls(self) -> list[dict[str, str]]:
        """The form fields of every AssumeRoleWithWebIdentity request."""
        out = []
        with self._mutex:
            for r in self.requests:
                if r.operation == "AssumeRoleWithWebIdentity":
                    form = parse_qs(r.body.decode())
                    out.append({k: v[0] for k, v in form.items()})
        return out

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def aws_faults() -> Iterator[AwsFaults]:
    proxy = AwsFaults(moto_url())
    try:
        yield proxy
    finally:
        proxy.close()


def seed_clients(region: str = "us-east-1") -> tuple[Any, Any]:
    """boto3 clients talking to moto directly (for test setup only)."""
    import boto3

    kwargs = {
        "endpoint_url": moto_url(),
        "region_name": region,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.client("secretsmanager", **kwargs), boto3.client("ssm", **kwargs)
