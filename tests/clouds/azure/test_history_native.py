"""Version history in the native dialect on Key Vault (``versionHistory: N``, the twin of
the azure dialect's objectVersionHistory, and ``previous: true``) through a real server on
the ``keyferry`` socket, against the fake Key Vault (which lists versions only with the
``list`` permission)."""

from __future__ import annotations

import grpc
import pytest

from keyferry_fakes.azure import TENANT, FakeAzure
from keyferry_fakes.harness import Server
from tests.clouds.azure.test_e2e import files, mount, srv, versions

__all__ = ["srv"]  # the fixture, shared with test_e2e.py


def native(name: str, extra: str) -> dict[str, str]:
    return {
        "objects": f"- backend: azure\n  vault: kv1\n  name: {name}\n  tenantID: {TENANT}\n"
        f"  clientID: app-1\n  path: {name}\n  {extra}\n"
    }


def test_native_version_history_and_previous(srv: Server, fake: FakeAzure) -> None:
    made = [fake.vault.add_secret("kv1", "rotating", f"canary-r{i}") for i in range(3)]
    resp = mount(srv, native("rotating", "versionHistory: 5"), socket="keyferry")
    assert files(resp) == {
        "rotating/0": (b"canary-r2", 0o644),
        "rotating/1": (b"canary-r1", 0o644),
        "rotating/2": (b"canary-r0", 0o644),
    }
    assert versions(resp) == {"rotating/0": made[2], "rotating/1": made[1], "rotating/2": made[0]}
    previous = mount(srv, native("rotating", "previous: true"), socket="keyferry")
    assert files(previous) == {"rotating": (b"canary-r1", 0o644)}


def test_native_previous_without_one_is_not_found(srv: Server, fake: FakeAzure) -> None:
    fake.vault.add_secret("kv1", "single", "only")
    with pytest.raises(grpc.RpcError) as exc:
        mount(srv, native("single", "previous: true"), socket="keyferry")
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND
    assert "no version before the current one" in str(exc.value.details())


def test_native_history_without_list_permission_is_permission_denied(
    srv: Server, fake: FakeAzure
) -> None:
    fake.vault.revoke("kv1", "app-1")
    fake.vault.grant("kv1", "secrets", "app-1", operations=("get",))
    fake.vault.add_secret("kv1", "nolist", "canary-nolist")
    with pytest.raises(grpc.RpcError) as exc:
        mount(srv, native("nolist", "versionHistory: 2"), socket="keyferry")
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "list" in str(exc.value.details())
    assert "canary-nolist" not in str(exc.value.details())
