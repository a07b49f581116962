"""Fake Entra ID token endpoint and fake Key Vault, both HTTPS on 127.0.0.1.

The real azure-identity and azure-keyvault-* clients talk to them through a
configured authority host and vault URL template (``https://127.0.0.1:<port>/{name}``),
trusting a local CA made with trustme. Both are as strict as the services they
stand for, so a test fails where production would:

- :class:`FakeEntra` serves ``POST /<tenant>/oauth2/v2.0/token`` (client-credentials
  grant with a client assertion or a client secret) and the OpenID configuration
  MSAL reads. Applications are registered per tenant, with federated identity
  credentials (issuer, subject, audience) and client secrets. A client assertion
  (the pod's ``api://AzureADTokenExchange`` token) is verified against the cluster
  issuer's key (:data:`keyferry_fakes.oidc.ISSUER`) and matched to a federated credential
  of the application, as Entra does against the cluster's OIDC JWKS. Errors are
  Entra's: HTTP 400/401 with ``error``, ``error_description`` ("AADSTS<code>: ...")
  and ``error_codes``. Only resources Entra knows can be asked for
  (``<resource>/.default``). Issued access tokens are remembered with their tenant,
  application and audience, so the vault can check them. Requests are counted.
- :class:`FakeKeyVault` serves secrets, keys and certificates (get, get version,
  list versions with paging) and lists a vault's secrets (``GET /secrets``: each
  secret's id without version, its latest version's attributes, tags, content type and
  ``managed``; ``maxresults`` 1-25, ``nextLink`` paging; the ``secrets list`` operation,
  which RBAC's ``Key Vault Secrets User`` includes) over HTTPS only. Every 401 carries Key Vault's
  challenge (``WWW-Authenticate: Bearer authorization=..., resource=...``): no token,
  a token the fake Entra did not issue or that expired, a token for another
  audience (AKV10022) or another tenant (AKV10032). Access is denied unless granted:
  a per-vault registry maps principals (application ids) to the operations they may
  do (``secrets get``, ``keys list``...), answered with 403 ``ForbiddenByRbac`` (RBAC
  vaults) or ``AccessDenied`` (access-policy vaults) as Key Vault words them.

Both take faults (``faults``: 429 with or without Retry-After, 5xx, resets mid-response,
slow answers; :mod:`keyferry_fakes.faults`); Key Vault also a fixed latency.
"""

from __future__ import annotations

import base64
import json
import secrets as _secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import trustme

from keyferry_fakes.faults import Fault, Faults
from keyferry_fakes.oidc import ISSUER, TokenRejected
from keyferry_fakes.serving import HTTPServing

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://AzureADTokenExchange"
VAULT_RESOURCE = "https://vault.azure.net"
VAULT_RESOURCES = (
    "https://vault.azure.net",  # AzurePublicCloud
    "https://vault.azure.cn",  # AzureChinaCloud
    "https://vault.usgovcloudapi.net",  # AzureUSGovernmentCloud
)
MANAGEMENT_RESOURCE = "https://management.azure.com"
RESOURCES = (*VAULT_RESOURCES, MANAGEMENT_RESOURCE)
"""Resources the fake Entra issues tokens for (``<resource>/.default``)."""
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KINDS = ("secrets", "keys", "certificates")
OPERATIONS = ("get", "list")


def pod_token(
    namespace: str = "team-a",
    service_account: str = "web",
    *,
    audience: str = AUDIENCE,
    **kwargs: Any,
) -> str:
    """The pod's projected token for ``api://AzureADTokenExchange`` (signed by ISSUER)."""
    return ISSUER.pod_token(audience, namespace, service_account, **kwargs)


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims Entra reads before it knows which issuer's keys to check."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
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

            def setup(self) -> None:
                super().setup()
                outer.connected()

            def do_GET(self) -> None:
                outer.handle(self, "GET")

            def do_POST(self) -> None:
                outer.handle(self, "POST")

        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._serving = HTTPServing(Handler, tls=context, name=f"fake-{type(self).__name__}")
        self.port = self._serving.port
        self.url = self._serving.url

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def connected(self) -> None:
        """A client opened a connection (TLS handshake done)."""

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
        self._serving.stop()


# --- Entra ID ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential of an application (or managed identity)."""

    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (AUDIENCE,)


