"""Fake Entra ID token endpoint and fake Key Vault, both HTTPS on 127.0.0.1.

The real azure-identity and azure-keyvault-* clients talk to them through a
configured authority host and vault URL template (``https://127.0.0.1:<port>/{name}``),
trusting a local CA made with trustme.

- :class:`FakeEntra` serves ``POST /<tenant>/oauth2/v2.0/token`` (client-credentials
  grant with a client assertion or a client secret) and the OpenID configuration
  MSAL reads. The assertion is the pod's service-account token: its audience,
  issuer and subject must match a registered federated credential. Issued tokens
  are remembered so the vault can check them. Requests are counted.
- :class:`FakeKeyVault` serves secrets, keys and certificates (get, get version,
  list versions with paging), answers unauthenticated requests with Key Vault's
  401 challenge, enforces a per-identity RBAC-style grant, and can inject 429s
  (with Retry-After), 5xx and latency.
"""

from __future__ import annotations

import base64
import json
import secrets as _secrets
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = "https://oidc.example.test/cluster"
AUDIENCE = "api://AzureADTokenExchange"
VAULT_RESOURCE = "https://vault.azure.net"


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned-looking JWT: the fake checks claims, not signatures."""

    def part(obj: Any) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return ".".join([part({"alg": "RS256", "typ": "JWT"}), part(claims), "c2lnbmF0dXJl"])


def pod_token(
    namespace: str = "team-a",
    service_account: str = "web",
    *,
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    lifetime: int = 3600,
) -> str:
    now = int(time.time())
    return make_jwt(
        {
            "aud": [audience],
            "iss": issuer,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }
    )


def _claims(token: str) -> dict[str, Any] | None:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _TLSServer:
    """A threading HTTPS server whose handler calls ``self.handle(handler)``."""

    def __init__(self, ca: trustme.CA) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                outer.handle(self, "GET")

            def do_POST(self) -> None:
                outer.handle(self, "POST")

        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_port
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def send_json(
        h: BaseHTTPRequestHandler, code: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Issued:
    client_id: str
    tenant: str
    scope: str
    subject: str
    expires: float


class FakeEntra(_TLSServer):
    """Entra ID's v2.0 token endpoint for one or more tenants."""

    def __init__(
        self, ca: trustme.CA, *, tenant: str = TENANT, issuer: str = ISSUER, expires_in: int = 3600
    ) -> None:
        self.tenants = {tenant}
        self.issuer = issuer
        self.expires_in = expires_in
        self.federated: dict[str, set[str]] = {}
        """client id -> allowed subjects (system:serviceaccount:<ns>:<sa>)"""
        self.client_secrets: dict[str, str] = {}
        self.issued: dict[str, Issued] = {}
        self.token_requests = 0
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(ca)

    @property
    def authority(self) -> str:
        return self.url

    def federate(self, client_id: str, namespace: str, service_account: str) -> None:
        self.federated.setdefault(client_id, set()).add(
            f"system:serviceaccount:{namespace}:{service_account}"
        )

    def add_client_secret(self, client_id: str, secret: str) -> None:
        self.client_secrets[client_id] = secret

    def principal(self, access_token: str) -> Issued | None:
        with self.lock:
            got = self.issued.get(access_token)
        if got is None or got.expires < time.time():
            return None
        return got

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urllib.parse.urlsplit(h.path).path
        parts = [p for p in path.split("/") if p]
        with self.lock:
            self.requests[f"{method} {path}"] += 1
        if method == "GET" and len(parts) >= 2 and parts[-1] == "openid-configuration":
            tenant = parts[0]
            base = f"{self.url}/{tenant}"
            self.send_json(
                h,
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": ["client_secret_post"],
                },
            )
            return
        if method != "POST" or len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            self.send_json(h, 404, {"error": "not_found"})
            return
        length = int(h.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(h.rfile.read(length).decode()))
        with self.lock:
            self.token_requests += 1
        tenant = parts[0]
        if tenant not in self.tenants:
            self._error(h, 400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
            return
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            self._error(h, 400, "unsupported_grant_type", 70003, "Unsupported grant type.")
            return
        subject = ""
        if "client_assertion" in form:
            claims = _claims(form["client_assertion"])
            if claims is None:
                self._error(h, 400, "invalid_client", 50027, "JWT token is invalid or malformed.")
                return
            aud = claims.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if AUDIENCE not in audiences:
                self._error(
                    h,
                    400,
                    "invalid_client",
                    700212,
                    "No matching federated identity record found for presented assertion audience.",
                )
                return
            if claims.get("iss") != self.issuer:
                self._error(
                    h,
                    400,
                    "invalid_client",
                    700211,
                    "No matching federated identity record found for presented assertion issuer.",
                )
                return
            if int(claims.get("exp", 0)) < time.time():
                self._error(
                    h,
                    400,
                    "invalid_client",
                    700024,
                    "Client assertion is not within its valid time range.",
                )
                return
            subject = str(claims.get("sub", ""))
            if client_id not in self.federated and client_id not in self.client_secrets:
                self._error(
                    h,
                    400,
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{client_id}' was not found in the directory.",
                )
                return
            if subject not in self.federated.get(client_id, set()):
                self._error(
                    h,
                    400,
                    "invalid_client",
                    70021,
                    "No matching federated identity record found for presented assertion.",
                )
                return
        elif "client_secret" in form:
            expected = self.client_secrets.get(client_id)
            if expected is None:
                self._error(
                    h,
                    400,
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{client_id}' was not found in the directory.",
                )
                return
            if not _secrets.compare_digest(form["client_secret"], expected):
                self._error(h, 401, "invalid_client", 7000215, "Invalid client secret provided.")
                return
            subject = f"app:{client_id}"
        else:
            self._error(
                h, 400, "invalid_client", 7000216, "client_assertion or client_secret is required."
            )
            return
        token = _secrets.token_urlsafe(24)
        with self.lock:
            self.issued[token] = Issued(
                client_id, tenant, form.get("scope", ""), subject, time.time() + self.expires_in
            )
        self.send_json(
            h,
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": token,
            },
        )

    def _error(
        self, h: BaseHTTPRequestHandler, status: int, error: str, code: int, text: str
    ) -> None:
        self.send_json(
            h,
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text} Trace ID: 0 Correlation ID: 0",
                "error_codes": [code],
            },
        )


