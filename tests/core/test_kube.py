"""Kubernetes API access as a real cluster grants it: the strict fake, and the client.

The fake answers as the API server does (401 without a valid bearer token, 403 for
what RBAC does not grant, HTTPS with its own CA); the client must send the
provider's projected token on every request, follow kubelet's rotation of it,
find the in-cluster API over TLS, and explain each failure.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyferry_fakes.kube import FakeKube
from provider.config import KubeConfig
from provider.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    KeyferryError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from provider.kube import KubeClient

SA_PATH = "/api/v1/namespaces/team-a/serviceaccounts/web"


@pytest.fixture
def kube(kube: FakeKube) -> FakeKube:
    kube.add_service_account("team-a", "web", {"eks.amazonaws.com/role-arn": "arn:role"})
    kube.add_service_account("team-a", "api", {"a": "b"})
    return kube


@pytest.fixture
def tls_kube(tls_kube: FakeKube) -> FakeKube:
    tls_kube.add_service_account("team-a", "web", {"k": "v"})
    return tls_kube


def _get(fake: FakeKube, path: str, token: str | None, ctx: ssl.SSLContext | None = None) -> int:
    req = urllib.request.Request(fake.url + path)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:  # releases the connection (the body is not read)
            return int(exc.code)


def client(settings: dict[str, Any]) -> KubeClient:
    return KubeClient(KubeConfig(**settings))


def read_sa(kc: KubeClient, ns: str = "team-a", name: str = "web") -> Any:
    async def go() -> Any:
        try:
            return await kc.service_account(ns, name)
        finally:
            await kc.close()

    return asyncio.run(go())


# -- the fake is as strict as the API server -----------------------------------------


def test_fake_rejects_requests_without_a_valid_token(kube: FakeKube) -> None:
    assert _get(kube, SA_PATH, None) == 401
    assert _get(kube, SA_PATH, "not-a-token") == 401
    old = kube.provider_token
    kube.rotate_token()
    assert _get(kube, SA_PATH, old) == 401
    assert _get(kube, SA_PATH, kube.provider_token) == 200


def test_fake_forbids_what_rbac_does_not_grant(kube: FakeKube) -> None:
    pod_token = kube.issue_token("system:serviceaccount:team-a:web")
    assert _get(kube, SA_PATH, pod_token) == 403
    assert _get(kube, "/api/v1/namespaces/team-a/secrets/db", kube.provider_token) == 403
    kube.granted[next(iter(kube.granted))].discard("nodes")
    assert _get(kube, "/api/v1/nodes/n1", kube.provider_token) == 403


def test_tls_fake_needs_its_own_ca(tls_kube: FakeKube) -> None:
    with pytest.raises(urllib.error.URLError):
        _get(tls_kube, SA_PATH, tls_kube.provider_token, ssl.create_default_context())
    ctx = ssl.create_default_context(cafile=tls_kube.ca_file)
    assert _get(tls_kube, SA_PATH, tls_kube.provider_token, ctx) == 200


# -- the client -------------------------------------------------------------------------


def test_every_request_carries_the_projected_token(kube: FakeKube) -> None:
    sa = read_sa(client(kube.settings()))
    assert sa["annotations"] == {"eks.amazonaws.com/role-arn": "arn:role"}
    assert kube.auth_headers == [f"Bearer {kube.provider_token}"]
    assert not kube.rejected


def test_a_rotated_token_is_read_again(kube: FakeKube) -> None:
    kc = client(kube.settings(cache_seconds=0))

    async def go() -> list[Any]:
        try:
            first = await kc.service_account("team-a", "web")
            kube.rotate_token()  # kubelet rotates; the old token is revoked
            second = await kc.service_account("team-a", "api")
            return [first, second]
        finally:
            await kc.close()

    first, second = asyncio.run(go())
    assert first["annotations"] and second["annotations"] == {"a": "b"}
    assert kube.auth_headers[-1] == f"Bearer {kube.provider_token}"


def test_in_cluster_over_tls_with_the_mounted_ca(
    tls_kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(tls_kube.port))
    kc = client({"token_file": tls_kube.token_file, "ca_file": tls_kube.ca_file})
    assert kc.enabled
    assert read_sa(kc)["annotations"] == {"k": "v"}
    assert tls_kube.auth_headers == [f"Bearer {tls_kube.provider_token}"]


def test_a_server_certificate_from_another_ca_is_refused(
    tls_kube: FakeKube, tmp_path: Path
) -> None:
    import trustme

    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    with pytest.raises(Unavailable, match=r"TLS|certificate"):
        read_sa(client(tls_kube.settings(ca_file=str(other))))
    assert not tls_kube.auth_headers  # the token never left the process


def test_401_names_the_token_file(kube: FakeKube, tmp_path: Path) -> None:
    stale = tmp_path / "token"
    stale.write_text("revoked-canary-token")
    with pytest.raises(Unauthenticated) as err:
        read_sa(client(kube.settings(token_file=str(stale))))
    assert str(stale) in err.value.message and "401" in err.value.message
    assert "revoked-canary-token" not in err.value.message


def test_missing_token_file_is_a_precondition(kube: FakeKube, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="token"):
        read_sa(client(kube.settings(token_file=str(tmp_path / "absent"))))
    assert not kube.auth_headers


def test_403_names_the_clusterrole_rule_to_add(kube: FakeKube) -> None:
    kube.granted[next(iter(kube.granted))].discard("serviceaccounts")
    with pytest.raises(PermissionDenied) as err:
        read_sa(client(kube.settings()))
    msg = err.value.message
    assert "403" in msg and "ClusterRole" in msg
    assert 'resources: ["serviceaccounts"]' in msg and 'verbs: ["get"]' in msg


def test_404_is_not_found(kube: FakeKube) -> None:
    with pytest.raises(NotFound, match="team-a/nobody"):
        read_sa(client(kube.settings()), name="nobody")


def test_pod_and_node_lookups(kube: FakeKube) -> None:
    kube.add_pod("team-a", "web-0", node="n1", service_account="web")
    kube.add_node("n1", {"topology.kubernetes.io/region": "eu-west-1"})
    kc = client(kube.settings())

    async def go() -> tuple[Any, Any]:
        try:
            return await kc.pod("team-a", "web-0"), await kc.node("n1")
        finally:
            await kc.close()

    pod, node = asyncio.run(go())
    assert pod["node_name"] == "n1"
    assert node["labels"] == {"topology.kubernetes.io/region": "eu-west-1"}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for s in held:
        s.close()
    srv.close()


def test_a_silent_api_server_times_out(silent_port: int, kube: FakeKube) -> None:
    settings = kube.settings(api_url=f"http://127.0.0.1:{silent_port}", timeout_seconds=0.3)
    with pytest.raises((Unavailable, DeadlineExceeded)) as err:
        read_sa(client(settings))
    assert "did not answer" in err.value.message


def test_errors_are_keyferry_errors_with_json_safe_messages(kube: FakeKube) -> None:
    kube.forbidden.add(SA_PATH)
    with pytest.raises(KeyferryError) as err:
        read_sa(client(kube.settings()))
    json.dumps(err.value.message)


# -- the cluster's token issuer, which every fake identity endpoint trusts ---------------


def test_issuer_verifies_signature_audience_expiry_and_issuer() -> None:
    from keyferry_fakes.oidc import ISSUER, Issuer, TokenRejected, service_account_of

    good = ISSUER.pod_token("sts.amazonaws.com", "team-a", "web")
    assert service_account_of(ISSUER.verify(good, "sts.amazonaws.com")) == ("team-a", "web")
    bad = {
        "wrong audience": good,
        "expired": ISSUER.pod_token("sts.amazonaws.com", lifetime=-10),
        "other issuer claim": ISSUER.pod_token("sts.amazonaws.com", issuer="https://evil"),
        "other cluster's key": Issuer().pod_token("sts.amazonaws.com"),
        "not a jwt": "jwt-of-web-0",
    }
    for why, token in bad.items():
        aud = "api://AzureADTokenExchange" if why == "wrong audience" else "sts.amazonaws.com"
        with pytest.raises(TokenRejected):
            ISSUER.verify(token, aud)
            pytest.fail(why)
    head, claims, sig = good.split(".")
    import base64

    forged = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    forged["sub"] = "system:serviceaccount:team-a:admin"
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenRejected, match="signature"):
        ISSUER.verify(f"{head}.{body}.{sig}", "sts.amazonaws.com")