@dataclass
class App:
    """An application's service principal in one tenant."""

    client_id: str
    tenant: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    federated: list[FederatedCredential] = field(default_factory=list)
    secrets: dict[str, float] = field(default_factory=dict)
    """client secret -> expiry (epoch seconds)"""


@dataclass
class Issued:
    client_id: str
    tenant: str
    audience: str
    """The resource the token is for (the scope without ``/.default``)."""
    subject: str
    """The assertion's subject (workload identity) or the service principal's object id."""
    expires: float
    object_id: str = ""

    @property
    def scope(self) -> str:
        return f"{self.audience}/.default"


class EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, text: str) -> None:
        super().__init__(text)
        self.status, self.error, self.code, self.text = status, error, code, text


class FakeEntra(_TLSServer):
    """Entra ID's v2.0 token endpoint for one or more tenants."""

    def __init__(self, ca: trustme.CA, *, tenant: str = TENANT, expires_in: int = 3600) -> None:
        self.lock = threading.Lock()
        self.faults = Faults()
        """Faults for token requests, matched against ``<tenant>/oauth2/v2.0/token``."""
        self._constructed = (tenant, expires_in)
        self.reset()
        super().__init__(ca)

    def reset(self) -> None:
        """Back to a new Entra: no applications, issued tokens or counts (same URL)."""
        tenant, expires_in = self._constructed
        self.faults.clear()
        with self.lock:
            self.tenants = {tenant}
            self.expires_in = expires_in
            self.apps: dict[tuple[str, str], App] = {}
            """(tenant, client id) -> application"""
            self.issued: dict[str, Issued] = {}
            self.token_requests = 0
            self.requests: Counter[str] = Counter()
            self.errors: Counter[int] = Counter()
            """AADSTS codes answered, by code."""

    @property
    def authority(self) -> str:
        return self.url

    # -- registry --

    def app(self, client_id: str, tenant: str = TENANT) -> App:
        """The application ``client_id`` in ``tenant`` (registered when new)."""
        with self.lock:
            self.tenants.add(tenant)
            got = self.apps.get((tenant, client_id))
            if got is None:
                got = self.apps[(tenant, client_id)] = App(client_id, tenant)
            return got

    def federate(
        self,
        client_id: str,
        namespace: str,
        service_account: str,
        *,
        tenant: str = TENANT,
        issuer: str | None = None,
    ) -> FederatedCredential:
        """A federated credential on ``client_id`` trusting the cluster issuer's token for
        ``system:serviceaccount:<namespace>:<service_account>``."""
        subject = f"system:serviceaccount:{namespace}:{service_account}"
        fic = FederatedCredential(
            f"kubernetes-{namespace}-{service_account}", issuer or ISSUER.url, subject
        )
        app = self.app(client_id, tenant)
        with self.lock:
            app.federated.append(fic)
        return fic

    def add_client_secret(
        self, client_id: str, secret: str, *, tenant: str = TENANT, lifetime: float = 86400 * 365
    ) -> None:
        app = self.app(client_id, tenant)
        with self.lock:
            app.secrets[secret] = time.time() + lifetime

    def principal(self, access_token: str) -> Issued | None:
        """The token's record if this Entra issued it (expired ones included)."""
        with self.lock:
            return self.issued.get(access_token)

    # -- HTTP --

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urllib.parse.urlsplit(h.path).path
        parts = [p for p in path.split("/") if p]
        with self.lock:
            self.requests[f"{method} {path}"] += 1
        if method == "GET" and len(parts) >= 2 and parts[-1] == "openid-configuration":
            tenant = parts[0]
            if tenant not in self.tenants:
                # What login.microsoftonline.com answers for a tenant that does not exist;
                # MSAL's discovery then fails before any token request.
                self._error(h, EntraError(400, "invalid_tenant", 90002, _tenant_text(tenant)))
                return
            base = f"{self.url}/{tenant}"
            self.send_json(
                h,
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
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
        if self.faults.apply(h, path, lambda fault: self._fault(h, fault)):
            return
        try:
            issued = self._token(parts[0], form)
        except EntraError as exc:
            self._error(h, exc)
            return
        token = _secrets.token_urlsafe(24)
        with self.lock:
            self.issued[token] = issued
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

    def _token(self, tenant: str, form: dict[str, str]) -> Issued:
        if tenant not in self.tenants:
            raise EntraError(400, "invalid_request", 90002, _tenant_text(tenant))
        if form.get("grant_type") != "client_credentials":
            raise EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            raise EntraError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        with self.lock:
            app = self.apps.get((tenant, client_id))
        if app is None:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You "
                "may have sent your authentication request to the wrong tenant.",
            )
        if "client_assertion" in form:
            subject = self._check_assertion(app, form)
        elif "client_secret" in form:
            self._check_secret(app, form["client_secret"])
            subject = app.object_id
        else:
            raise EntraError(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the "
                "'client_credentials' grant type.",
            )
        scopes = form.get("scope", "").split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise EntraError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        resource = scopes[0][: -len("/.default")].rstrip("/")
        if resource not in RESOURCES:
            raise EntraError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{tenant}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant.",
            )
        return Issued(
            client_id, tenant, resource, subject, time.time() + self.expires_in, app.object_id
        )

    def _check_assertion(self, app: App, form: dict[str, str]) -> str:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise EntraError(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed (client_assertion_type must be "
                f"'{ASSERTION_TYPE}').",
            )
        assertion = form["client_assertion"]
        claims = _unverified_claims(assertion)
        if claims is None:
            raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        issuer = str(claims.get("iss", ""))
        with self.lock:
            records = [f for f in app.federated if f.issuer == issuer]
        if not records:
            raise EntraError(
                400,
                "invalid_client",
                700211,
                f"No matching federated identity record found for presented assertion issuer "
                f"'{issuer}'. Please check your federated identity credential Subject, Audience "
                "and Issuer against the presented assertion.",
            )
        # Entra fetches the issuer's JWKS and checks signature, audience and lifetime.
        try:
            verified = ISSUER.verify(assertion, AUDIENCE)
        except TokenRejected as exc:
            raise _assertion_error(str(exc), claims) from None
        subject = str(verified.get("sub", ""))
        if not any(f.subject == subject and AUDIENCE in f.audiences for f in records):
            raise EntraError(
                400,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion "
                f"Audience: '{AUDIENCE}'. https://docs.microsoft.com/en-us/azure/active-"
                "directory/develop/workload-identity-federation",
            )
        return subject

    def _check_secret(self, app: App, secret: str) -> None:
        with self.lock:
            known = dict(app.secrets)
        for value, expires in known.items():
            if _secrets.compare_digest(value.encode(), secret.encode()):
                if expires < time.time():
                    raise EntraError(
                        401,
                        "invalid_client",
                        7000222,
                        f"The provided client secret keys for app '{app.client_id}' are "
                        "expired. Visit the Azure portal to create new keys for your app.",
                    )
                return
        raise EntraError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            f"the client secret value, not the client secret ID, for a secret added to app "
            f"'{app.client_id}'.",
        )

    def _fault(self, h: BaseHTTPRequestHandler, fault: Fault) -> None:
        """An injected throttling or server error, worded as Entra words them."""
        if fault.status == 429:
            err = EntraError(429, "temporarily_unavailable", 50196, "Too many requests.")
        else:
            err = EntraError(fault.status, "server_error", 50000, "injected server error")
        body = {
            "error": err.error,
            "error_description": f"AADSTS{err.code}: {err.text}",
            "error_codes": [err.code],
        }
        self.send_json(h, err.status, body, fault.headers)

    def _error(self, h: BaseHTTPRequestHandler, err: EntraError) -> None:
        with self.lock:
            self.errors[err.code] += 1
        self.send_json(
            h,
            err.status,
            {
                "error": err.error,
                "error_description": f"AADSTS{err.code}: {err.text} Trace ID: "
                f"{uuid.uuid4()} Correlation ID: {uuid.uuid4()} Timestamp: "
                f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
                "error_codes": [err.code],
                "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            },
        )


def _tenant_text(tenant: str) -> str:
    return (
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud."
    )


def _assertion_error(reason: str, claims: dict[str, Any]) -> EntraError:
    """Entra's answer for an assertion the issuer's JWKS check refused."""
    if "not a JWT" in reason:
        return EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    if "audience" in reason:
        return EntraError(
            400,
            "invalid_client",
            700212,
            "No matching federated identity record found for presented assertion audience "
            f"'{claims.get('aud')}'. Please note that the matching is done using a "
            "case-sensitive comparison.",
        )
    if "expired" in reason or "not valid yet" in reason:
        return EntraError(
            400,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range. Current time: "
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}, expiry time of assertion "
            f"{claims.get('exp')}.",
        )
    if reason.startswith("the issuer"):
        return EntraError(
            400,
            "invalid_client",
            50166,
            f"Request to External OIDC endpoint failed (issuer '{claims.get('iss')}').",
        )
    # A key not in the issuer's JWKS, or a signature that does not verify.
    return EntraError(
        400, "invalid_client", 700027, "Client assertion failed signature validation."
    )


