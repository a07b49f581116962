"""Local stand-ins for Google Cloud: Secret Manager and Parameter Manager over
real gRPC (built from the message types that ship with the client libraries),
and STS + IAM Credentials over HTTP for the workload-identity flow.

Everything listens on 127.0.0.1 without TLS. One :class:`FakeGoogle` holds the
state shared by all fakes: issued access tokens and the principals they stand
for, workload-identity bindings and counters. A Secret Manager fake serves one
location (``""`` = the global service) and refuses names of any other, which
is how tests prove regional routing.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections import Counter
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_crc32c
import grpc
from google.cloud import parametermanager_v1, secretmanager_v1

PROJECT_NUMBERS = {"my-project": "1449000001", "other-project": "1449000002"}
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def make_jwt(
    namespace: str,
    service_account: str,
    audience: str,
    *,
    expires_in: float = 600,
    subject: str | None = None,
) -> str:
    """An unsigned Kubernetes-style service-account JWT (the fake STS checks claims only)."""

    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "https://kubernetes.default.svc",
        "sub": subject or f"system:serviceaccount:{namespace}:{service_account}",
        "aud": [audience],
        "exp": int(time.time() + expires_in),
        "iat": int(time.time()),
    }
    return f"{part({'alg': 'RS256', 'kid': 'test'})}.{part(claims)}.c2lnbmF0dXJl"


def _claims(token: str) -> dict[str, Any] | None:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Version:
    data: bytes
    state: str = "ENABLED"  # ENABLED | DISABLED | DESTROYED


@dataclass
class Secret:
    versions: dict[int, Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    readers: set[str] | None = None
    """Principals allowed to access; ``None`` = any authenticated caller."""


class FakeGoogle:
    """Shared state: access tokens -> principals, workload identity policy, counters."""

    def __init__(self, *, pool: str = "my-project.svc.id.goog", audience: str = "") -> None:
        self.pool = pool
        self.audience = audience or (
            f"identitynamespace:{pool}:https://container.googleapis.com/v1/projects/"
            "my-project/locations/us-central1/clusters/test"
        )
        self.token_audience = pool
        self.tokens: dict[str, tuple[str, float]] = {}
        self.bindings: dict[str, set[str]] = {}
        """GSA email -> workload identity members allowed to impersonate it."""
        self.counts: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.token_lifetime = 3600

    def issue(self, principal: str, prefix: str) -> str:
        with self._lock:
            token = f"{prefix}-{next(self._ids)}"
            self.tokens[token] = (principal, time.time() + self.token_lifetime)
        return token

    def principal(self, authorization: str) -> str | None:
        if not authorization.startswith("Bearer "):
            return None
        entry = self.tokens.get(authorization[len("Bearer ") :])
        if entry is None or entry[1] < time.time():
            return None
        return entry[0]

    def federated_principal(self, namespace: str, ksa: str) -> str:
        return (
            "principal://iam.googleapis.com/projects/1449000001/locations/global/"
            f"workloadIdentityPools/{self.pool}/subject/ns/{namespace}/sa/{ksa}"
        )

    def bind(self, gsa: str, namespace: str, ksa: str) -> None:
        """roles/iam.workloadIdentityUser on ``gsa`` for ``serviceAccount:pool[ns/ksa]``."""
        self.bindings.setdefault(gsa, set()).add(self.federated_principal(namespace, ksa))


class _GrpcFake:
    """Common gRPC plumbing: server, fault and latency injection, call log."""

    service = ""

    def __init__(self, google: FakeGoogle, location: str = "") -> None:
        self.google = google
        self.location = location
        self.calls: list[str] = []
        self.faults: list[tuple[grpc.StatusCode, str]] = []
        self.delay = 0.0
        self.require_auth = True
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((self._handler(),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{self.port}"
        self._server.start()

    def _handler(self) -> grpc.GenericRpcHandler:
        raise NotImplementedError

    def fail(self, code: grpc.StatusCode, times: int = 1, message: str = "injected") -> None:
        with self._lock:
            self.faults.extend([(code, message)] * times)

    def stop(self) -> None:
        self._server.stop(0)

    def _begin(self, name: str, context: grpc.ServicerContext) -> str:
        self.calls.append(name)
        self.google.counts[self.service] += 1
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            context.abort(fault[0], fault[1])
        auth = dict(context.invocation_metadata()).get("authorization", "")
        principal = self.google.principal(str(auth))
        if principal is None and self.require_auth:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        return principal or ""


def _parse(pattern: re.Pattern[str], name: str) -> dict[str, str] | None:
    m = pattern.fullmatch(name)
    return m.groupdict() if m else None


_SM_NAME = re.compile(
    r"projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?/secrets/(?P<secret>[^/]+)"
    r"/versions/(?P<version>[^/]+)"
)


class FakeSecretManager(_GrpcFake):
    service = "secretmanager"

    def __init__(self, google: FakeGoogle, location: str = "") -> None:
        self.secrets: dict[tuple[str, str], Secret] = {}
        self.corrupt_checksum = False
        self.send_checksum = True
        super().__init__(google, location)

    def _handler(self) -> grpc.GenericRpcHandler:
        req = secretmanager_v1.AccessSecretVersionRequest
        resp = secretmanager_v1.AccessSecretVersionResponse
        return grpc.method_handlers_generic_handler(
            "google.cloud.secretmanager.v1.SecretManagerService",
            {
                "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                    self._access,
                    request_deserializer=req.deserialize,
                    response_serializer=resp.serialize,
                )
            },
        )

    # -- state ------------------------------------------------------------------
    def add_version(
        self,
        project: str,
        secret: str,
        data: bytes,
        *,
        state: str = "ENABLED",
        alias: str | None = None,
    ) -> int:
        entry = self.secrets.setdefault((project, secret), Secret())
        number = max(entry.versions, default=0) + 1
        entry.versions[number] = Version(data, state)
        if alias:
            entry.aliases[alias] = number
        return number

    def set_state(self, project: str, secret: str, number: int, state: str) -> None:
        self.secrets[(project, secret)].versions[number].state = state

    def allow_only(self, project: str, secret: str, *principals: str) -> None:
        self.secrets[(project, secret)].readers = set(principals)

    # -- RPC --------------------------------------------------------------------
    def _access(self, request: Any, context: grpc.ServicerContext) -> Any:
        principal = self._begin(request.name, context)
        parts = _parse(_SM_NAME, request.name)
        if parts is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource name {request.name}")
        assert parts is not None
        location = parts["location"] or ""
        if location != self.location:
            served = self.location or "global"
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The resource {request.name} is not served by this endpoint ({served}).",
            )
        project = parts["project"]
        numbers = {v: k for k, v in PROJECT_NUMBERS.items()}
        project_id = numbers.get(project, project)
        number = PROJECT_NUMBERS.get(project_id, project_id)
        prefix = f"projects/{number}" + (f"/locations/{location}" if location else "")
        secret_name = f"{prefix}/secrets/{parts['secret']}"
        entry = self.secrets.get((project_id, parts["secret"]))
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{secret_name}] not found.")
        assert entry is not None
        if entry.readers is not None and principal not in entry.readers:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission 'secretmanager.versions.access' denied for resource "
                f"'{request.name}' (or it may not exist).",
            )
        selector = parts["version"]
        if selector == "latest":
            enabled = [n for n, v in entry.versions.items() if v.state == "ENABLED"]
            if not enabled:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Secret [{secret_name}] has no enabled versions.",
                )
            resolved = max(enabled)
        elif selector.isdigit():
            resolved = int(selector)
        elif selector in entry.aliases:
            resolved = entry.aliases[selector]
        else:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Secret Version [{secret_name}/versions/{selector}] not found.",
            )
        version = entry.versions.get(resolved)
        name = f"{secret_name}/versions/{resolved}"
        if version is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")
        assert version is not None
        if version.state != "ENABLED":
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Secret Version [{name}] is in {version.state} state.",
            )
        payload = secretmanager_v1.SecretPayload(data=version.data)
        if self.send_checksum:
            checksum = google_crc32c.value(version.data)
            payload.data_crc32c = checksum ^ 1 if self.corrupt_checksum else checksum
        return secretmanager_v1.AccessSecretVersionResponse(name=name, payload=payload)


_PM_NAME = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/parameters/(?P<parameter>[^/]+)"
    r"/versions/(?P<version>[^/]+)"
)
_REF = re.compile(r"__REF__\(//secretmanager\.googleapis\.com/(?P<name>projects/[^)]+)\)")


class FakeParameterManager(_GrpcFake):
    service = "parametermanager"

    def __init__(
        self,
        google: FakeGoogle,
        location: str = "global",
        secrets: FakeSecretManager | None = None,
    ) -> None:
        self.parameters: dict[tuple[str, str, str], tuple[bytes, bool]] = {}
        self.secret_source = secrets
        super().__init__(google, location)

    def _handler(self) -> grpc.GenericRpcHandler:
        req = parametermanager_v1.RenderParameterVersionRequest
        resp = parametermanager_v1.RenderParameterVersionResponse
        return grpc.method_handlers_generic_handler(
            "google.cloud.parametermanager.v1.ParameterManager",
            {
                "RenderParameterVersion": grpc.unary_unary_rpc_method_handler(
                    self._render,
                    request_deserializer=req.deserialize,
                    response_serializer=resp.serialize,
                )
            },
        )

    def add_version(
        self, project: str, parameter: str, version: str, data: bytes, *, disabled: bool = False
    ) -> None:
        self.parameters[(project, parameter, version)] = (data, disabled)

    def _resolve_ref(self, match: re.Match[str]) -> str:
        assert self.secret_source is not None
        parts = _parse(_SM_NAME, match["name"])
        assert parts is not None
        entry = self.secret_source.secrets[(parts["project"], parts["secret"])]
        selector = parts["version"]
        number = max(entry.versions) if selector == "latest" else int(selector)
        return entry.versions[number].data.decode()

    def _render(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._begin(request.name, context)
        parts = _parse(_PM_NAME, request.name)
        if parts is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource name {request.name}")
        assert parts is not None
        if parts["location"] != self.location:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The resource {request.name} is not served by this endpoint ({self.location}).",
            )
        key = (parts["project"], parts["parameter"], parts["version"])
        found = self.parameters.get(key)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"ParameterVersion {request.name} not found")
        assert found is not None
        data, disabled = found
        if disabled:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"ParameterVersion {request.name} is disabled"
            )
        number = PROJECT_NUMBERS.get(parts["project"], parts["project"])
        name = (
            f"projects/{number}/locations/{parts['location']}/parameters/{parts['parameter']}"
            f"/versions/{parts['version']}"
        )
        rendered = data
        if self.secret_source is not None:
            rendered = _REF.sub(self._resolve_ref, data.decode()).encode()
        return parametermanager_v1.RenderParameterVersionResponse(
            parameter_version=name,
            payload=parametermanager_v1.ParameterVersionPayload(data=data),
            rendered_payload=rendered,
        )


class FakeIdentity:
    """STS (``POST /v1/token``) and IAM Credentials generateAccessToken over HTTP."""

    def __init__(self, google: FakeGoogle) -> None:
        self.google = google
        self.sts_requests: list[dict[str, str]] = []
        self.iam_requests: list[dict[str, Any]] = []
        self.fail_sts_with: tuple[int, dict[str, Any] | str] | None = None
        """Fault injection: every STS answer is this (status, JSON body or raw text)."""
        self.fail_iam_with: tuple[int, dict[str, Any] | str] | None = None
        """Fault injection: every generateAccessToken answer is this."""
        self.fail_oauth2_with: tuple[int, dict[str, Any] | str] | None = None
        """Fault injection: every OAuth2 token endpoint (key.json) answer is this."""
        self.node_account = "node@my-project.iam.gserviceaccount.com"
        self.metadata: dict[str, str] = {}
        """Metadata paths (``/computeMetadata/v1/...``) -> text values."""
        self.disabled_keys: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.google.counts["metadata"] += 1
                if self.headers.get("Metadata-Flavor") != "Google":
                    code, reply = 403, {"error": "missing Metadata-Flavor header"}
                elif path == "/computeMetadata/v1/instance/service-accounts/default/token":
                    token = fake.google.issue(f"serviceAccount:{fake.node_account}", "gce")
                    code, reply = (
                        200,
                        {
                            "access_token": token,
                            "expires_in": fake.google.token_lifetime,
                            "token_type": "Bearer",
                        },
                    )
                elif path in fake.metadata:
                    data = fake.metadata[path].encode()
                    self.send_response(200)
                    self.send_header("Metadata-Flavor", "Google")
                    self.send_header("Content-Type", "application/text")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                else:
                    code, reply = 404, {"error": "not found"}
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                path = self.path.split("?", 1)[0]
                if path == "/v1/token":
                    code, reply = fake._sts(dict(urllib.parse.parse_qsl(body)))
                elif path == "/token":
                    code, reply = fake._oauth2(dict(urllib.parse.parse_qsl(body)))
                else:
                    m = re.fullmatch(
                        r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken", path
                    )
                    if m is None:
                        code, reply = 404, {"error": {"code": 404, "message": "no such path"}}
                    else:
                        code, reply = fake._iam(
                            m.group(1), self.headers.get("Authorization", ""), json.loads(body)
                        )
                text = isinstance(reply, str)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self.sts_url = f"{self.url}/v1/token"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _sts(self, form: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        self.sts_requests.append({k: v for k, v in form.items() if k != "subject_token"})
        self.google.counts["sts"] += 1
        if self.fail_sts_with is not None:
            return self.fail_sts_with

        def bad(description: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": "invalid_grant", "error_description": description}

        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("subject_token_type") != JWT_TYPE:
            return 400, {"error": "invalid_request", "error_description": "subject_token_type"}
        if form.get("audience") != self.google.audience:
            return bad(f"The audience {form.get('audience')!r} is not a valid pool provider.")
        claims = _claims(form.get("subject_token", ""))
        if claims is None:
            return bad("The subject token is not a valid JWT.")
        if self.google.token_audience not in claims.get("aud", []):
            return bad("The audience in the subject token does not match the pool.")
        if claims.get("exp", 0) < time.time():
            return bad("The subject token has expired.")
        sub = str(claims.get("sub", ""))
        m = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", sub)
        if m is None:
            return bad("The subject is not a Kubernetes service account.")
        principal = self.google.federated_principal(m.group(1), m.group(2))
        token = self.google.issue(principal, "sts")
        return 200, {
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": self.google.token_lifetime,
        }

    def _oauth2(self, form: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        """The OAuth2 token endpoint for service-account keys (JWT bearer grant).

        Checks the assertion's claims, not its signature."""
        self.google.counts["oauth2"] += 1
        if self.fail_oauth2_with is not None:
            return self.fail_oauth2_with
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        claims = _claims(form.get("assertion", ""))
        if claims is None or "iss" not in claims:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
        if claims["iss"] in self.disabled_keys:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        token = self.google.issue(f"serviceAccount:{claims['iss']}", "sa")
        return 200, {
            "access_token": token,
            "expires_in": self.google.token_lifetime,
            "token_type": "Bearer",
        }

    def _iam(
        self, gsa: str, authorization: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | str]:
        self.iam_requests.append({"gsa": gsa, **body})
        self.google.counts["iam"] += 1
        if self.fail_iam_with is not None:
            return self.fail_iam_with
        caller = self.google.principal(authorization)
        if caller is None:
            return 401, {
                "error": {
                    "code": 401,
                    "message": "Request had invalid credentials.",
                    "status": "UNAUTHENTICATED",
                }
            }
        if caller not in self.google.bindings.get(gsa, set()):
            return 403, {
                "error": {
                    "code": 403,
                    "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on "
                    "resource (or it may not exist).",
                    "status": "PERMISSION_DENIED",
                }
            }
        token = self.google.issue(f"serviceAccount:{gsa}", "iam")
        expire = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=self.google.token_lifetime
        )
        return 200, {"accessToken": token, "expireTime": expire.strftime("%Y-%m-%dT%H:%M:%SZ")}


