"""Local stand-ins for Google Cloud, as strict as the services they stand for.

Secret Manager and Parameter Manager over real gRPC (built from the message
types that ship with the client libraries); STS, IAM Credentials, the OAuth2
token endpoint (service-account keys) and the metadata server over HTTP.
Everything listens on 127.0.0.1 without TLS.

One :class:`FakeGoogle` holds what Google holds: the access tokens it issued
(principal, IAM members, scopes, expiry) and the IAM policies (resource ->
role -> members). Every fake enforces what the real service enforces:

- STS verifies the pod's token with the cluster's key (``ISSUER.verify``:
  signature, issuer = the pool provider's issuer, audience = the pool's token
  audience, expiry) and the request's ``audience`` must name the configured
  pool provider; refusals are 400 ``invalid_grant`` / ``invalid_target`` /
  ``invalid_request`` with an ``error_description``, as Google STS answers;
- IAM Credentials generateAccessToken takes only a live access token issued
  here (401 UNAUTHENTICATED otherwise) whose members hold
  ``iam.serviceAccounts.getAccessToken`` on the first account of the chain
  (``roles/iam.workloadIdentityUser`` or ``serviceAccountTokenCreator``), each
  delegate on the next (403 PERMISSION_DENIED otherwise);
- Secret Manager / Parameter Manager take only live access tokens issued here
  (UNAUTHENTICATED otherwise), with the cloud-platform scope, whose members hold
  the permission on the resource or its project (PERMISSION_DENIED otherwise,
  checked before existence, as Google does: "(or it may not exist)");
- Secret Manager's ListSecrets needs ``secretmanager.secrets.list`` on the project
  (``roles/secretmanager.viewer`` or admin; ``secretAccessor`` does not give it), pages
  with ``page_size`` (0: the server's choice, capped at 25000; negative refused) and an
  opaque ``page_token`` (a made-up one is INVALID_ARGUMENT), and reads a subset of
  Google's filter syntax: terms joined by whitespace or ``AND``, each one of
  ``labels.KEY=VALUE``, ``labels.KEY:VALUE``, ``labels.KEY:*`` (has the label) or
  ``name:TEXT`` (the name contains TEXT), values optionally double-quoted; anything else
  (``OR``, ``NOT``, parentheses, other fields) is INVALID_ARGUMENT, so a client that
  sends more than this subset fails here instead of passing untested;
- the OAuth2 token endpoint verifies a service-account key's JWT assertion with
  the public key registered for that key id, its audience and its lifetime.

A Secret Manager fake serves one location (``""`` = the global service) and
refuses names of any other, which is how tests prove regional routing.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import re
import secrets as pysecrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import google_crc32c
import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.cloud import parametermanager_v1, secretmanager_v1
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from keyferry_fakes.faults import Fault, Faults
from keyferry_fakes.oidc import ISSUER, TokenRejected, service_account_of
from keyferry_fakes.serving import HTTPServing
from keyferry_fakes.tcp_faults import ResetProxy

PROJECT_NUMBERS = {"my-project": "1449000001", "other-project": "1449000002"}
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
OAUTH2_AUDIENCES = (
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
)

WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
SECRET_VIEWER = "roles/secretmanager.viewer"
PARAMETER_VIEWER = "roles/parametermanager.parameterViewer"
GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"
ACCESS_SECRET = "secretmanager.versions.access"
LIST_VERSIONS = "secretmanager.versions.list"
LIST_SECRETS = "secretmanager.secrets.list"
RENDER_PARAMETER = "parametermanager.parameterVersions.render"
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    WORKLOAD_IDENTITY_USER: frozenset({GET_ACCESS_TOKEN, "iam.serviceAccounts.getOpenIdToken"}),
    TOKEN_CREATOR: frozenset(
        {
            GET_ACCESS_TOKEN,
            "iam.serviceAccounts.getOpenIdToken",
            "iam.serviceAccounts.signBlob",
            "iam.serviceAccounts.signJwt",
        }
    ),
    SECRET_ACCESSOR: frozenset({ACCESS_SECRET}),
    # Metadata only: listing and reading secrets' names and labels, never their data.
    SECRET_VIEWER: frozenset(
        {
            "secretmanager.secrets.get",
            LIST_SECRETS,
            "secretmanager.versions.get",
            LIST_VERSIONS,
            "secretmanager.locations.get",
            "secretmanager.locations.list",
        }
    ),
    "roles/secretmanager.admin": frozenset(
        {ACCESS_SECRET, LIST_VERSIONS, "secretmanager.secrets.get", LIST_SECRETS}
    ),
    PARAMETER_VIEWER: frozenset(
        {
            "parametermanager.parameterVersions.get",
            "parametermanager.parameterVersions.list",
            RENDER_PARAMETER,
        }
    ),
    "roles/parametermanager.parameterAccessor": frozenset(
        {"parametermanager.parameterVersions.get", RENDER_PARAMETER}
    ),
}

_HELP = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
MISSING_CREDENTIALS = f"Request is missing required authentication credential. {_HELP}"
INVALID_CREDENTIALS = f"Request had invalid authentication credentials. {_HELP}"
INSUFFICIENT_SCOPES = "Request had insufficient authentication scopes."


def pod_token(namespace: str, service_account: str, audience: str, **kwargs: Any) -> str:
    """The pod's projected ServiceAccount token, signed by the test cluster (ISSUER)."""
    return ISSUER.pod_token(audience, namespace, service_account, **kwargs)


