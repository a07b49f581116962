"""Certificate conversions (provider/clouds/azure/certs.py), compared byte for byte with what
docs/compatibility.md §3.3 says the official Azure provider writes."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyferry_fakes.azure_certs import Chain, chain, jwk, new_key, public_pem
from provider.clouds.azure import certs
from provider.errors import InvalidArgument


@pytest.fixture(scope="module", params=["rsa", "p256"])
def ch(request: pytest.FixtureRequest) -> Chain:
    return chain(request.param)


def _pfx(value: str) -> bytes:
    return value.encode()


def test_pfx_with_chain_becomes_key_first_then_leaf_intermediate_root(ch: Chain) -> None:
    # Stored shuffled: leaf (with the key), then root, then intermediate.
    value = ch.pfx_value([ch.root, ch.inter])
    out = certs.convert_certificate(_pfx(value), certs.PFX_CONTENT_TYPE, "pem")
    assert out == ch.key_pem() + ch.ordered_pem()


def test_pfx_without_chain_is_key_then_leaf(ch: Chain) -> None:
    out = certs.convert_certificate(_pfx(ch.pfx_value()), certs.PFX_CONTENT_TYPE, "pem")
    assert out == ch.key_pem() + ch.pem(ch.leaf)


def test_pfx_chain_without_key_in_any_stored_order_is_ordered(ch: Chain) -> None:
    for order in ([ch.inter, ch.leaf, ch.root], [ch.root, ch.inter, ch.leaf]):
        value = ch.pfx_value(order, with_key=False, with_leaf=False)
        out = certs.convert_certificate(_pfx(value), certs.PFX_CONTENT_TYPE, "pem")
        assert out == ch.ordered_pem()


def test_incomplete_chain_keeps_the_stored_order(ch: Chain) -> None:
    # No intermediate: the chain cannot be completed, so upstream keeps the stored order.
    value = ch.pfx_value([ch.root, ch.leaf], with_key=False, with_leaf=False)
    out = certs.convert_certificate(_pfx(value), certs.PFX_CONTENT_TYPE, "pem")
    assert out == ch.pem(ch.root) + ch.pem(ch.leaf)


def test_construct_chain_off_keeps_the_stored_order(ch: Chain) -> None:
    value = ch.pfx_value([ch.root, ch.inter])
    out = certs.convert_certificate(
        _pfx(value), certs.PFX_CONTENT_TYPE, "pem", construct_chain=False
    )
    assert out == ch.key_pem() + ch.pem(ch.leaf) + ch.pem(ch.root) + ch.pem(ch.inter)


def test_pfx_format_passes_the_stored_value_through(ch: Chain) -> None:
    value = _pfx(ch.pfx_value([ch.root, ch.inter]))
    assert certs.convert_certificate(value, certs.PFX_CONTENT_TYPE, "pfx") == value


def test_pem_content_passes_through_as_uploaded(ch: Chain) -> None:
    shuffled = ch.pem(ch.inter) + ch.key_pem() + ch.pem(ch.root) + ch.pem(ch.leaf)
    assert certs.convert_certificate(shuffled, certs.PEM_CONTENT_TYPE, "pem") == shuffled
    assert certs.convert_certificate(shuffled, certs.PEM_CONTENT_TYPE, "pfx") == shuffled


@pytest.mark.parametrize("content_type", [certs.PFX_CONTENT_TYPE, certs.PEM_CONTENT_TYPE])
def test_native_outputs_split_one_certificate(ch: Chain, content_type: str) -> None:
    if content_type == certs.PFX_CONTENT_TYPE:
        value = _pfx(ch.pfx_value([ch.root, ch.inter]))
    else:
        value = ch.pem(ch.root) + ch.pem(ch.leaf) + ch.key_pem() + ch.pem(ch.inter)
    assert certs.convert_certificate(value, content_type, "cert") == ch.pem(ch.leaf)
    assert certs.convert_certificate(value, content_type, "fullchain") == ch.ordered_pem()
    assert certs.convert_certificate(value, content_type, "key") == ch.key_pem()


def test_key_output_of_a_pem_without_key_is_a_clear_error(ch: Chain) -> None:
    with pytest.raises(InvalidArgument, match="no private key"):
        certs.convert_certificate(ch.ordered_pem(), certs.PEM_CONTENT_TYPE, "key")


def test_unknown_content_type_is_an_error(ch: Chain) -> None:
    with pytest.raises(InvalidArgument, match="unknown content type"):
        certs.convert_certificate(b"x", "text/plain", "pem")


def test_pfx_that_is_not_base64_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="not valid base64"):
        certs.convert_certificate(b"%%%", certs.PFX_CONTENT_TYPE, "pem")


def test_pfx_that_is_not_pkcs12_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="empty password"):
        certs.convert_certificate(base64.b64encode(b"nope"), certs.PFX_CONTENT_TYPE, "pem")


def test_split_pem_separates_certificates_from_keys(ch: Chain) -> None:
    data = ch.key_pem() + ch.ordered_pem()
    crt, key = certs.split_pem(data)
    assert crt == ch.ordered_pem()
    assert key == ch.key_pem()


@pytest.mark.parametrize("kind", ["rsa", "p256", "p384", "p521"])
@pytest.mark.parametrize("hsm", [False, True])
def test_jwk_public_key_as_pkix_pem(kind: str, hsm: bool) -> None:
    key = new_key(kind)
    j = jwk(key, hsm=hsm)

    def b(name: str) -> bytes | None:
        v = j.get(name)
        return base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)) if v else None

    out = certs.public_key_pem(j["kty"], n=b("n"), e=b("e"), crv=j.get("crv"), x=b("x"), y=b("y"))
    assert out == public_pem(key)
    assert out.startswith(b"-----BEGIN PUBLIC KEY-----\n")


def test_unsupported_key_types_are_errors() -> None:
    with pytest.raises(InvalidArgument, match="not supported"):
        certs.public_key_pem("oct", n=b"\x01")
    with pytest.raises(InvalidArgument, match="P-256K"):
        certs.public_key_pem("EC", crv="P-256K", x=b"\x01", y=b"\x01")


def test_der_certificate_becomes_one_pem_block(ch: Chain) -> None:
    der = ch.leaf.public_bytes(Encoding.DER)
    assert certs.der_certificate_to_pem(der) == ch.pem(ch.leaf)


def test_chain_order_mirrors_upstream_on_a_single_self_signed_cert(ch: Chain) -> None:
    assert certs.order_chain([ch.root]) == [ch.root]


def test_chain_order_is_leaf_first_for_every_permutation(ch: Chain) -> None:
    import itertools

    expected: list[x509.Certificate] = [ch.leaf, ch.inter, ch.root]
    for perm in itertools.permutations(expected):
        assert certs.order_chain(list(perm)) == expected
