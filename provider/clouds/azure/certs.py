"""Certificate and key conversions for Key Vault objects (pure ``cryptography``).

The byte layouts follow the official Azure provider 1.8.x (docs/compatibility.md §3.3) so a
drop-in mount writes the same files:

- a PKCS#12 certificate becomes PEM with the private key first (PKCS#8
  ``PRIVATE KEY``), then the certificates ordered leaf → intermediates → root by
  authority/subject key identifiers; when the chain cannot be completed the
  stored order is kept;
- a Key Vault key becomes its public key as a PKIX ``PUBLIC KEY`` block;
- a Key Vault certificate becomes its leaf as one ``CERTIFICATE`` block.

Every failure raises :class:`~provider.errors.InvalidArgument` whose message
describes the problem without quoting the content.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.hazmat.primitives.serialization.pkcs12 import PKCS12KeyAndCertificates

from ...errors import InvalidArgument

PEM_CONTENT_TYPE = "application/x-pem-file"
PFX_CONTENT_TYPE = "application/x-pkcs12"

CertFormat = Literal["pem", "pfx", "cert", "fullchain", "key"]
"""Outputs of a certificate-backed secret:

- ``pem``: the official provider's layout (PEM stays as uploaded; PKCS#12 becomes
  key + ordered chain);
