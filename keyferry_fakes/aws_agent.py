"""A stand-in for the EKS Pod Identity agent on a loopback address, as strict as the
real one.

``GET /v1/credentials`` with ``Authorization: <the pod's token>``:

- no token → 400 ``Service account token cannot be empty``; a token that is not a
  JWT → 400 ``... cannot be parsed``; an expired one → 400 ``... failed basic claim
  validations`` (the agent's own checks);
- a token the cluster did not sign for ``pods.eks.amazonaws.com`` (other key, other
  issuer, other audience) → 400 ``InvalidTokenException`` (EKS Auth's answer,
  passed on by the agent with its HTTP status);
- a ServiceAccount without a Pod Identity association (:meth:`associate`) → 404
  ``ResourceNotFoundException`` (EKS Auth's status, passed on);
- otherwise the container-credentials JSON botocore expects, with credentials for
  the associated role obtained from moto's STS through
  :meth:`AwsFaults.assume_role`, so the strict proxy accepts them (and nothing else).

Records every Authorization header it saw (``seen``) and the credentials it handed
out (``issued``).
"""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from keyferry_fakes.aws_faults import ACCOUNT, AwsFaults, Issued
from keyferry_fakes.faults import Faults
from keyferry_fakes.oidc import ISSUER, TokenRejected, service_account_of
from keyferry_fakes.serving import HTTPServing

POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"


class PodIdentityAgent:
    def __init__(self, proxy: AwsFaults, *, host: str = "127.0.0.1", status: int = 200) -> None:
        self.proxy = proxy
        self.status = status
        """Anything but 200: answer every valid request with this status (injection)."""
        self.faults = Faults()
        """Counted faults before the token is looked at: throttling, 5xx, resets, slow."""
        self.associations: dict[tuple[str, str], str] = {}
        self.seen: list[str] = []
        self.issued: list[Issued] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                agent.seen.append(auth)
                if self.path != "/v1/credentials":
                    self._send(404, "Not Found")
                    return
                if agent.faults.apply(
                    self, self.path, lambda f: self._send(f.status, f.text, f.headers)
                ):
                    return
                status, body = agent._answer(auth)
                self._send(status, body)

            def _send(self, code: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(code)
                ctype = "application/json" if code == 200 else "text/plain; charset=utf-8"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._serving = HTTPServing(Handler, host=host, name="fake-pod-identity-agent")
        self.url = f"{self._serving.url}/v1/credentials"

    def associate(self, namespace: str, service_account: str, role_arn: str) -> None:
        """``aws eks create-pod-identity-association`` for one ServiceAccount."""
        self.associations[(namespace, service_account)] = role_arn

    def _answer(self, token: str) -> tuple[int, str]:
        if not token:
            return 400, "Service account token cannot be empty"
        try:
            claims = ISSUER.verify(token, POD_IDENTITY_AUDIENCE)
        except TokenRejected as exc:
            reason = str(exc)
            if "not a JWT" in reason:
                return 400, "Service account token cannot be parsed: token is malformed"
            if "expired" in reason:
                return 400, (
                    "Service account token failed basic claim validations: "
                    "token has invalid claims: token is expired"
                )
            return 400, _eks_auth_error("InvalidTokenException", f"Invalid token: {reason}")
        principal = service_account_of(claims)
        role = self.associations.get(principal) if principal else None
        if principal is None or role is None:
            ns, sa = principal or ("?", "?")
            return 404, _eks_auth_error(
                "ResourceNotFoundException",
                f"No Pod Identity Association found for service account {ns}/{sa}",
            )
        if self.status != 200:
            return self.status, "injected"
        pod = str(claims.get("kubernetes.io", {}).get("pod", {}).get("name", "pod"))
        try:
            issued = self.proxy.assume_role(role, f"eks-cluster-{pod}")
        except Exception as exc:  # EKS Auth (moto) unreachable: the agent answers 500
            return 500, _eks_auth_error("InternalServerException", type(exc).__name__)
        self.issued.append(issued)
        expires = datetime.fromtimestamp(issued.expires, UTC)
        return 200, json.dumps(
            {
                "AccessKeyId": issued.access_key,
                "SecretAccessKey": issued.secret_key,
                "Token": issued.session_token,
                "AccountId": ACCOUNT,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def close(self) -> None:
        self.faults.clear()
        self._serving.stop()


def _eks_auth_error(code: str, message: str) -> str:
    """How the agent passes on an EKS Auth API error (with its HTTP status)."""
    return f"[{uuid.uuid4()}]: ({code}): {message}, fault: client"


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
