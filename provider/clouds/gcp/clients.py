"""Secret Manager and Parameter Manager clients, one per endpoint, shared by
every Mount and every identity.

A channel carries no identity: each call sends the caller's access token as
``authorization`` metadata, so one channel per endpoint serves all pods. The
Python client never derives a regional endpoint from a ``locations/*`` name,
so each location is routed explicitly (docs/compatibility.md §5). Calls are blocking and
run on the shared worker pool; retries (UNAVAILABLE, RESOURCE_EXHAUSTED) come from
google-api-core, held to the Mount's budget (:mod:`.retrying`), and each attempt's
deadline is what is left of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import google_crc32c
import grpc
from google.api_core import exceptions as core_exceptions
from google.cloud import parametermanager_v1, secretmanager_v1
from google.cloud.parametermanager_v1.services.parameter_manager.transports import (
    ParameterManagerGrpcTransport,
)
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from ...breaker import Endpoint
from ...errors import Internal, PermissionDenied
from ..budget import Call
from . import retrying
from .errors import translate
from .ref import GcpLocator, GcpRef, SecretSelection, SecretVersionRef
from .settings import GcpSettings

T = TypeVar("T")
USER_AGENT = "keyferry/0.1 (secrets-store-csi-driver provider)"
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.primary_user_agent", USER_AGENT),
]


@dataclass(frozen=True)
class Response:
    content: bytes
    version_name: str
    endpoint: str


class Clients:
    """A thread-safe registry of clients keyed by (service, endpoint)."""

    def __init__(self, settings: GcpSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._channels: list[grpc.Channel] = []
        self.channels_created = 0

    def endpoint(self, ref: GcpLocator) -> str:
        s = self.settings
        if ref.service == "secretmanager":
            default, overrides, regional = (
                s.secret_manager_endpoint,
                s.secret_manager_locations,
                s.secret_manager_regional_endpoint,
            )
        else:
            default, overrides, regional = (
                s.parameter_manager_endpoint,
                s.parameter_manager_locations,
                s.parameter_manager_regional_endpoint,
            )
        if not ref.location:
            return default
        return overrides.get(ref.location) or regional.replace("{location}", ref.location)

    def breaker_endpoint(self, ref: GcpLocator) -> Endpoint:
        """The endpoint for :mod:`provider.breaker`: labelled with the location as
        ``{location}`` (the rest comes from settings)."""
        endpoint = self.endpoint(ref)
        label = endpoint.replace(ref.location, "{location}") if ref.location else endpoint
        return Endpoint("gcp", endpoint, label)

    def _channel(self, endpoint: str) -> grpc.Channel:
        if self.settings.insecure:
            channel = grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.secure_channel(
                endpoint, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS
            )
        self._channels.append(channel)
        self.channels_created += 1
        return channel

    def client(self, ref: GcpLocator) -> tuple[Any, str]:
        endpoint = self.endpoint(ref)
        key = (ref.service, endpoint)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                channel = self._channel(endpoint)
                if ref.service == "secretmanager":
                    client = secretmanager_v1.SecretManagerServiceClient(
                        transport=SecretManagerServiceGrpcTransport(channel=channel)
                    )
                else:
                    client = parametermanager_v1.ParameterManagerClient(
                        transport=ParameterManagerGrpcTransport(channel=channel)
                    )
                self._clients[key] = client
        return client, endpoint

    def close(self) -> None:
        with self._lock:
            for channel in self._channels:
                channel.close()
            self._channels.clear()
            self._clients.clear()

    def _retrying(
        self,
        target: Callable[[], T],
        call: Call,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> T:
        """``target()`` with google-api-core's retries held to ``call``'s budget."""
        return retrying.run(
            target,
            call,
            initial=self.settings.retry_initial_seconds,
            maximum=self.settings.retry_max_seconds,
            outcome_of=retrying.rpc_outcome,
            asked_of=retrying.rpc_asked,
            on_retry=on_retry,
        )

    def fetch(
        self,
        ref: GcpRef,
        token: str,
        call: Call,
        on_retry: Callable[[Exception], None] | None = None,
        member: str = "",
    ) -> Response:
        """One AccessSecretVersion / RenderParameterVersion, retried within ``call``'s
        budget (:mod:`.retrying`)."""
        client, endpoint = self.client(ref)
        metadata = [("authorization", f"Bearer {token}")]

        def timeout() -> float:
            return max(0.01, min(self.settings.attempt_timeout_seconds, call.remaining()))

        def access() -> Response:
            if isinstance(ref, SecretVersionRef):
                sm = client.access_secret_version(
                    request={"name": ref.name}, retry=None, timeout=timeout(), metadata=metadata
                )
                payload = sm.payload
                data = bytes(payload.data)
                if "data_crc32c" in payload and google_crc32c.value(data) != payload.data_crc32c:
                    raise Internal(
                        f"Secret Manager returned {ref.name} with a payload that fails its "
                        "CRC32C checksum; the data was corrupted in transit — retry the mount"
                    )
                return Response(data, str(sm.name), endpoint)
            pm = client.render_parameter_version(
                request={"name": ref.name}, retry=None, timeout=timeout(), metadata=metadata
            )
            return Response(bytes(pm.rendered_payload), str(pm.parameter_version), endpoint)

        return self._run(access, ref, endpoint, call, on_retry, member)

    def _run(
        self,
        target: Callable[[], T],
        ref: GcpLocator,
        endpoint: str,
        call: Call,
        on_retry: Callable[[Exception], None] | None,
        member: str,
    ) -> T:
        """``target`` retried within ``call``'s budget (:mod:`.retrying`); its failure as a
        keyferry error naming ``ref``."""
        try:
            return self._retrying(target, call, on_retry)
        except core_exceptions.GoogleAPIError as exc:
            raise translate(exc, ref, endpoint, call, member) from None

    def list_versions(
        self, ref: SecretVersionRef, token: str, call: Call, member: str = ""
    ) -> tuple[str, ...]:
        """The secret's enabled version numbers, newest first: ListSecretVersions with
        ``filter: state:ENABLED`` (every page), retried within ``call``'s budget."""
        client, endpoint = self.client(ref)
        metadata = [("authorization", f"Bearer {token}")]

        def listing() -> tuple[str, ...]:
            timeout = max(0.01, min(self.settings.attempt_timeout_seconds, call.remaining()))
            pager = client.list_secret_versions(
                request={"parent": ref.parent, "filter": "state:ENABLED", "page_size": 100},
                retry=None,
                timeout=timeout,
                metadata=metadata,
            )
            found = [(v.create_time, int(v.name.rsplit("/", 1)[-1])) for v in pager]
            found.sort(reverse=True)
            return tuple(str(number) for _, number in found)

        try:
            return self._retrying(listing, call)
        except core_exceptions.PermissionDenied:
            who = f"member '{member}'" if member else "the identity the pod uses"
            raise PermissionDenied(
                f"Secret Manager denied listing the versions of {ref.parent} "
                f"(secretmanager.versions.list, for versionHistory/previous): grant {who} "
                "roles/secretmanager.viewer on the secret or its project"
            ) from None
        except core_exceptions.GoogleAPIError as exc:
            raise translate(exc, ref, endpoint, call, member) from None

    def list_secrets(
        self,
        selection: SecretSelection,
        token: str,
        call: Call,
        limit: int,
        on_retry: Callable[[Exception], None] | None = None,
        member: str = "",
    ) -> list[str] | None:
        """The ids of the secrets ``selection`` matches (ListSecrets with its filter, every
        page), or ``None`` as soon as there are more than ``limit``; retried as a whole
        within ``call``'s budget."""
        client, endpoint = self.client(selection)
        metadata = [("authorization", f"Bearer {token}")]

        def listing() -> list[str] | None:
            timeout = max(0.01, min(self.settings.attempt_timeout_seconds, call.remaining()))
            pager = client.list_secrets(
                # One more than the cap: a full page says "too many" without a second call.
                request={
                    "parent": selection.name,
                    "filter": selection.filter,
                    "page_size": min(limit + 1, MAX_PAGE_SIZE),
                },
                retry=None,
                timeout=timeout,
                metadata=metadata,
            )
            ids: list[str] = []
            for secret in pager:
                ids.append(str(secret.name).rsplit("/", 1)[-1])
                if len(ids) > limit:
                    return None
            return ids

        return self._run(listing, selection, endpoint, call, on_retry, member)


MAX_PAGE_SIZE = 25000
"""ListSecrets' largest page: Google caps ``page_size`` there."""

__all__ = ["Clients", "Response"]
