"""Certificates for the Azure tests, generated with ``cryptography``: a 3-level
chain (root → intermediate → leaf) with key identifiers, RSA or EC keys, PFX and
PEM forms, and JSON Web Keys as Key Vault returns them."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

_START = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def new_key(kind: str = "rsa") -> PrivateKeyTypes:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


def _cert(
    cn: str,
    key: PrivateKeyTypes,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKeyTypes,
    *,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(_START)
        .not_valid_after(_START + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)  # type: ignore[arg-type]
    )
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


@dataclass
class Chain:
    root_key: PrivateKeyTypes
    root: x509.Certificate
    inter_key: PrivateKeyTypes
    inter: x509.Certificate
    key: PrivateKeyTypes
    leaf: x509.Certificate

    def pem(self, cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """PKCS#8 ``PRIVATE KEY``, as the official provider writes the key."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def ordered_pem(self) -> bytes:
        return self.pem(self.leaf) + self.pem(self.inter) + self.pem(self.root)

    def pfx(
        self,
        cas: list[x509.Certificate] | None = None,
        *,
        with_key: bool = True,
        with_leaf: bool = True,
    ) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            b"cert",
            self.key if with_key else None,  # type: ignore[arg-type]
            self.leaf if with_leaf else None,
            cas,
            serialization.NoEncryption(),
        )

    def pfx_value(self, cas: list[x509.Certificate] | None = None, **kw: Any) -> str:
        """The PFX as Key Vault stores it in the backing secret: base64 text."""
        return base64.b64encode(self.pfx(cas, **kw)).decode()


def chain(kind: str = "rsa") -> Chain:
    root_key = new_key(kind)
    root = _cert("Test Root", root_key, None, root_key, ca=True)
    inter_key = new_key(kind)
    inter = _cert("Test Intermediate", inter_key, root, root_key, ca=True)
    key = new_key(kind)
    leaf = _cert("www.example.test", key, inter, inter_key, ca=False)
    return Chain(root_key, root, inter_key, inter, key, leaf)


def _b64url(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(key: PrivateKeyTypes, *, hsm: bool = False) -> dict[str, Any]:
    """The public JSON Web Key Key Vault returns for ``key``."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {
            "kty": "RSA-HSM" if hsm else "RSA",
            "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
            "n": _b64url(numbers.n),
            "e": _b64url(numbers.e),
        }
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    point = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]

    def fixed(v: int) -> str:
        return base64.urlsafe_b64encode(v.to_bytes(size, "big")).rstrip(b"=").decode()

    return {
        "kty": "EC-HSM" if hsm else "EC",
        "key_ops": ["sign", "verify"],
        "crv": crv,
        "x": fixed(point.x),
        "y": fixed(point.y),
    }


def public_pem(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
