"""AWS test doubles on 127.0.0.1: a shared moto server and a strict, fault-injecting proxy.

``moto_url()`` starts one moto server (what ``moto.server.ThreadedMotoServer`` runs) for
the whole test run (tests use unique secret names, so they never see each other's data);
``stop_moto()`` ends it.

:class:`AwsFaults` is an HTTP proxy in front of moto. Moto accepts any web
identity token and any credentials; the proxy enforces what AWS enforces:

- ``AssumeRoleWithWebIdentity``: the WebIdentityToken must be one the cluster
  issued (``ISSUER.verify(token, "sts.amazonaws.com")``: signature, issuer,
  audience, expiry), else 400 ``InvalidIdentityToken`` / ``ExpiredTokenException``;
  and the role's trust policy (:meth:`AwsFaults.trust`, the IRSA policy's
  ``<issuer>:sub`` condition) must name the token's ServiceAccount, else 403
  ``AccessDenied``. The credentials STS hands out are recorded.
- every other request must be SigV4-signed with credentials the fake identity
  issued (by that STS, by :meth:`AwsFaults.assume_role` for the Pod Identity
  agent, or registered with :meth:`AwsFaults.register_static` for a node role),
  with the matching ``X-Amz-Security-Token`` and a signature recomputed with
  botocore's SigV4 from the recorded secret key: else
  ``MissingAuthenticationTokenException``, ``UnrecognizedClientException``,
  ``ExpiredTokenException`` or ``InvalidSignatureException`` (400, as Secrets
  Manager and SSM answer; STS's query API answers 403 ``InvalidClientTokenId`` /
  ``SignatureDoesNotMatch``);
- then IAM (:attr:`AwsFaults.iam`, :mod:`keyferry_fakes.aws_iam`): ``sts:AssumeRole`` only
  when the target role's trust policy names the calling role (and its ExternalId), a
  chained session at most an hour; any call outside a role's identity policy, for a role
  given one, is AccessDenied. The credentials AssumeRole hands out are recorded too;
- ``ListSecretVersionIds`` answers as Secrets Manager does (creation dates, deprecated
  versions only on request, ResourceNotFoundException for a missing secret).

Permissions: reading a named secret or parameter is allowed to every issued identity
(tests deny it with :meth:`AwsFaults.fail`), but the list actions are not: as in IAM, a
role may call ``secretsmanager:ListSecrets`` (also needed for ``BatchGetSecretValue``
with ``Filters``) or ``ssm:GetParametersByPath`` only once :meth:`AwsFaults.grant` gave
it that action, else 400 ``AccessDeniedException`` "... is not authorized to perform:
<action> ...", the message AWS sends. Both are decided by :class:`.aws_iam.Iam`, with the
trust and identity policies.

It also records every request (operation, region from the SigV4 credential
scope, headers, body) so tests can count API calls and see exactly what was sent
(e.g. the WebIdentityToken), and answers chosen operations with chosen errors
(AccessDenied, throttling, 5xx), optionally only in one region and only a number
of times. Refusals by the checks above are recorded too (``refusals``).
"""

from __future__ import annotations

import base64
import calendar
import fnmatch
import functools
import hmac
import http.client
import json
import math
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape as xml_escape

from keyferry_fakes.aws_iam import Iam
from keyferry_fakes.faults import Fault, Faults
from keyferry_fakes.oidc import ISSUER, TokenRejected, service_account_of
from keyferry_fakes.serving import HTTPServing, Serving

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
IRSA_AUDIENCE = "sts.amazonaws.com"
UNSIGNED_OPERATIONS = frozenset({"AssumeRoleWithWebIdentity"})
"""STS operations AWS accepts without SigV4 (the token is the credential)."""
_ISSUING = ("AssumeRoleWithWebIdentity", "AssumeRole")
"""STS operations whose answer holds credentials the fake then accepts."""
_CLOCK_SKEW = 15 * 60
_moto: Serving | None = None
_moto_url = ""
_lock = threading.Lock()