def service_account_resource(email: str) -> str:
    return f"projects/-/serviceAccounts/{email}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, unverified (for messages only)."""
    try:
        data = json.loads(_unb64(token.split(".")[1]))
    except (IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _header(token: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_unb64(token.split(".")[0]))
    except (IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, asked: str) -> None:
    """End the call with ``code``; with ``asked``, a ``google.rpc.RetryInfo`` detail asking
    the client to wait that many seconds (what Google sends with some RESOURCE_EXHAUSTED)."""
    if not asked:
        context.abort(code, message)
    seconds = float(asked)
    delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


def _iam_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


@dataclass(frozen=True)
class Issued:
    """An access token as Google knows it."""

    principal: str
    members: frozenset[str]
    """IAM members the caller matches (e.g. ``principal://...``, ``serviceAccount:...``)."""
    scopes: frozenset[str]
    expiry: float
    kind: str
    """``federated`` (STS), ``service-account`` (IAM, OAuth2, metadata)."""


@dataclass
class Version:
    data: bytes
    state: str = "ENABLED"  # ENABLED | DISABLED | DESTROYED
    created: float = field(default_factory=time.time)


@dataclass
class Secret:
    versions: dict[int, Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class FakeGoogle:
    """Shared state: issued access tokens, IAM policies, the workload identity pool, counters."""

    def __init__(self, *, pool: str = "my-project.svc.id.goog", audience: str = "") -> None:
        self._lock = threading.Lock()
        self._constructed = (pool, audience)
        self.reset()

    def reset(self) -> None:
        """Back to the state of a new FakeGoogle: no tokens, policies or counts."""
        pool, audience = self._constructed
        self.pool = pool
        self.project_number = PROJECT_NUMBERS["my-project"]
        self.audience = audience or (
            f"identitynamespace:{pool}:https://container.googleapis.com/v1/projects/"
            "my-project/locations/us-central1/clusters/test"
        )
        """The one pool provider STS knows."""
        self.token_audience = pool
        """The audience the provider accepts in subject tokens (GKE: the pool)."""
        self.provider_issuer = ISSUER.url
        """The issuer the pool provider trusts (the cluster's OIDC issuer)."""
        self.tokens: dict[str, Issued] = {}
        self.policies: dict[str, dict[str, set[str]]] = {}
        """IAM policies: resource name -> role -> members."""
        self.counts: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self.token_lifetime = 3600

    # -- tokens -----------------------------------------------------------------------
    def issue(
        self,
        principal: str,
        kind: str = "service-account",
        *,
        members: Iterable[str] | None = None,
        scopes: Iterable[str] = (SCOPE,),
        lifetime: float | None = None,
    ) -> str:
        with self._lock:
            token = f"ya29.{kind}-{next(self._ids)}-{pysecrets.token_urlsafe(12)}"
            life = self.token_lifetime if lifetime is None else lifetime
            self.tokens[token] = Issued(
                principal=principal,
                members=frozenset(members if members is not None else (principal,)),
                scopes=frozenset(scopes),
                expiry=time.time() + life,
                kind=kind,
            )
        return token

    def service_account_token(self, email: str, **kwargs: Any) -> str:
        return self.issue(f"serviceAccount:{email}", "service-account", **kwargs)

    def caller(self, authorization: str) -> Issued | None:
        """The live token behind an ``Authorization`` value, else None."""
        if not authorization.startswith("Bearer "):
            return None
        entry = self.tokens.get(authorization[len("Bearer ") :])
        if entry is None or entry.expiry <= time.time():
            return None
        return entry

    # -- workload identity ------------------------------------------------------------
    def _pool_prefix(self) -> str:
        return (
            f"iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool}"
        )

    def federated_principal(self, namespace: str, ksa: str) -> str:
        if self.pool.endswith(".svc.id.goog"):  # GKE maps the subject to ns/<ns>/sa/<ksa>
            return f"principal://{self._pool_prefix()}/subject/ns/{namespace}/sa/{ksa}"
        # Another pool's provider, with the default mapping google.subject=assertion.sub.
        subject = f"system:serviceaccount:{namespace}:{ksa}"
        return f"principal://{self._pool_prefix()}/subject/{subject}"

    def outside_gke(self, pool: str = "on-prem", provider: str = "cluster-1") -> str:
        """Make the pool a workload identity pool of this project outside GKE, whose OIDC
        provider ``provider`` trusts the cluster's issuer and accepts its own full resource
        name as the tokens' audience (Google's default); returns that name, the STS audience.
        ``reset()`` goes back to the GKE pool."""
        self.pool = pool
        self.audience = f"//{self._pool_prefix()}/providers/{provider}"
        self.token_audience = self.audience
        return self.audience

    def federated_members(self, namespace: str, ksa: str) -> frozenset[str]:
        """Every IAM member a federated token of ``namespace/ksa`` matches."""
        members = {
            self.federated_principal(namespace, ksa),
            f"principalSet://{self._pool_prefix()}/namespace/{namespace}",
        }
        if self.pool.endswith(".svc.id.goog"):  # GKE's legacy member syntax
            members.add(f"serviceAccount:{self.pool}[{namespace}/{ksa}]")
        return frozenset(members)

    def federated_token(self, namespace: str, ksa: str, **kwargs: Any) -> str:
        """What STS hands out for a pod of ``namespace/ksa`` (for direct tests)."""
        return self.issue(
            self.federated_principal(namespace, ksa),
            "federated",
            members=self.federated_members(namespace, ksa),
            **kwargs,
        )

    # -- IAM ----------------------------------------------------------------------------
    def grant(self, resource: str, role: str, member: str) -> None:
        assert role in ROLE_PERMISSIONS, role
        with self._lock:
            self.policies.setdefault(resource, {}).setdefault(role, set()).add(member)

    def permits(self, members: Iterable[str], permission: str, *resources: str) -> bool:
        wanted = set(members)
        for resource in resources:
            for role, granted in self.policies.get(resource, {}).items():
                if permission in ROLE_PERMISSIONS[role] and wanted & granted:
                    return True
        return False

    def bind(self, gsa: str, namespace: str, ksa: str) -> None:
        """roles/iam.workloadIdentityUser on ``gsa`` for the pod's federated principal."""
        self.grant(
            service_account_resource(gsa),
            WORKLOAD_IDENTITY_USER,
            self.federated_principal(namespace, ksa),
        )

    def allow_project(self, member: str, project: str = "my-project") -> None:
        """Secret Manager and Parameter Manager read access on a whole project."""
        self.grant(f"projects/{project}", SECRET_ACCESSOR, member)
        self.grant(f"projects/{project}", PARAMETER_VIEWER, member)


class _GrpcFake:
    """Common gRPC plumbing: server, fault and latency injection, call log.

    Clients reach the server through a :class:`~keyferry_fakes.tcp_faults.ResetProxy`
    (``endpoint``), so a fault can also reset the connection in the middle of a
    response."""

    service = ""

    def __init__(self, google: FakeGoogle, location: str = "") -> None:
        self.google = google
        self.location = location
        self._lock = threading.Lock()
        self.faults = Faults()
        """Faults in call order (``where``: part of the resource name, empty for all)."""
        self.reset()
        # Secret Manager answers far more calls at once than any Mount makes: 64 workers
        # keep the fake from being what limits a 50-object Mount or the SDK floor.
        self._executor = futures.ThreadPoolExecutor(max_workers=64)
        self._server = grpc.server(self._executor)
        self._server.add_generic_rpc_handlers((self._handler(),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.proxy = ResetProxy(self.port)
        self.endpoint = self.proxy.endpoint

    def reset(self) -> None:
        """Forget calls, injected faults and latency (subclasses: and the content)."""
        self.faults.clear()
        with self._lock:
            self.calls: list[str] = []
            self.delay = 0.0
            self._barrier: threading.Barrier | None = None
            self._held = ""
        if hasattr(self, "proxy"):
            self.proxy.disarm()

    def _handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        raise NotImplementedError

    def fail(
        self,
        code: grpc.StatusCode,
        times: int | None = 1,
        message: str = "injected",
        *,
        retry_delay: float | None = None,
        where: str = "",
    ) -> None:
        """Answer ``times`` calls (``None``: every call, an outage) with ``code``, with a
        ``google.rpc.RetryInfo`` asking to wait ``retry_delay`` seconds if given."""
        asked = "" if retry_delay is None else repr(retry_delay)
        self.faults.add(
            Fault("status", times, code=code.name, retry_after=asked, where=where, text=message)
        )

    def hold(self, count: int, prefix: str) -> None:
        """From now on every call for a name starting with ``prefix`` waits until
        ``count`` such calls wait, then they all go on: a Mount that does not put
        ``count`` reads in flight at once fails (UNAVAILABLE after 30 s)."""
        with self._lock:
            self._barrier = threading.Barrier(count, timeout=30)
            self._held = prefix

    def stop(self) -> None:
        self.proxy.close()
        self._server.stop(0).wait()  # no grace: abort whatever is still in flight
        self._executor.shutdown(wait=False)

    def _begin(self, name: str, context: grpc.ServicerContext) -> Issued:
        """Count the call, apply injected faults, then authenticate it as Google does."""
        self.calls.append(name)
        self.google.counts[self.service] += 1
        if self.delay:
            time.sleep(self.delay)
        barrier = self._barrier
        if barrier is not None and name.startswith(self._held):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                context.abort(grpc.StatusCode.UNAVAILABLE, "held: too few calls in flight")
        fault = self.faults.take(name)
        if fault is not None and fault.kind == "status":
            _abort(context, grpc.StatusCode[fault.code], fault.text, fault.retry_after)
        elif fault is not None and fault.kind == "slow":
            self.faults.hold(fault)
        elif fault is not None:  # reset: the proxy cuts this call's answer
            self.proxy.arm()
        auth = str(dict(context.invocation_metadata()).get("authorization", ""))
        if not auth:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, MISSING_CREDENTIALS)
        caller = self.google.caller(auth)
        if caller is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, INVALID_CREDENTIALS)
        assert caller is not None
        if SCOPE not in caller.scopes:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, INSUFFICIENT_SCOPES)
        return caller

    def _authorize(
        self,
        caller: Issued,
        permission: str,
        name: str,
        resources: Iterable[str],
        context: grpc.ServicerContext,
    ) -> None:
        if not self.google.permits(caller.members, permission, *resources):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission '{permission}' denied for resource '{name}' (or it may not exist).",
            )