- ``pfx``: the stored value unchanged (base64 PKCS#12 text, or the PEM as uploaded);
- ``cert``: the leaf certificate only;
- ``fullchain``: every certificate, leaf → root, no key;
- ``key``: the private key only, as PKCS#8 ``PRIVATE KEY``.
"""

CERT_FORMATS: tuple[CertFormat, ...] = ("pem", "pfx", "cert", "fullchain", "key")

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.DOTALL)
PrivateKey = PrivateKeyTypes
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


@dataclass(frozen=True)
class Bundle:
    """A parsed certificate: its private keys and certificates in stored order."""

    keys: tuple[PrivateKey, ...]
    certificates: tuple[x509.Certificate, ...]


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der_certificate_to_pem(der: bytes) -> bytes:
    """A Key Vault certificate's ``cer`` (DER) as one ``CERTIFICATE`` block."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise InvalidArgument("the certificate returned by Key Vault is not valid DER") from None
    return certificate_pem(cert)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _int(data: bytes) -> int:
    return int.from_bytes(data, "big")


def public_key_pem(
    kty: str,
    *,
    n: bytes | None = None,
    e: bytes | None = None,
    crv: str | None = None,
    x: bytes | None = None,
    y: bytes | None = None,
) -> bytes:
    """The public half of a JSON Web Key as a PKIX ``PUBLIC KEY`` PEM block.

    RSA and RSA-HSM; EC and EC-HSM on P-256, P-384 and P-521 (as upstream).
    """
    kind = kty.upper()
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    try:
        if kind in ("RSA", "RSA-HSM"):
            if not n or not e:
                raise InvalidArgument("the RSA key returned by Key Vault has no modulus/exponent")
            public = rsa.RSAPublicNumbers(_int(e), _int(n)).public_key()
        elif kind in ("EC", "EC-HSM"):
            curve = _CURVES.get(crv or "")
            if curve is None:
                raise InvalidArgument(
                    f"EC curve {crv!r} is not supported; use P-256, P-384 or P-521"
                )
            if not x or not y:
                raise InvalidArgument("the EC key returned by Key Vault has no x/y coordinates")
            public = ec.EllipticCurvePublicNumbers(_int(x), _int(y), curve).public_key()
        else:
            raise InvalidArgument(
                f"key type {kty!r} is not supported; only RSA, RSA-HSM, EC and EC-HSM keys "
                "can be written as a PEM public key"
            )
    except ValueError:
        raise InvalidArgument(f"the {kty} key returned by Key Vault is not a valid key") from None
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- PKCS#12 -----------------------------------------------------------------


def decode_pfx_text(value: bytes) -> bytes:
    """Key Vault stores PKCS#12 certificates as base64 text."""
    try:
        return base64.b64decode(b"".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "the certificate is stored as PKCS#12 but its value is not valid base64"
        ) from None


def load_pfx(der: bytes) -> Bundle:
    """Open a PFX with an empty password (as Key Vault exports them)."""
    loaded: PKCS12KeyAndCertificates | None = None
    for password in (None, b""):
        try:
            loaded = pkcs12.load_pkcs12(der, password)
            break
        except ValueError:
            continue
        except UnsupportedAlgorithm:
            raise InvalidArgument(
                "the PKCS#12 certificate uses an encryption this server cannot open"
            ) from None
    if loaded is None:
        raise InvalidArgument(
            "the PKCS#12 certificate cannot be opened with an empty password (Key Vault "
            "certificates have none; re-import it without a password)"
        )
    certs: list[x509.Certificate] = []
    if loaded.cert is not None:
        certs.append(loaded.cert.certificate)
    certs.extend(c.certificate for c in loaded.additional_certs)
    keys: tuple[PrivateKey, ...] = () if loaded.key is None else (loaded.key,)
    return Bundle(keys=keys, certificates=tuple(certs))


# --- PEM -----------------------------------------------------------------------


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """``(type, full block bytes)`` for every PEM block, in order."""
    return [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def load_pem(data: bytes) -> Bundle:
    keys: list[PrivateKey] = []
    certs: list[x509.Certificate] = []
    for kind, block in pem_blocks(data):
        try:
            if kind in ("CERTIFICATE", "X509 CERTIFICATE"):
                certs.append(x509.load_pem_x509_certificate(block))
            elif kind.endswith("PRIVATE KEY"):
                keys.append(serialization.load_pem_private_key(block, password=None))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidArgument(
                f"the stored PEM holds a {kind} block that cannot be parsed (an encrypted or "
                "malformed key or certificate)"
            ) from None
    return Bundle(keys=tuple(keys), certificates=tuple(certs))


def split_pem(data: bytes) -> tuple[bytes, bytes]:
    """``(CERTIFICATE blocks, every other block)``, like upstream's separate files."""
    certs: list[bytes] = []
    others: list[bytes] = []
    for kind, block in pem_blocks(data):
        (certs if kind == "CERTIFICATE" else others).append(_normalise(block))
    return b"".join(certs), b"".join(others)


def _normalise(block: bytes) -> bytes:
    text = block.replace(b"\r\n", b"\n")
    return text if text.endswith(b"\n") else text + b"\n"


# --- chain order ---------------------------------------------------------------


def _ext_value(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    value = _ext_value(cert, x509.AuthorityKeyIdentifier)
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return None


def _ski(cert: x509.Certificate) -> bytes | None:
    value = _ext_value(cert, x509.SubjectKeyIdentifier)
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest
    return None


def order_chain(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf → intermediates → root by key identifiers; the stored order when the
    chain cannot be completed.

    Mirrors upstream's ``fetchCertChains``: each certificate's parent is the first
    other certificate whose subject key id equals its authority key id; the leaf is
    the first certificate that is nobody's parent.
    """
    n = len(certs)
    parent: list[int | None] = [None] * n
    is_parent = [False] * n
    akis = [_aki(c) for c in certs]
    skis = [_ski(c) for c in certs]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if akis[i] is None and skis[j] is None:
                continue
            if (akis[i] or b"") == (skis[j] or b""):
                is_parent[j] = True
                parent[i] = j
                break
    leaf = next((i for i in range(n) if not is_parent[i]), None)
    if leaf is None:
        raise InvalidArgument(
            "the certificate chain has no leaf (every certificate signs another one)"
        )
    chain: list[int] = []
    node: int | None = leaf
    while node is not None:
        chain.append(node)
        if len(chain) > n:
            raise InvalidArgument("the certificate chain is cyclic (certificates sign each other)")
        node = parent[node]
    if len(chain) != n:
        return list(certs)
    return [certs[i] for i in chain]


# --- the conversions -------------------------------------------------------------


def pfx_to_pem(value: bytes, *, construct_chain: bool = True) -> bytes:
    """Upstream's PEM form of a PKCS#12 certificate: keys (PKCS#8) then certificates."""
    bundle = load_pfx(decode_pfx_text(value))
    if not bundle.certificates:
        raise InvalidArgument("the PKCS#12 certificate holds no certificate")
    certs = order_chain(bundle.certificates) if construct_chain else list(bundle.certificates)
    return b"".join(key_pem(k) for k in bundle.keys) + b"".join(certificate_pem(c) for c in certs)


def load_bundle(value: bytes, content_type: str) -> Bundle:
    if content_type == PFX_CONTENT_TYPE:
        return load_pfx(decode_pfx_text(value))
    if content_type == PEM_CONTENT_TYPE:
        return load_pem(value)
    raise InvalidArgument(unknown_content_type(content_type))


def unknown_content_type(content_type: str) -> str:
    return (
        f"the certificate has unknown content type {content_type!r}; Key Vault certificates "
        f"are stored as {PFX_CONTENT_TYPE!r} or {PEM_CONTENT_TYPE!r}"
    )


def convert_certificate(
    value: bytes, content_type: str, fmt: CertFormat, *, construct_chain: bool = True
) -> bytes:
    """The bytes of one output of a certificate-backed secret (see :data:`CertFormat`)."""
    if content_type not in (PFX_CONTENT_TYPE, PEM_CONTENT_TYPE):
        raise InvalidArgument(unknown_content_type(content_type))
    if fmt == "pfx":
        return value
    if fmt == "pem":
        if content_type == PEM_CONTENT_TYPE:
            return value
        return pfx_to_pem(value, construct_chain=construct_chain)
    bundle = load_bundle(value, content_type)
    if fmt == "key":
        if not bundle.keys:
            raise InvalidArgument(
                "the certificate has no private key (it was imported without one, or its "
                "key is not exportable)"
            )
        return b"".join(key_pem(k) for k in bundle.keys)
    if not bundle.certificates:
        raise InvalidArgument("the stored certificate holds no certificate")
    ordered = order_chain(bundle.certificates)
    if fmt == "cert":
        return certificate_pem(leaf_certificate(bundle, ordered))
    return b"".join(certificate_pem(c) for c in ordered)


def leaf_certificate(bundle: Bundle, ordered: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate of the private key when there is one, else the chain's head."""
    for key in bundle.keys:
        wanted = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for cert in bundle.certificates:
            have = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if have == wanted:
                return cert
    return ordered[0]