ACCOUNT = "123456789012"
_DEFAULT_CODES = {
    400: "ThrottlingException",
    429: "TooManyRequestsException",
    500: "InternalServiceError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
"""The error code an injected status answers with when none is given."""


def moto_url() -> str:
    """URL of the shared moto server, started on first use.

    What ``moto.server.ThreadedMotoServer`` builds (moto's WSGI app in werkzeug's
    threaded server), run by :class:`Serving` so that :func:`stop_moto` does not wait
    for werkzeug's half-second shutdown poll."""
    global _moto, _moto_url
    with _lock:
        if _moto is None:
            import logging

            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            logging.getLogger("werkzeug").setLevel(logging.ERROR)

            app = DomainDispatcherApplication(create_backend_app)
            server = make_server(
                "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler
            )
            _moto = Serving(server, name="moto")
            _moto_url = f"http://127.0.0.1:{server.server_port}"
        return _moto_url


def stop_moto() -> None:
    """Stop the shared moto server (its data goes with it); the next moto_url() starts
    a new one."""
    global _moto, _moto_url
    with _lock:
        if _moto is not None:
            _moto.stop()
            _moto, _moto_url = None, ""


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


@dataclass(frozen=True)
class Issued:
    """Credentials the fake identity handed out (and so the only ones accepted)."""

    access_key: str
    secret_key: str
    session_token: str
    """Empty for static (long-term) keys."""
    role_arn: str
    expires: float
    """Epoch seconds; ``math.inf`` for static keys."""
    source: str
    """``AssumeRoleWithWebIdentity``, ``pod-identity`` or ``static``."""


@dataclass(frozen=True)
class Refusal:
    """A request the strict checks turned away (before moto saw it)."""

    operation: str
    status: int
    code: str
    message: str


def _epoch(iso: str) -> float:
    """``2026-11-29T18:16:20.020389Z`` / ``...20Z`` as epoch seconds."""
    text = iso.strip().rstrip("Z").split(".")[0]
    return float(calendar.timegm(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timetuple()))


def _unverified_exp(token: str) -> int:
    """The ``exp`` claim of a JWT, unverified (for STS's expiry message only)."""
    try:
        payload = token.split(".")[1]
        return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return 0


def _sts_credentials(xml: bytes) -> dict[str, str]:
    root = ET.fromstring(xml)
    node = root.find(".//{*}Credentials")
    if node is None:
        return {}
    return {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in node}


def _list_secret_version_ids(request: bytes, answer: bytes) -> bytes:
    """Moto's ListSecretVersionIds, made to answer as Secrets Manager does: moto dates every
    version "now" and ignores ``IncludeDeprecated``. Moto keeps versions oldest first, so
    each gets a CreatedDate one millisecond after the one before; versions without a
    staging label (deprecated) are listed only with ``IncludeDeprecated: true``."""
    asked = json.loads(request or b"{}")
    doc = json.loads(answer)
    versions = doc.get("Versions", [])
    for i, version in enumerate(versions):
        version["CreatedDate"] = float(version.get("CreatedDate", 0)) + i / 1000
    if not asked.get("IncludeDeprecated"):
        doc["Versions"] = [v for v in versions if v.get("VersionStages")]
    return json.dumps(doc).encode()


def sigv4_signature(
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    *,
    signed_headers: list[str],
    access_key: str,
    secret_key: str,
    session_token: str,
    region: str,
    service: str,
    amz_date: str,
) -> str:
    """The SigV4 signature botocore would compute for this request (only the headers
    the client signed, at the time it signed)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    chosen = {name: lower.get(name, "") for name in signed_headers}
    host = lower.get("host", "")
    request = AWSRequest(method=method, url=f"http://{host}{path}", headers=chosen, data=body)
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(access_key, secret_key, session_token or None), service, region)
    canonical = auth.canonical_request(request)
    return str(auth.signature(auth.string_to_sign(request, canonical), request))


@dataclass
class AwsFaults:
    upstream: str
    requests: list[Recorded] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    url: str = ""
    delay: dict[str, float] = field(default_factory=dict)
    """operation -> seconds to hold the request before forwarding (latency injection)."""
    trusts: dict[str, set[str]] = field(default_factory=dict)
    """role ARN -> ``system:serviceaccount:<ns>:<sa>`` patterns its trust policy allows."""
    issued: dict[str, Issued] = field(default_factory=dict)
    """access key id -> the credentials the fake identity issued."""
    refusals: list[Refusal] = field(default_factory=list)
    iam: Iam = field(default_factory=Iam)
    """Role-to-role trust (sts:AssumeRole) and identity policies (:mod:`.aws_iam`)."""
    faults: Faults = field(default_factory=Faults)
    """Throttling, 5xx, resets and slow answers by operation (``where``), applied to
    requests that pass the identity checks and match no :class:`Rule`."""

    def __post_init__(self) -> None:
        proxy = self
        target = urlsplit(self.upstream)
        host, port = target.hostname or "127.0.0.1", target.port

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
                refusal = proxy._authenticate(self.command, self.path, rec)
                if refusal is None:
                    refusal = proxy._validate(rec)
                if refusal is not None:
                    self._error(
                        Rule(rec.operation, refusal.status, refusal.code, refusal.message), rec
                    )
                    return
                rule = proxy._match(rec)
                if rec.operation in proxy.delay:
                    time.sleep(proxy.delay[rec.operation])
                if rule is not None:
                    self._error(rule, rec)
                    return

                def answer(fault: Fault) -> None:
                    code = fault.code or _DEFAULT_CODES.get(fault.status, "InternalFailure")
                    self._error(Rule(rec.operation, fault.status, code), rec, fault.headers)

                ctype = "text/xml" if rec.service == "sts" else "application/x-amz-json-1.1"
                if proxy.faults.apply(self, rec.operation, answer, ctype):
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                if rec.operation == "ListSecretVersionIds":
                    # Moto answers 500 (a KeyError) for a secret that does not exist; AWS
                    # answers ResourceNotFoundException, as DescribeSecret does.
                    described = dict(headers, **{"X-Amz-Target": "secretsmanager.DescribeSecret"})
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    conn.request(self.command, self.path, body=body, headers=described)
                    check = conn.getresponse()
                    check.read()
                    conn.close()
                    if 400 <= check.status < 500:  # moto: 404
                        missing = "Secrets Manager can't find the specified secret."
                        self._error(
                            Rule(rec.operation, 400, "ResourceNotFoundException", missing), rec
                        )
                        return
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if rec.operation == "ListSecretVersionIds" and resp.status == 200:
                    data = _list_secret_version_ids(rec.body, data)
                if rec.operation in _ISSUING and resp.status == 200:
                    proxy._issued_by_sts(rec, data)
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _error(
                self, rule: Rule, rec: Recorded, headers: dict[str, str] | None = None
            ) -> None:
                if rec.service == "sts" or not self.headers.get("X-Amz-Target"):
                    message = xml_escape(rule.message)
                    data = (
                        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                        f"<Error><Type>Sender</Type><Code>{rule.code}</Code>"
                        f"<Message>{message}</Message></Error>"
                        "<RequestId>injected</RequestId></ErrorResponse>"
                    ).encode()
                    ctype = "text/xml"
                else:
                    data = json.dumps({"__type": rule.code, "message": rule.message}).encode()
                    ctype = "application/x-amz-json-1.1"
                self.send_response(rule.status)
                self.send_header("Content-Type", ctype)
                self.send_header("x-amzn-ErrorType", rule.code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._mutex = threading.Lock()
        self._serving = HTTPServing(Handler, name="fake-aws")
        self.url = self._serving.url

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

    # ------------------------------------------------------------ identity

    def trust(self, role_arn: str, namespace: str, service_account: str) -> None:
        """Let ``role_arn``'s trust policy allow sts:AssumeRoleWithWebIdentity for
        ``system:serviceaccount:<namespace>:<service_account>`` of the cluster's OIDC
        provider (``*`` patterns as with StringLike)."""
        with self._mutex:
            self.trusts.setdefault(role_arn, set()).add(
                f"system:serviceaccount:{namespace}:{service_account}"
            )

    def register_static(
        self, access_key: str, secret_key: str, role_arn: str = f"arn:aws:iam::{ACCOUNT}:role/node"
    ) -> Issued:
        """Accept long-term keys (the node role's, for allow_node_identity tests)."""
        issued = Issued(access_key, secret_key, "", role_arn, math.inf, "static")
        with self._mutex:
            self.issued[access_key] = issued
        return issued

    def assume_role(self, role_arn: str, session_name: str, source: str = "pod-identity") -> Issued:
        """Credentials for ``role_arn`` from moto's STS (as EKS Auth's
        AssumeRoleForPodIdentity hands the agent), recorded as issued. Not a request
        through the proxy, so it never shows in ``requests``."""
        import boto3

        sts = boto3.client(
            "sts",
            endpoint_url=self.upstream,
            region_name="us-east-1",
            aws_access_key_id="eks-auth",
            aws_secret_access_key="eks-auth",
        )
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name[:64])["Credentials"]
        issued = Issued(
            creds["AccessKeyId"],
            creds["SecretAccessKey"],
            creds["SessionToken"],
            role_arn,
            creds["Expiration"].timestamp(),
            source,
        )
        with self._mutex:
            self.issued[issued.access_key] = issued
        return issued

    def grant(self, role_arn: str, *actions: str) -> None:
        """Let ``role_arn`` call the list ``actions`` (:data:`.aws_iam.LIST_ACTIONS`)."""
        self.iam.grant(role_arn, *actions)

    def _validate(self, rec: Recorded) -> Refusal | None:
        """What moto lets through and AWS refuses: ListSecrets filter values outside the
        pattern of botocore's model (``FilterValueStringType``)."""
        if rec.operation != "ListSecrets":
            return None
        filters = json.loads(rec.body or b"{}").get("Filters") or []
        pattern, longest = _filter_value_shape()
        for i, item in enumerate(filters, 1):
            values = item.get("Values") or []
            if all(re.fullmatch(pattern, v) and len(v) <= longest for v in values):
                continue
            return self._refuse(
                rec,
                400,
                "ValidationException",
                f"1 validation error detected: Value '[{', '.join(values)}]' at "
                f"'filters.{i}.member.values' failed to satisfy constraint: Member must satisfy "
                f"constraint: [Member must have length less than or equal to {longest}, Member "
                "must have length greater than or equal to 0, Member must satisfy regular "
                f"expression pattern: {pattern}]",
            )
        return None

    def role_of(self, access_key: str) -> str | None:
        with self._mutex:
            issued = self.issued.get(access_key)
        return issued.role_arn if issued else None

    def _refuse(self, rec: Recorded, status: int, code: str, message: str) -> Refusal:
        refusal = Refusal(rec.operation, status, code, message)
        with self._mutex:
            self.refusals.append(refusal)
        return refusal

    def _authenticate(self, method: str, path: str, rec: Recorded) -> Refusal | None:
        if rec.operation in UNSIGNED_OPERATIONS:
            return self._check_web_identity(rec)
        refusal = self._check_signature(method, path, rec)
        if refusal is not None:
            return refusal
        # The signature check found the header well-formed and the credentials issued.
        m = _AUTH.match({k.lower(): v for k, v in rec.headers.items()}.get("authorization", ""))
        with self._mutex:
            caller = self.issued.get(m["key"]) if m else None
        if m is None or caller is None:
            return None
        json_api = bool(rec.headers.get("X-Amz-Target"))
        denial = self.iam.authorize(
            caller.role_arn, m["service"], rec.operation, rec.body, json_api
        )
        if denial is None and rec.operation == "AssumeRole":
            denial = self.iam.assume_role(caller.role_arn, bool(caller.session_token), rec.body)
        if denial is None:
            return None
        return self._refuse(rec, denial.status, denial.code, denial.message)

    def _check_web_identity(self, rec: Recorded) -> Refusal | None:
        form = {k: v[0] for k, v in parse_qs(rec.body.decode("utf-8", "replace")).items()}
        token = form.get("WebIdentityToken", "")
        try:
            claims = ISSUER.verify(token, IRSA_AUDIENCE)
        except TokenRejected as exc:
            if "expired" in str(exc):
                return self._refuse(
                    rec,
                    400,
                    "ExpiredTokenException",
                    f"Token expired: current date/time {int(time.time())} must be before the "
                    f"expiration date/time {_unverified_exp(token)}",
                )
            return self._refuse(rec, 400, "InvalidIdentityToken", f"Invalid token: {exc}")
        subject = str(claims.get("sub", ""))
        role = form.get("RoleArn", "")
        with self._mutex:
            allowed = set(self.trusts.get(role, ()))
        if service_account_of(claims) is None or not any(
            fnmatch.fnmatchcase(subject, pattern) for pattern in allowed
        ):
            return self._refuse(
                rec, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"
            )
        return None

    def _issued_by_sts(self, rec: Recorded, data: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(rec.body.decode("utf-8", "replace")).items()}
        creds = _sts_credentials(data)
        if not creds.get("AccessKeyId"):
            return
        issued = Issued(
            creds["AccessKeyId"],
            creds.get("SecretAccessKey", ""),
            creds.get("SessionToken", ""),
            form.get("RoleArn", ""),
            _epoch(creds.get("Expiration", "1970-01-01T00:00:00Z")),
            rec.operation,
        )
        with self._mutex:
            self.issued[issued.access_key] = issued

    def _check_signature(self, method: str, path: str, rec: Recorded) -> Refusal | None:
        json_api = bool(rec.headers.get("X-Amz-Target"))
        lower = {k.lower(): v for k, v in rec.headers.items()}

        def refuse(json_code: str, query_code: str, message: str) -> Refusal:
            if json_api:
                return self._refuse(rec, 400, json_code, message)
            return self._refuse(rec, 403, query_code, message)

        auth = lower.get("authorization", "")
        if not auth:
            return refuse(
                "MissingAuthenticationTokenException",
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            )
        m = _AUTH.match(auth)
        amz_date = lower.get("x-amz-date", "")
        if m is None or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
            return refuse(
                "IncompleteSignatureException",
                "IncompleteSignature",
                "Authorization header requires a well-formed SigV4 Credential, SignedHeaders, "
                "Signature and an X-Amz-Date header",
            )
        with self._mutex:
            issued = self.issued.get(m["key"])
        invalid = "The security token included in the request is invalid."
        if issued is None:
            return refuse("UnrecognizedClientException", "InvalidClientTokenId", invalid)
        if lower.get("x-amz-security-token", "") != issued.session_token:
            return refuse("UnrecognizedClientException", "InvalidClientTokenId", invalid)
        if issued.expires <= time.time():
            return refuse(
                "ExpiredTokenException",
                "ExpiredToken",
                "The security token included in the request is expired",
            )
        signed = m["signed"].split(";")
        if "host" not in signed or (issued.session_token and "x-amz-security-token" not in signed):
            return refuse(
                "IncompleteSignatureException",
                "IncompleteSignature",
                "the signed headers must include host (and x-amz-security-token)",
            )
        mismatch = (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details."
        )
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        if m["date"] != amz_date[:8] or abs(time.time() - signed_at) > _CLOCK_SKEW:
            return refuse(
                "InvalidSignatureException",
                "SignatureDoesNotMatch",
                "Signature expired or not yet current: the request time is more than 15 "
                "minutes from the server time",
            )
        expected = sigv4_signature(
            method,
            path,
            rec.headers,
            rec.body,
            signed_headers=signed,
            access_key=issued.access_key,
            secret_key=issued.secret_key,
            session_token=issued.session_token,
            region=m["region"],
            service=m["service"],
            amz_date=amz_date,
        )
        if not hmac.compare_digest(expected, m["signature"]):
            return refuse("InvalidSignatureException", "SignatureDoesNotMatch", mismatch)
        return None

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
        """Forget rules, faults, requests and refusals (trust policies and issued credentials
        stay)."""
        self.faults.clear()
        with self._mutex:
            self.rules.clear()
            self.requests.clear()
            self.refusals.clear()

    def reset(self) -> None:
        """Back to the state of a new proxy: no rules, delays, trust policies, grants or
        issued credentials, nothing recorded. The proxy keeps its URL; moto keeps its data
        (tests name what they create uniquely)."""
        with self._mutex:
            self.rules.clear()
            self.requests.clear()
            self.refusals.clear()
            self.delay.clear()
            self.trusts.clear()
            self.issued.clear()
        self.iam.reset()
        self.faults.clear()

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
        self._serving.stop()


@contextmanager
def aws_faults() -> Iterator[AwsFaults]:
    proxy = AwsFaults(moto_url())
    try:
        yield proxy
    finally:
        proxy.close()


@functools.cache
def _filter_value_shape() -> tuple[str, int]:
    """(pattern, maximum length) of a ListSecrets filter value, from botocore's model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("secretsmanager")
    shape = model.shape_for("FilterValueStringType").metadata
    return str(shape["pattern"]), int(shape["max"])


def seed_clients(region: str = "us-east-1", account: str = ACCOUNT) -> tuple[Any, Any]:
    """boto3 clients talking to moto directly (for test setup only), in moto's default
    account or, for cross-account tests, in ``account`` (moto keeps each account's data
    apart and serves credentials of a role in that account from it)."""
    import boto3

    kwargs = {
        "endpoint_url": moto_url(),
        "region_name": region,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    if account != ACCOUNT:
        sts = boto3.client("sts", **kwargs)
        creds = sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/keyferry-seed", RoleSessionName="seed"
        )["Credentials"]
        kwargs["aws_access_key_id"] = creds["AccessKeyId"]
        kwargs["aws_secret_access_key"] = creds["SecretAccessKey"]
        kwargs["aws_session_token"] = creds["SessionToken"]
    return boto3.client("secretsmanager", **kwargs), boto3.client("ssm", **kwargs)