def _parse(pattern: re.Pattern[str], name: str) -> dict[str, str] | None:
    m = pattern.fullmatch(name)
    return m.groupdict() if m else None


_SM_NAME = re.compile(
    r"projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?/secrets/(?P<secret>[^/]+)"
    r"/versions/(?P<version>[^/]+)"
)
_SM_PARENT = re.compile(r"projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?")
_FILTER_TERM = re.compile(
    r'(?P<field>labels\.[a-z][a-z0-9_-]{0,62}|name)(?P<op>[=:])(?P<value>"[^"]*"|[^\s"()]+)'
)
MAX_PAGE_SIZE = 25000


class BadFilter(ValueError):
    """A ListSecrets filter outside the subset the fake reads."""


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """``(field, op, value)`` terms of a ListSecrets filter, all of which must hold."""
    terms: list[tuple[str, str, str]] = []
    for word in text.split():
        if word == "AND":
            continue
        m = _FILTER_TERM.fullmatch(word)
        if m is None or (m["field"] == "name" and m["op"] != ":"):
            raise BadFilter(f"Invalid filter: unsupported expression {word!r}")
        value = m["value"]
        if value.startswith('"'):
            value = value[1:-1]
        terms.append((m["field"], m["op"], value))
    return terms


def _matches(secret_id: str, labels: dict[str, str], terms: list[tuple[str, str, str]]) -> bool:
    for field_name, op, value in terms:
        if field_name == "name":
            if value not in secret_id:
                return False
            continue
        key = field_name.removeprefix("labels.")
        if key not in labels:
            return False
        if not (op == ":" and value == "*") and labels[key] != value:
            return False
    return True