# --- Key Vault ---------------------------------------------------------------------


@dataclass
class Version:
    version: str
    body: dict[str, Any]
    enabled: bool = True
    created: int = 0


_RBAC_ACTIONS = {
    ("secrets", "get"): "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    ("secrets", "list"): "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    ("keys", "get"): "Microsoft.KeyVault/vaults/keys/read",
    ("keys", "list"): "Microsoft.KeyVault/vaults/keys/read",
    ("certificates", "get"): "Microsoft.KeyVault/vaults/certificates/read",
    ("certificates", "list"): "Microsoft.KeyVault/vaults/certificates/read",
}


class FakeKeyVault(_TLSServer):
    """Key Vault's REST API for any number of vaults, under ``/<vault>/...``.

    Every vault belongs to a tenant (``tenants[vault]``, default :data:`TENANT`) and
    only accepts access tokens the fake Entra issued for :data:`VAULT_RESOURCE` in that
    tenant. ``access[vault][principal]`` holds the operations (``(kind, op)``, e.g.
    ``("secrets", "get")``) an application id may do; nothing is allowed otherwise.
    ``rbac`` picks how a denial is worded (Azure RBAC or access policies)."""

    def __init__(self, ca: trustme.CA, entra: FakeEntra, *, rbac: bool = True) -> None:
        self.entra = entra
        self.lock = threading.Lock()
        self.faults = Faults()
        """Faults for authenticated requests, matched against the URL path."""
        self._rbac = rbac
        self.reset()
        super().__init__(ca)

    def reset(self) -> None:
        """Back to a new vault service: no vaults' content, tenants, grants, faults or
        counts, the constructor's ``rbac`` (same URL)."""
        self.faults.clear()
        with self.lock:
            self.objects: dict[tuple[str, str, str], list[Version]] = {}
            self.tenants: dict[str, str] = {}
            self.access: dict[str, dict[str, set[tuple[str, str]]]] = {}
            self.resource = VAULT_RESOURCE
            self.latency = 0.0
            self.requests: Counter[str] = Counter()
            self.with_token: Counter[str] = Counter()
            """Requests that carried a bearer token, by path (what a client retries)."""
            self.refused: Counter[int] = Counter()
            """401/403 answers, by status."""
            self.page_size = 2
            self.rbac = self._rbac
            self.connections = 0
            """TLS connections clients opened."""
            self._barrier: threading.Barrier | None = None
            self._held = ""
            self._clock = 1_700_000_000
            self.listing_paused: threading.Event | None = None
            """Set by :meth:`pause_listing`: ``GET /secrets`` answers once it is set."""

    def vault_url_template(self) -> str:
        return f"{self.url}/{{name}}"

    def tenant_of(self, vault: str) -> str:
        return self.tenants.get(vault, TENANT)

    # -- access --

    def grant(
        self,
        vault: str,
        kind: str,
        *principals: str,
        operations: tuple[str, ...] = OPERATIONS,
    ) -> None:
        """Let each principal (an application id) do ``operations`` on ``kind``
        (``secrets``, ``keys`` or ``certificates``) in ``vault``."""
        assert kind in KINDS and set(operations) <= set(OPERATIONS), (kind, operations)
        with self.lock:
            for principal in principals:
                ops = self.access.setdefault(vault, {}).setdefault(principal, set())
                ops.update((kind, op) for op in operations)

    def grant_reader(self, vault: str, *principals: str) -> None:
        """get and list on secrets, keys and certificates (what the
        ``Key Vault Secrets User`` + ``Crypto User`` + ``Certificate User`` roles give)."""
        for kind in KINDS:
            self.grant(vault, kind, *principals)

    def revoke(self, vault: str, principal: str) -> None:
        with self.lock:
            self.access.get(vault, {}).pop(principal, None)

    def allowed(self, vault: str, principal: str, kind: str, op: str) -> bool:
        with self.lock:
            return (kind, op) in self.access.get(vault, {}).get(principal, set())

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
        tags: dict[str, str] | None = None,
    ) -> str:
        body: dict[str, Any] = {"value": value}
        if content_type is not None:
            body["contentType"] = content_type
        if tags is not None:
            body["tags"] = dict(tags)
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

    def inject(self, status: int, times: int = 1, *, retry_after: str = "", path: str = "") -> None:
        """Answer ``times`` authenticated requests whose path contains ``path`` with
        ``status`` (see :attr:`faults` for resets and slow answers)."""
        self.faults.status(status, times=times, retry_after=retry_after, where=path)

    def hold(self, count: int, prefix: str) -> None:
        """From now on every authorised read of an object whose name starts with
        ``prefix`` waits until ``count`` such reads wait, then they all go on: a Mount
        that does not put ``count`` reads in flight at once fails (500 after 30 s)."""
        with self.lock:
            self._barrier = threading.Barrier(count, timeout=30)
            self._held = prefix

    def pause_listing(self) -> threading.Event:
        """From now on every authorised ``GET /secrets`` waits until the returned event is
        set: a listing provably in flight, without sleeping."""
        with self.lock:
            self.listing_paused = threading.Event()
            return self.listing_paused

    def connected(self) -> None:
        with self.lock:
            self.connections += 1

    # -- HTTP --

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
        auth = h.headers.get("Authorization", "")
        # Counted on arrival, before any latency: a request a test left sleeping here must
        # not be counted after the next test's reset.
        with self.lock:
            self.requests[f"{method} {split.path}"] += 1
            if auth.startswith("Bearer "):
                self.with_token[split.path] += 1
        if self.latency:
            time.sleep(self.latency)
        vault = parts[0] if parts else ""
        if not auth.startswith("Bearer "):
            self._unauthorized(h, vault, "AKV10000: Request is missing a Bearer or PoP token.")
            return

        def answer(fault: Fault) -> None:
            code = fault.code or ("Throttled" if fault.status == 429 else "InternalServerError")
            body = {"error": {"code": code, "message": fault.text}}
            self.send_json(h, fault.status, body, fault.headers)

        if self.faults.apply(h, split.path, answer):
            return
        issued = self.entra.principal(auth[len("Bearer ") :].strip())
        if issued is None:
            self._unauthorized(
                h,
                vault,
                "Invalid token: the signature could not be validated (not a token "
                "issued by Microsoft Entra ID).",
            )
            return
        if issued.expires < time.time():
            self._unauthorized(h, vault, "Token expired.")
            return
        if issued.audience != self.resource:
            self._unauthorized(
                h,
                vault,
                f"AKV10022: Invalid audience. Expected {self.resource}, found: {issued.audience}.",
            )
            return
        tenant = self.tenant_of(vault)
        if issued.tenant != tenant:
            self._unauthorized(
                h,
                vault,
                f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, "
                f"https://login.microsoftonline.com/{tenant}/v2.0, found "
                f"https://sts.windows.net/{issued.tenant}/.",
            )
            return
        listing = parts[1:] == ["secrets"]
        if not listing and (len(parts) < 3 or parts[1] not in KINDS):
            self.send_json(h, 404, {"error": {"code": "BadParameter", "message": "no route"}})
            return
        if not urllib.parse.parse_qs(split.query).get("api-version"):
            self.send_json(
                h,
                400,
                {
                    "error": {
                        "code": "BadParameter",
                        "message": "The 'api-version' query parameter is missing.",
                    }
                },
            )
            return
        kind, name = parts[1], "" if listing else parts[2]
        op = "list" if listing or parts[3:] == ["versions"] else "get"
        if not self.allowed(vault, issued.client_id, kind, op):
            self._forbidden(h, vault, issued, kind, name, op)
            return
        if listing:
            if self.listing_paused is not None:
                self.listing_paused.wait(timeout=30)
            self._list_secrets(h, vault, dict(urllib.parse.parse_qsl(split.query)))
            return
        barrier = self._barrier
        if barrier is not None and name.startswith(self._held):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                self.send_json(h, 500, {"error": {"code": "Held", "message": "too few"}})
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

    def _list_secrets(self, h: BaseHTTPRequestHandler, vault: str, query: dict[str, str]) -> None:
        """``GET /secrets``: one item per secret (its latest version's attributes, tags,
        content type; ``managed`` for a certificate's backing secret), never a value."""
        size = self.page_size
        if "maxresults" in query:
            text = query["maxresults"]
            if not text.isdigit() or not 1 <= int(text) <= 25:
                self.send_json(
                    h,
                    400,
                    {
                        "error": {
                            "code": "BadParameter",
                            "message": f"Invalid value '{text}' for maxresults: it must be an "
                            "integer between 1 and 25.",
                        }
                    },
                )
                return
            size = min(size, int(text))
        skip_text = query.get("$skiptoken", "0")
        if not skip_text.isdigit():
            self.send_json(
                h, 400, {"error": {"code": "BadParameter", "message": "Invalid skip token."}}
            )
            return
        skip = int(skip_text)
        with self.lock:
            found = sorted(
                (name, versions[-1])
                for (v, kind, name), versions in self.objects.items()
                if v == vault and kind == "secrets" and versions
            )
        items = []
        for name, latest in found[skip : skip + size]:
            item: dict[str, Any] = {
                "id": f"{self.url}/secrets/{name}",
                "attributes": latest.body["attributes"],
            }
            for key in ("contentType", "tags", "managed"):
                if key in latest.body:
                    item[key] = latest.body[key]
            items.append(item)
        next_link = None
        if skip + size < len(found):
            next_link = (
                f"{self.url}/{vault}/secrets?api-version={query.get('api-version', '')}"
                f"&$skiptoken={skip + size}"
                + (f"&maxresults={query['maxresults']}" if "maxresults" in query else "")
            )
        self.send_json(h, 200, {"value": items, "nextLink": next_link})

    def _unauthorized(self, h: BaseHTTPRequestHandler, vault: str, message: str) -> None:
        """Key Vault's 401: always with the challenge naming the vault's tenant."""
        with self.lock:
            self.refused[401] += 1
        challenge = (
            f'Bearer authorization="{self.entra.url}/{self.tenant_of(vault)}", '
            f'resource="{self.resource}"'
        )
        self.send_json(
            h,
            401,
            {"error": {"code": "Unauthorized", "message": message}},
            {"WWW-Authenticate": challenge},
        )

    def _forbidden(
        self, h: BaseHTTPRequestHandler, vault: str, who: Issued, kind: str, name: str, op: str
    ) -> None:
        with self.lock:
            self.refused[403] += 1
        caller = (
            f"appid={who.client_id};oid={who.object_id};iss=https://sts.windows.net/{who.tenant}/"
        )
        scope = f"{vault}/{kind}/{name}" if name else vault  # a listing: the vault
        if self.rbac:
            inner = "ForbiddenByRbac"
            message = (
                "Caller is not authorized to perform action on resource.\r\nIf role "
                "assignments, deny assignments or role definitions were changed recently, "
                f"please observe propagation time.\r\nCaller: {caller}\r\nAction: "
                f"'{_RBAC_ACTIONS[(kind, op)]}'\r\nResource: '/subscriptions/00000000-0000-"
                f"0000-0000-000000000000/resourcegroups/rg/providers/microsoft.keyvault/vaults/"
                f"{scope}'\r\nAssignment: (not found)\r\nDecisionReason: "
                f"'DeniedWithNoValidRBAC' \r\nVault: {vault};location=westeurope\r\n"
            )
        else:
            inner = "AccessDenied"
            message = (
                f"The user, group or application '{caller}' does not have {kind} {op} "
                f"permission on key vault '{vault};location=westeurope'. For help resolving "
                "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            )
        self.send_json(
            h,
            403,
            {"error": {"code": "Forbidden", "message": message, "innererror": {"code": inner}}},
        )


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

    def reset(self) -> None:
        """Entra and Key Vault back to their just-constructed state (same URLs and CA)."""
        self.entra.reset()
        self.vault.reset()

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