# --- Key Vault ---------------------------------------------------------------------


@dataclass
class Version:
    version: str
    body: dict[str, Any]
    enabled: bool = True
    created: int = 0


@dataclass
class Fault:
    status: int
    times: int
    retry_after: str = ""
    path: str = ""


class FakeKeyVault(_TLSServer):
    """Key Vault's REST API for any number of vaults, under ``/<vault>/...``.

    ``grants[(vault, kind)]`` lists the client ids allowed; a (vault, kind) absent
    there allows every authenticated identity."""

    def __init__(self, ca: trustme.CA, entra: FakeEntra, *, rbac: bool = True) -> None:
        self.entra: FakeEntra | None = entra
        self.objects: dict[tuple[str, str, str], list[Version]] = {}
        self.grants: dict[tuple[str, str], set[str]] = {}
        self.faults: list[Fault] = []
        self.latency = 0.0
        self.requests: Counter[str] = Counter()
        self.page_size = 2
        self.rbac = rbac
        self.lock = threading.Lock()
        self._clock = 1_700_000_000
        super().__init__(ca)

    def vault_url_template(self) -> str:
        return f"{self.url}/{{name}}"

    # -- content --

    def _add(self, vault: str, kind: str, name: str, body: dict[str, Any], enabled: bool) -> str:
        version = _secrets.token_hex(16)
        with self.lock:
            self._clock += 10
            created = self._clock
        attrs = {
            "enabled": enabled,
            "created": created,
            "updated": created,
            "recoveryLevel": "Recoverable+Purgeable",
        }
        body = {**body, "attributes": attrs}
        self.objects.setdefault((vault, kind, name), []).append(
            Version(version, body, enabled, created)
        )
        return version

    def add_secret(
        self,
        vault: str,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        kid: bool = False,
        enabled: bool = True,
    ) -> str:
        body: dict[str, Any] = {"value": value}
        if content_type is not None:
            body["contentType"] = content_type
        if kid:
            body["kid"] = "KID"
            body["managed"] = True
        return self._add(vault, "secrets", name, body, enabled)

    def add_key(self, vault: str, name: str, jwk: dict[str, Any], *, enabled: bool = True) -> str:
        return self._add(vault, "keys", name, {"key": jwk}, enabled)

    def add_certificate(
        self,
        vault: str,
        name: str,
        der: bytes,
        *,
        secret_value: str | None = None,
        content_type: str = "application/x-pkcs12",
        enabled: bool = True,
    ) -> str:
        """A certificate object and, when ``secret_value`` is given, its backing secret
        (same name, same version id, with ``kid``), as Key Vault creates them."""
        version = self._add(
            vault,
            "certificates",
            name,
            {"cer": base64.b64encode(der).decode(), "x5t": "eDV0"},
            enabled,
        )
        if secret_value is not None:
            body = {
                "value": secret_value,
                "contentType": content_type,
                "kid": "KID",
                "managed": True,
            }
            v = self.objects[(vault, "certificates", name)][-1]
            self.objects.setdefault((vault, "secrets", name), []).append(
                Version(version, {**body, "attributes": v.body["attributes"]}, enabled, v.created)
            )
        return version

    def set_enabled(self, vault: str, kind: str, name: str, version: str, enabled: bool) -> None:
        for v in self.objects[(vault, kind, name)]:
            if v.version == version:
                v.enabled = enabled
                v.body["attributes"]["enabled"] = enabled

    def grant(self, vault: str, kind: str, *client_ids: str) -> None:
        self.grants.setdefault((vault, kind), set()).update(client_ids)

    def inject(self, status: int, times: int = 1, *, retry_after: str = "", path: str = "") -> None:
        self.faults.append(Fault(status, times, retry_after, path))

    # -- HTTP --

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
        auth = h.headers.get("Authorization", "")
        with self.lock:
            self.requests[f"{method} {split.path}"] += 1
        if self.latency:
            time.sleep(self.latency)
        if not auth.startswith("Bearer "):
            challenge = (
                f'Bearer authorization="{self.entra.url if self.entra else ""}/{TENANT}", '
                f'resource="{VAULT_RESOURCE}"'
            )
            self.send_json(
                h,
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer or PoP token.",
                    }
                },
                {"WWW-Authenticate": challenge},
            )
            return
        for fault in self.faults:
            if fault.times > 0 and fault.path in split.path:
                fault.times -= 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                code = "Throttled" if fault.status == 429 else "InternalServerError"
                self.send_json(
                    h, fault.status, {"error": {"code": code, "message": "injected"}}, headers
                )
                return
        issued = self.entra.principal(auth[7:]) if self.entra else None
        if issued is None or not issued.scope.startswith(VAULT_RESOURCE):
            self.send_json(
                h,
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience."}},
            )
            return
        if len(parts) < 3 or parts[1] not in ("secrets", "keys", "certificates"):
            self.send_json(h, 404, {"error": {"code": "BadParameter", "message": "no route"}})
            return
        vault, kind, name = parts[0], parts[1], parts[2]
        allowed = self.grants.get((vault, kind))
        if allowed is not None and issued.client_id not in allowed:
            inner = "ForbiddenByRbac" if self.rbac else "AccessDenied"
            self.send_json(
                h,
                403,
                {
                    "error": {
                        "code": "Forbidden",
                        "message": "Caller is not authorized to perform "
                        f"action on resource. Caller: appid={issued.client_id}",
                        "innererror": {"code": inner},
                    }
                },
            )
            return
        versions = self.objects.get((vault, kind, name))
        not_found = {
            "secrets": "SecretNotFound",
            "keys": "KeyNotFound",
            "certificates": "CertificateNotFound",
        }[kind]
        if not versions:
            self.send_json(
                h,
                404,
                {
                    "error": {
                        "code": not_found,
                        "message": f"A {kind[:-1]} with (name/id) {name} "
                        "was not found in this key vault.",
                    }
                },
            )
            return
        # Object ids carry no vault path (the SDK parses them as host/kind/name/version);
        # links do, so that paging reaches this vault again.
        base = f"{self.url}/{kind}/{name}"
        link = f"{self.url}/{vault}/{kind}/{name}"
        rest = parts[3:]
        if rest == ["versions"]:
            query = dict(urllib.parse.parse_qsl(split.query))
            skip = int(query.get("$skiptoken", "0"))
            page = versions[skip : skip + self.page_size]
            items = []
            for v in page:
                item: dict[str, Any] = {"attributes": v.body["attributes"]}
                if kind == "keys":
                    item["kid"] = f"{base}/{v.version}"
                else:
                    item["id"] = f"{base}/{v.version}"
                if "contentType" in v.body:
                    item["contentType"] = v.body["contentType"]
                items.append(item)
            next_link = None
            if skip + self.page_size < len(versions):
                next_link = (
                    f"{link}/versions?api-version={query.get('api-version', '')}"
                    f"&$skiptoken={skip + self.page_size}"
                )
            self.send_json(h, 200, {"value": items, "nextLink": next_link})
            return
        if len(rest) > 1:
            self.send_json(h, 404, {"error": {"code": "BadParameter", "message": "no route"}})
            return
        if rest:
            match = [v for v in versions if v.version == rest[0]]
            if not match:
                self.send_json(
                    h,
                    404,
                    {
                        "error": {
                            "code": not_found,
                            "message": f"A {kind[:-1]} with (name/id) "
                            f"{name}/{rest[0]} was not found in this key vault.",
                        }
                    },
                )
                return
            chosen = match[0]
        else:
            chosen = versions[-1]
        if not chosen.enabled:
            self.send_json(
                h,
                403,
                {
                    "error": {
                        "code": "Forbidden",
                        "message": f"Operation get is not allowed on a disabled {kind[:-1]}.",
                        "innererror": {"code": kind[:-1].capitalize() + "Disabled"},
                    }
                },
            )
            return
        body = dict(chosen.body)
        if kind == "keys":
            body["key"] = {**body["key"], "kid": f"{base}/{chosen.version}"}
        else:
            body["id"] = f"{base}/{chosen.version}"
        if kind == "secrets" and body.get("kid"):
            body["kid"] = f"{self.url}/keys/{name}/{chosen.version}"
        if kind == "certificates":
            body["kid"] = f"{self.url}/keys/{name}/{chosen.version}"
            body["sid"] = f"{self.url}/secrets/{name}/{chosen.version}"
        self.send_json(h, 200, body)


@dataclass
class FakeAzure:
    ca: trustme.CA
    entra: FakeEntra
    vault: FakeKeyVault
    ca_path: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        """``backends.azure`` server settings pointing the real SDKs at the fakes."""
        return {
            "authority_host": self.entra.authority,
            "vault_url": self.vault.vault_url_template(),
            "ca_bundle": self.ca_path,
            "verify_challenge_resource": False,
            **extra,
        }

    def close(self) -> None:
        self.vault.close()
        self.entra.close()


@contextmanager
def fake_azure(tmp_dir: str, *, rbac: bool = True) -> Iterator[FakeAzure]:
    ca = trustme.CA()
    ca_path = f"{tmp_dir}/azure-fake-ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    entra = FakeEntra(ca)
    vault = FakeKeyVault(ca, entra, rbac=rbac)
    fake = FakeAzure(ca, entra, vault, ca_path)
    try:
        yield fake
    finally:
        fake.close()
