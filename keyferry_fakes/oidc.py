"""A fake Kubernetes ServiceAccount token issuer, and the check the clouds make.

Real ServiceAccount tokens are RS256 JWTs signed by the cluster's key; AWS STS,
Google STS and Entra ID fetch the issuer's JWKS and verify the signature, the
issuer, the audience, the expiry and (through the trust policy / federated
credential / pool mapping) the subject. ``ISSUER`` plays the cluster: it mints
tokens as kubelet projects them (``pod_token``), and ``verify`` is what every fake
identity endpoint calls, so a forged, expired, wrong-audience or wrong-issuer
token is refused there exactly as the cloud would refuse it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER_URL = "https://oidc.cluster.test/id/CLUSTER1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenRejected(Exception):
    """Why an identity endpoint refuses a token (its message is the service's reason)."""


@dataclass
class Issuer:
    url: str = ISSUER_URL

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def pod_token(
        self,
        audience: str,
        namespace: str = "team-a",
        service_account: str = "web",
        *,
        pod: str | None = "web-0",
        lifetime: int = 3600,
        issuer: str | None = None,
        subject: str | None = None,
    ) -> str:
        """A projected ServiceAccount token as kubelet hands it to the driver; with
        ``pod=None`` one bound to no pod, as a TokenRequest without a ``boundObjectRef``
        returns it (what the secrets-store-sync-controller sends)."""
        now = int(time.time())
        bound: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
        }
        if pod is not None:
            bound["pod"] = {"name": pod, "uid": str(uuid.uuid4())}
        return self.sign(
            {
                "aud": [audience],
                "exp": now + lifetime,
                "iat": now,
                "nbf": now,
                "iss": issuer or self.url,
                "sub": subject or f"system:serviceaccount:{namespace}:{service_account}",
                "kubernetes.io": bound,
            }
        )

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a token this issuer signed for ``audience``, still valid;
        else TokenRejected with the reason a cloud's identity service gives."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenRejected("the token is not a JWT")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, json.JSONDecodeError) as exc:
            raise TokenRejected("the token is not a JWT") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TokenRejected("the token is not a JWT")
        if header.get("alg") != "RS256" or header.get("kid") != self.kid:
            raise TokenRejected("the token is not signed with a key of the issuer's JWKS")
        try:
            self._key.public_key().verify(
                sig, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise TokenRejected("the token signature is invalid") from exc
        if claims.get("iss") != self.url:
            raise TokenRejected(f"the issuer {claims.get('iss')!r} is not trusted")
        aud = claims.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise TokenRejected(f"the token's audience is not {audience!r}")
        now = time.time()
        if float(claims.get("exp", 0)) <= now:
            raise TokenRejected("the token has expired")
        if float(claims.get("nbf", 0)) > now + 60:
            raise TokenRejected("the token is not valid yet")
        return claims


ISSUER = Issuer()
"""The one cluster every test runs in."""


def service_account_of(claims: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount token's subject, else None."""
    sub = str(claims.get("sub", ""))
    parts = sub.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] and all(parts[2:]):
        return parts[2], parts[3]
    return None