class FakeSecretManager(_GrpcFake):
    service = "secretmanager"

    def reset(self) -> None:
        super().reset()
        self.secrets: dict[tuple[str, str], Secret] = {}
        self.page_size = 2
        """ListSecrets' page when the client asks for none (small, so clients page)."""
        self.listing_paused: threading.Event | None = None
        """Set by :meth:`pause_listing`: ListSecrets answers once it is set."""
        self.corrupt_checksum = False
        self.send_checksum = True

    def _handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        sm = secretmanager_v1
        return grpc.method_handlers_generic_handler(
            "google.cloud.secretmanager.v1.SecretManagerService",
            {
                "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                    self._access,
                    request_deserializer=sm.AccessSecretVersionRequest.deserialize,
                    response_serializer=sm.AccessSecretVersionResponse.serialize,
                ),
                "ListSecrets": grpc.unary_unary_rpc_method_handler(
                    self._list,
                    request_deserializer=sm.ListSecretsRequest.deserialize,
                    response_serializer=sm.ListSecretsResponse.serialize,
                ),
                "ListSecretVersions": grpc.unary_unary_rpc_method_handler(
                    self._list_versions,
                    request_deserializer=sm.ListSecretVersionsRequest.deserialize,
                    response_serializer=sm.ListSecretVersionsResponse.serialize,
                ),
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
        labels: dict[str, str] | None = None,
    ) -> int:
        entry = self.secrets.setdefault((project, secret), Secret())
        if labels is not None:
            entry.labels = dict(labels)
        number = max(entry.versions, default=0) + 1
        # Creation times strictly increase with the version number, as Google's do.
        last = max((v.created for v in entry.versions.values()), default=0.0)
        entry.versions[number] = Version(data, state, max(time.time(), last + 0.001))
        if alias:
            entry.aliases[alias] = number
        return number

    def set_state(self, project: str, secret: str, number: int, state: str) -> None:
        self.secrets[(project, secret)].versions[number].state = state

    def resource(self, project: str, secret: str) -> str:
        where = f"/locations/{self.location}" if self.location else ""
        return f"projects/{project}{where}/secrets/{secret}"

    def allow(self, project: str, secret: str, *members: str) -> None:
        """roles/secretmanager.secretAccessor on this one secret."""
        for member in members:
            self.google.grant(self.resource(project, secret), SECRET_ACCESSOR, member)

    def pause_listing(self) -> threading.Event:
        """From now on every ListSecrets waits (authenticated, before answering) until the
        returned event is set: a listing provably in flight, without sleeping."""
        self.listing_paused = threading.Event()
        return self.listing_paused

    def delete(self, project: str, secret: str) -> None:
        del self.secrets[(project, secret)]

    # -- RPC --------------------------------------------------------------------
    def _list_versions(self, request: Any, context: grpc.ServicerContext) -> Any:
        """ListSecretVersions: newest first, ``filter`` ``state:<STATE>`` (or none), pages of
        ``page_size`` (default 25 000) with an opaque ``page_token``; IAM
        ``secretmanager.versions.list`` on the secret or project, before existence."""
        caller = self._begin(request.parent, context)
        m = re.fullmatch(
            r"projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?/secrets/"
            r"(?P<secret>[^/]+)",
            request.parent,
        )
        if m is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid parent {request.parent}")
        assert m is not None
        if (m["location"] or "") != self.location:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The resource {request.parent} is not served by this endpoint "
                f"({self.location or 'global'}).",
            )
        numbers = {v: k for k, v in PROJECT_NUMBERS.items()}
        project_id = numbers.get(m["project"], m["project"])
        resources = (self.resource(project_id, m["secret"]), f"projects/{project_id}")
        self._authorize(caller, LIST_VERSIONS, request.parent, resources, context)
        wanted = ""
        if request.filter:
            f = re.fullmatch(r"\s*state\s*[:=]\s*(ENABLED|DISABLED|DESTROYED)\s*", request.filter)
            if f is None:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid filter '{request.filter}' (the fake knows state:<STATE>).",
                )
            assert f is not None
            wanted = f.group(1)
        entry = self.secrets.get((project_id, m["secret"]))
        number = PROJECT_NUMBERS.get(project_id, project_id)
        prefix = f"projects/{number}" + (f"/locations/{self.location}" if self.location else "")
        parent = f"{prefix}/secrets/{m['secret']}"
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{parent}] not found.")
        assert entry is not None
        if request.page_size < 0 or request.page_size > 25000:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be in [0, 25000].")
        size = request.page_size or 25000
        start = int(request.page_token) if request.page_token.isdigit() else 0
        if request.page_token and not request.page_token.isdigit():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid page token.")
        chosen = sorted(
            ((n, v) for n, v in entry.versions.items() if not wanted or v.state == wanted),
            key=lambda nv: nv[0],
            reverse=True,
        )
        page = chosen[start : start + size]
        versions = []
        for n, v in page:
            created = datetime.datetime.fromtimestamp(v.created, datetime.UTC)
            versions.append(
                secretmanager_v1.SecretVersion(
                    name=f"{parent}/versions/{n}",
                    create_time=created,
                    state=getattr(secretmanager_v1.SecretVersion.State, v.state),
                )
            )
        more = start + size < len(chosen)
        return secretmanager_v1.ListSecretVersionsResponse(
            versions=versions,
            next_page_token=str(start + size) if more else "",
            total_size=len(chosen),
        )

    def _locate(
        self, pattern: re.Pattern[str], name: str, context: grpc.ServicerContext
    ) -> tuple[dict[str, str], str, str]:
        """The name's parts, project id and location, if this endpoint serves it."""
        parts = _parse(pattern, name)
        if parts is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource name {name}")
        assert parts is not None
        location = parts["location"] or ""
        if location != self.location:
            served = self.location or "global"
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The resource {name} is not served by this endpoint ({served}).",
            )
        numbers = {v: k for k, v in PROJECT_NUMBERS.items()}
        return parts, numbers.get(parts["project"], parts["project"]), location

    def _list(self, request: Any, context: grpc.ServicerContext) -> Any:
        caller = self._begin(request.parent, context)
        _, project_id, location = self._locate(_SM_PARENT, request.parent, context)
        # Listing is granted on the project only (there is no secret to hold it on).
        self._authorize(caller, LIST_SECRETS, request.parent, [f"projects/{project_id}"], context)
        if self.listing_paused is not None:
            self.listing_paused.wait(timeout=30)
        if request.page_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative.")
        try:
            terms = parse_filter(request.filter)
        except BadFilter as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # The token is opaque to clients: the filter it was issued for is part of it.
        start = 0
        if request.page_token:
            token = _parse(re.compile(r"(?P<start>\d+)\|(?P<filter>.*)"), request.page_token)
            if token is None or token["filter"] != request.filter:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid page token.")
            assert token is not None
            start = int(token["start"])
        size = min(request.page_size or self.page_size, MAX_PAGE_SIZE)
        number = PROJECT_NUMBERS.get(project_id, project_id)
        where = f"/locations/{location}" if location else ""
        found = sorted(
            (secret_id, entry)
            for (project, secret_id), entry in self.secrets.items()
            if project == project_id and _matches(secret_id, entry.labels, terms)
        )
        page = found[start : start + size]
        more = start + size < len(found)
        return secretmanager_v1.ListSecretsResponse(
            secrets=[
                secretmanager_v1.Secret(
                    name=f"projects/{number}{where}/secrets/{secret_id}", labels=entry.labels
                )
                for secret_id, entry in page
            ],
            next_page_token=f"{start + size}|{request.filter}" if more else "",
            total_size=len(found),
        )

    def _access(self, request: Any, context: grpc.ServicerContext) -> Any:
        caller = self._begin(request.name, context)
        parts, project_id, location = self._locate(_SM_NAME, request.name, context)
        number = PROJECT_NUMBERS.get(project_id, project_id)
        prefix = f"projects/{number}" + (f"/locations/{location}" if location else "")
        secret_name = f"{prefix}/secrets/{parts['secret']}"
        # IAM before existence: without the permission a missing secret looks the same.
        resources = (self.resource(project_id, parts["secret"]), f"projects/{project_id}")
        self._authorize(caller, ACCESS_SECRET, request.name, resources, context)
        entry = self.secrets.get((project_id, parts["secret"]))
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret [{secret_name}] not found.")
        assert entry is not None
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
        self.secret_source = secrets
        super().__init__(google, location)

    def reset(self) -> None:
        super().reset()
        self.parameters: dict[tuple[str, str, str], tuple[bytes, bool]] = {}

    def _handler(self) -> grpc.GenericRpcHandler[Any, Any]:
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
        caller = self._begin(request.name, context)
        parts = _parse(_PM_NAME, request.name)
        if parts is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource name {request.name}")
        assert parts is not None
        if parts["location"] != self.location:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The resource {request.name} is not served by this endpoint ({self.location}).",
            )
        # Parameter Manager has no resource-level IAM: project grants (maybe conditional).
        numbers = {v: k for k, v in PROJECT_NUMBERS.items()}
        project_id = numbers.get(parts["project"], parts["project"])
        self._authorize(caller, RENDER_PARAMETER, request.name, [f"projects/{project_id}"], context)
        key = (project_id, parts["parameter"], parts["version"])
        found = self.parameters.get(key)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"ParameterVersion {request.name} not found")
        assert found is not None
        data, disabled = found
        if disabled:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"ParameterVersion {request.name} is disabled"
            )
        number = PROJECT_NUMBERS.get(project_id, project_id)
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
    """STS (``POST /v1/token``), IAM Credentials generateAccessToken, the OAuth2 token
    endpoint (``POST /token``, service-account keys) and the metadata server, over HTTP."""

    def __init__(self, google: FakeGoogle) -> None:
        self.google = google
        self.faults = Faults()
        """Counted faults by endpoint (``where``: ``sts``, ``iam`` or ``oauth2``): throttling,
        5xx, resets and slow answers, before the request is looked at."""
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.google.counts["metadata"] += 1
                reply: dict[str, Any]
                if self.headers.get("Metadata-Flavor") != "Google":
                    code, reply = 403, {"error": "missing Metadata-Flavor header"}
                elif path == "/computeMetadata/v1/instance/service-accounts/default/token":
                    token = fake.google.service_account_token(fake.node_account)
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
                endpoint = {"/v1/token": "sts", "/token": "oauth2"}.get(path, "iam")
                fake.requests[endpoint] += 1
                if fake.faults.apply(self, endpoint, self._fault):
                    return
                reply: dict[str, Any] | str
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

            def _fault(self, fault: Fault) -> None:
                """An injected error as Google's token endpoints word it."""
                name = "RESOURCE_EXHAUSTED" if fault.status == 429 else "UNAVAILABLE"
                body = {"error": {"code": fault.status, "message": fault.text, "status": name}}
                data = json.dumps(body).encode()
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in fault.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._serving = HTTPServing(Handler, name="fake-google-identity")
        self.url = self._serving.url
        self.sts_url = f"{self.url}/v1/token"

    def stop(self) -> None:
        self._serving.stop()

    def reset(self) -> None:
        """Forget requests, injected failures, metadata and keys (the server stays)."""
        self.faults.clear()
        self.requests: Counter[str] = Counter()
        """Every POST by endpoint (``sts``, ``iam``, ``oauth2``), faults included."""
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
        self.keys: dict[str, dict[str, rsa.RSAPublicKey]] = {}
        """Service account email -> key id -> public key (what Google keeps of a key)."""
        self.disabled_keys: set[str] = set()
        """Service accounts whose keys are disabled."""

    # -- STS -----------------------------------------------------------------------------
    def _sts(self, form: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        self.sts_requests.append({k: v for k, v in form.items() if k != "subject_token"})
        self.google.counts["sts"] += 1
        if self.fail_sts_with is not None:
            return self.fail_sts_with

        def refuse(error: str, description: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": error, "error_description": description}

        if form.get("grant_type") != TOKEN_EXCHANGE:
            return refuse(
                "unsupported_grant_type", f"Unsupported grant type: {form.get('grant_type')!r}."
            )
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            return refuse("invalid_request", 'Invalid value for "requested_token_type".')
        if form.get("subject_token_type") not in (JWT_TYPE, ID_TOKEN_TYPE):
            return refuse("invalid_request", 'Invalid value for "subject_token_type".')
        audience = form.get("audience", "")
        if not audience.startswith(("//iam.googleapis.com/", "identitynamespace:")):
            return refuse(
                "invalid_request",
                'Invalid value for "audience". This value should be the full resource name of '
                "the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/"
                "v1/TopLevel/token for the list of possible formats.",
            )
        if audience != self.google.audience:
            return refuse(
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. This '
                "might either be because the pool or provider is disabled or deleted or because "
                "it doesn't exist.",
            )
        subject_token = form.get("subject_token", "")
        try:
            claims = ISSUER.verify(subject_token, self.google.token_audience)
        except TokenRejected as exc:
            return refuse("invalid_grant", self._subject_token_reason(str(exc), subject_token))
        if claims.get("iss") != self.google.provider_issuer:
            # The cluster's issuer is not the one this pool provider is configured with.
            return refuse(
                "invalid_grant",
                f"The issuer in ID Token {claims.get('iss')} does not match the expected ones: "
                f"{self.google.provider_issuer}.",
            )
        who = service_account_of(claims)
        if who is None:
            return refuse(
                "invalid_grant",
                "The ID Token's subject is not a Kubernetes service account "
                "(system:serviceaccount:<namespace>:<name>).",
            )
        token = self.google.federated_token(*who, scopes=form.get("scope", "").split())
        return 200, {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": self.google.token_lifetime,
        }

    def _subject_token_reason(self, reason: str, token: str) -> str:
        """Google's words for why ISSUER.verify refused the subject token."""
        claims = _claims(token) or {}
        if "not a JWT" in reason:
            return "Unable to parse the ID Token."
        if "signature" in reason or "JWKS" in reason:
            return "Invalid ID Token signature: the token is not signed by a key of the issuer."
        if "issuer" in reason:
            return (
                f"The issuer in ID Token {claims.get('iss')} does not match the expected ones: "
                f"{self.google.provider_issuer}."
            )
        if "audience" in reason:
            return (
                f"The audience in ID Token {claims.get('aud')} does not match the expected "
                f"audience {self.google.token_audience}."
            )
        if "expired" in reason:
            return f"ID Token issued at {claims.get('iat')} is stale to sign-in."
        return f"The ID Token is invalid: {reason}."

    # -- OAuth2 token endpoint (service-account keys) -------------------------------------
    def service_account_key(self, email: str, key_id: str | None = None) -> str:
        """A new key for ``email`` as the key.json Google hands out; its public half is
        registered here, as Google keeps it."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = key_id or pysecrets.token_hex(20)
        self.keys.setdefault(email, {})[kid] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": kid,
                "private_key": pem,
                "client_email": email,
                "client_id": "1",
                "token_uri": "https://attacker.example/token",
            }
        )

    def _oauth2(self, form: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        """The JWT bearer grant: the assertion must be signed by a registered, enabled key of
        its issuer, addressed to this endpoint, short-lived and carry a scope."""
        self.google.counts["oauth2"] += 1
        if self.fail_oauth2_with is not None:
            return self.fail_oauth2_with

        def refuse(description: str, error: str = "invalid_grant") -> tuple[int, dict[str, Any]]:
            return 400, {"error": error, "error_description": description}

        if form.get("grant_type") != JWT_BEARER:
            return refuse("Invalid grant type.", "unsupported_grant_type")
        assertion = form.get("assertion", "")
        header, claims = _header(assertion), _claims(assertion)
        if header is None or claims is None or assertion.count(".") != 2:
            return refuse("Invalid JWT.")
        email = str(claims.get("iss", ""))
        keys = self.keys.get(email)
        if not keys:
            return refuse("Invalid grant: account not found")
        public = keys.get(str(header.get("kid", "")))
        if public is None or email in self.disabled_keys or header.get("alg") != "RS256":
            return refuse("Invalid JWT Signature.")
        head, body, sig = assertion.split(".")
        try:
            public.verify(
                _unb64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return refuse("Invalid JWT Signature.")
        if claims.get("aud") not in OAUTH2_AUDIENCES:
            # google-auth addresses the assertion to Google's endpoint whatever token_uri is.
            return refuse(
                f"Invalid JWT: Failed audience check. The right audience is {OAUTH2_AUDIENCES[0]}"
            )
        now = time.time()
        iat, exp = float(claims.get("iat", 0)), float(claims.get("exp", 0))
        if not (iat - 300 <= now < exp and exp - iat <= 3600):
            return refuse(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim."
            )
        scopes = str(claims.get("scope", "")).split()
        if not scopes:
            return refuse("Invalid OAuth scope or ID token audience provided.", "invalid_scope")
        token = self.google.service_account_token(email, scopes=scopes)
        return 200, {
            "access_token": token,
            "expires_in": self.google.token_lifetime,
            "token_type": "Bearer",
        }

    # -- IAM Credentials ----------------------------------------------------------------
    def _iam(
        self, gsa: str, authorization: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | str]:
        self.iam_requests.append({"gsa": gsa, **body})
        self.google.counts["iam"] += 1
        if self.fail_iam_with is not None:
            return self.fail_iam_with
        if not authorization:
            return 401, _iam_error(401, "UNAUTHENTICATED", MISSING_CREDENTIALS)
        caller = self.google.caller(authorization)
        if caller is None:
            return 401, _iam_error(401, "UNAUTHENTICATED", INVALID_CREDENTIALS)
        if SCOPE not in caller.scopes:
            return 403, _iam_error(403, "PERMISSION_DENIED", INSUFFICIENT_SCOPES)
        scopes = body.get("scope")
        if not isinstance(scopes, list) or not scopes:
            return 400, _iam_error(400, "INVALID_ARGUMENT", "Scope required.")
        lifetime = str(body.get("lifetime", "3600s"))
        seconds = float(lifetime[:-1]) if re.fullmatch(r"\d+(\.\d+)?s", lifetime) else -1.0
        if not 0 < seconds <= 3600:
            return 400, _iam_error(
                400,
                "INVALID_ARGUMENT",
                "The lifetime must be between 1s and 3600s (longer lifetimes need the "
                "constraints/iam.allowServiceAccountCredentialLifetimeExtension policy).",
            )
        # The caller needs getAccessToken on the first account of the chain, each
        # delegate on the next one.
        chain = [
            str(d).removeprefix("projects/-/serviceAccounts/") for d in body.get("delegates") or []
        ]
        members: Iterable[str] = caller.members
        for account in [*chain, gsa]:
            if not self.google.permits(
                members, GET_ACCESS_TOKEN, service_account_resource(account)
            ):
                return 403, _iam_error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission '{GET_ACCESS_TOKEN}' denied on resource (or it may not exist).",
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "IAM_PERMISSION_DENIED",
                            "domain": "iam.googleapis.com",
                            "metadata": {"permission": GET_ACCESS_TOKEN},
                        }
                    ],
                )
            members = (f"serviceAccount:{account}",)
        token = self.google.service_account_token(gsa, scopes=scopes, lifetime=seconds)
        expire = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
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
        """The driver's tokens attribute entry for the pool audience (signed by ISSUER)."""
        return {
            self.google.token_audience: pod_token(
                namespace, ksa, self.google.token_audience, **kwargs
            )
        }

    def reset(self) -> None:
        """Every fake of the stack back to its just-constructed state (same endpoints)."""
        self.google.reset()
        self.identity.reset()
        for fake in (
            self.secret_manager,
            self.parameter_manager,
            *self.regional.values(),
            *self.regional_parameters.values(),
        ):
            fake.reset()

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