@dataclass
class GoogleStack:
    """One FakeGoogle with its fakes, and the ``backends.gcp`` settings pointing at them."""

    google: FakeGoogle
    identity: FakeIdentity
    secret_manager: FakeSecretManager
    regional: dict[str, FakeSecretManager]
    parameter_manager: FakeParameterManager
    regional_parameters: dict[str, FakeParameterManager]

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "audience": self.google.audience,
            "workload_identity_pool": self.google.pool,
            "discover_from_metadata": False,
            "insecure": True,
            "sts_url": self.identity.sts_url,
            "iam_credentials_url": self.identity.url,
            "oauth2_token_url": f"{self.identity.url}/token",
            "metadata_url": "http://127.0.0.1:9",
            "secret_manager_endpoint": self.secret_manager.endpoint,
            "secret_manager_locations": {k: v.endpoint for k, v in self.regional.items()},
            "parameter_manager_endpoint": self.parameter_manager.endpoint,
            "parameter_manager_locations": {
                k: v.endpoint for k, v in self.regional_parameters.items()
            },
            "retry_initial_seconds": 0.01,
            "retry_max_seconds": 0.05,
            **extra,
        }

    def token(self, namespace: str, ksa: str, **kwargs: Any) -> dict[str, str]:
        """The driver's tokens attribute entry for the pool audience."""
        return {self.google.pool: make_jwt(namespace, ksa, self.google.pool, **kwargs)}

    def stop(self) -> None:
        for fake in (
            self.secret_manager,
            self.parameter_manager,
            *self.regional.values(),
            *self.regional_parameters.values(),
        ):
            fake.stop()
        self.identity.stop()


def google_stack(
    regions: tuple[str, ...] = ("us-east1", "europe-west4"),
    parameter_regions: tuple[str, ...] = ("us-east1",),
) -> GoogleStack:
    google = FakeGoogle()
    sm = FakeSecretManager(google)
    return GoogleStack(
        google=google,
        identity=FakeIdentity(google),
        secret_manager=sm,
        regional={r: FakeSecretManager(google, r) for r in regions},
        parameter_manager=FakeParameterManager(google, "global", secrets=sm),
        regional_parameters={r: FakeParameterManager(google, r) for r in parameter_regions},
    )
