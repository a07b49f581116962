"""Key Vault clients, kept per (object kind, vault URL, identity), least recently used
dropped first. Their retries go through azure-core's policy held to the Mount's budget
(:mod:`.retries`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from .identity import Identity
from .ref import ObjectKind
from .retries import BudgetRetryPolicy
from .settings import AzureSettings


def pooled_transport(pool_size: int, connection_verify: str = "") -> RequestsTransport:
    """azure-core's requests transport keeping up to ``pool_size`` connections per host.
    Its adapter keeps 10 by default and discards the others after use, so every Mount
    with more objects in flight than that opened (TLS handshake included) its extra
    connections anew. The adapter stays azure-core's (urllib3 retries off: the retry
    policy decides); only its pool is made larger."""
    kwargs: dict[str, Any] = {"connection_verify": connection_verify} if connection_verify else {}
    transport = RequestsTransport(**kwargs)
    transport.open()  # creates the session and mounts azure-core's adapter
    assert transport.session is not None
    for adapter in set(transport.session.adapters.values()):
        adapter.init_poolmanager(_POOLS, pool_size)
    return transport


_POOLS = 10
"""Hosts whose pools an adapter keeps (requests' default): one vault per client."""


class Clients:
    """Key Vault clients by (kind, vault URL, identity key), at most ``max_clients``;
    each keeps ``pool_size`` connections, the backend's bound on calls in flight."""

    def __init__(self, settings: AzureSettings, pool_size: int = 10) -> None:
        self.settings = settings
        self.pool_size = pool_size
        self._clients: OrderedDict[tuple[ObjectKind, str, Hashable], Any] = OrderedDict()

    def get(self, kind: ObjectKind, url: str, identity: Identity) -> Any:
        key = (kind, url, identity.key)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        cls = {"secret": SecretClient, "key": KeyClient, "cert": CertificateClient}[kind]
        kwargs: dict[str, Any] = {
            "verify_challenge_resource": self.settings.verify_challenge_resource,
            "retry_policy": BudgetRetryPolicy(
                retry_total=self.settings.retry_total,
                retry_backoff_factor=self.settings.retry_backoff_factor,
                retry_backoff_max=self.settings.retry_backoff_max,
            ),
        }
        kwargs["transport"] = pooled_transport(self.pool_size, self.settings.ca_bundle)
        client = cls(url, identity.credential, **kwargs)
        self._clients[key] = client
        if len(self._clients) > self.settings.max_clients:
            _, old = self._clients.popitem(last=False)
            old.close()
        return client

    def __len__(self) -> int:
        return len(self._clients)

    def drop(self, identity_key: Hashable) -> None:
        """Close the clients of an identity that is forgotten."""
        for key in [k for k in self._clients if k[2] == identity_key]:
            self._clients.pop(key).close()

    def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            client.close()
