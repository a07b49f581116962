"""The Azure tests' identity: application app-1 trusts the cluster's team-a/web
ServiceAccount (a federated credential) and may read everything in vault kv1."""

from __future__ import annotations

import pytest

from keyferry_fakes.azure import FakeAzure


@pytest.fixture
def fake(azure: FakeAzure) -> FakeAzure:
    azure.entra.federate("app-1", "team-a", "web")
    azure.vault.grant_reader("kv1", "app-1")
    return azure
