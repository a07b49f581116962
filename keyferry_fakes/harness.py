"""End-to-end harness: a real keyferry server on Unix sockets, called like the driver.

``with running_server(tmp_path, providers="keyferry,aws", backends={...}) as srv:``
then ``srv.mount("aws", params, tokens={...})`` sends a driver-shaped
MountRequest over a real gRPC channel and returns the MountResponse (a
``grpc.RpcError`` on an error status).
"""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from provider import config as kconfig
from provider import sync_controller
from provider._proto.v1alpha1 import service_pb2 as pb
from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc
from provider.cli.embedded import EmbeddedProvider
from provider.cli.manifest import (
    SecretProviderClass,
    driver_attributes,
    encode_attributes,
    sync_controller_attributes,
)
from provider.model import Pod
from provider.observe import setup_logging

DEFAULT_POD = ("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")
EXPIRATION = "2030-01-01T00:00:00Z"


class _Lines(io.TextIOBase):
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def write(self, s: str) -> int:
        self.sink.extend(line for line in s.splitlines() if line.strip())
        return len(s)


def driver_request(
    params: Mapping[str, str],
    *,
    tokens: Mapping[str, str] | None = None,
    pod: tuple[str, str, str, str] = DEFAULT_POD,
    secrets: Mapping[str, str] | None = None,
    permission: str = "420",
    volume_attributes: Mapping[str, str] | None = None,
    current: Mapping[str, str] | None = None,
    spc_name: str = "test-class",
) -> pb.MountRequest:
    spc = SecretProviderClass(
        name=spc_name, namespace=pod[0], provider="", parameters=params, source="test"
    )
    attrs = driver_attributes(
        spc,
        Pod(*pod),
        volume_attributes=volume_attributes,
        tokens=tokens,
        expiration=EXPIRATION,
    )
    return pb.MountRequest(
        attributes=encode_attributes(attrs),
        secrets=json.dumps(dict(secrets)) if secrets is not None else "null",
        target_path=f"/var/lib/kubelet/pods/{pod[2]}/volumes/kubernetes.io~csi/vol/mount",
        permission=permission,
        current_object_version=[
            pb.ObjectVersion(id=k, version=v) for k, v in (current or {}).items()
        ],
    )


SYNC_CONTROLLER_POD = (
    "secrets-store-sync-controller-manager-6d5f7c9b8-x2x7q",
    "0d6c4a4e-9f1b-4c39-8b7e-3f1f5a2c7d10",
)
"""The sync controller's own pod (its SYNC_CONTROLLER_POD_NAME and _UID environment)."""
SYNC_CONTROLLER_TOKEN_SECONDS = 600
"""The lifetime of the tokens the sync controller requests (its token manager's)."""


def sync_controller_request(
    params: Mapping[str, str],
    *,
    namespace: str,
    service_account: str,
    tokens: Mapping[str, str] | None = None,
    controller_pod: tuple[str, str] = SYNC_CONTROLLER_POD,
    expiration: str = EXPIRATION,
) -> pb.MountRequest:
    """The MountRequest the secrets-store-sync-controller sends for a SecretSync in
    ``namespace`` naming ``service_account`` and a class with ``params``
    (docs/sync-controller.md): the class's parameters, its own pod's name and uid (``""``
    when its environment does not set them), the SecretSync's namespace and ServiceAccount,
    the tokens it requested for that ServiceAccount per configured audience (no tokens key
    when none is configured), ``{}`` for secrets, permission 0644 as JSON, no current
    versions and the fixed target path. No ``secretProviderClass`` or ``ephemeral`` key."""
    spc = SecretProviderClass(
        name="", namespace=namespace, provider="", parameters=params, source="test"
    )
    attrs = sync_controller_attributes(
        spc,
        namespace,
        service_account,
        controller_pod=controller_pod,
        tokens=tokens,
        expiration=expiration,
    )
    return pb.MountRequest(
        attributes=encode_attributes(attrs),
        secrets="{}",
        permission="420",
        target_path=sync_controller.TARGET_PATH,
    )


class Clock:
    """A monotonic clock that moves only when a test moves it (``clock.now += 1``)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Return once ``condition()`` holds (polled); AssertionError after ``timeout`` seconds,
    which only ever means a hang: tests wait for a state, they never assert a duration."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {timeout:.0f} s")
        time.sleep(0.005)


def volume_context(
    pod: tuple[str, str, str, str],
    tokens: Mapping[str, str] | None = None,
    *,
    spc_name: str = "test-class",
) -> dict[str, str]:
    """The volume context kubelet and the driver hand over for a CSI inline volume
    (``pod`` is (namespace, name, uid, service account) as in keyferry_fakes.harness)."""
    namespace, name, uid, service_account = pod
    ctx = {
        "csi.storage.k8s.io/pod.name": name,
        "csi.storage.k8s.io/pod.namespace": namespace,
        "csi.storage.k8s.io/pod.uid": uid,
        "csi.storage.k8s.io/serviceAccount.name": service_account,
        "csi.storage.k8s.io/ephemeral": "true",
        "secretProviderClass": spc_name,
    }
    if tokens is not None:
        ctx["csi.storage.k8s.io/serviceAccount.tokens"] = json.dumps(
            {aud: {"token": tok, "expirationTimestamp": EXPIRATION} for aud, tok in tokens.items()}
        )
    return ctx


@dataclass
class Server:
    emb: EmbeddedProvider
    logs: list[str] = field(default_factory=list)

    @property
    def config(self) -> kconfig.Config:
        return self.emb.config

    def socket(self, name: str) -> Path:
        return self.emb.socket(name)

    def channel(self, name: str, *, dial: str = "v1.6") -> grpc.Channel:
        """``v1.6``: target ``unix:<path>``, authority ``localhost``;
        ``v1.5``: the authority is the socket path."""
        path = self.socket(name)
        options = [("grpc.default_authority", str(path))] if dial == "v1.5" else []
        return grpc.insecure_channel(f"unix:{path}", options=options)

    def stub(self, name: str, *, dial: str = "v1.6") -> pb_grpc.CSIDriverProviderStub:
        return pb_grpc.CSIDriverProviderStub(self.channel(name, dial=dial))

    def version(self, name: str = "keyferry") -> pb.VersionResponse:
        with self.channel(name) as ch:
            reply: pb.VersionResponse = pb_grpc.CSIDriverProviderStub(ch).Version(
                pb.VersionRequest(version="v1alpha1"), timeout=10
            )
            return reply

    def request(self, params: Mapping[str, str], **kwargs: Any) -> pb.MountRequest:
        return driver_request(params, **kwargs)

    def mount(
        self,
        name: str,
        params: Mapping[str, str],
        *,
        timeout: float = 60,
        dial: str = "v1.6",
        **kwargs: Any,
    ) -> pb.MountResponse:
        return self.send(name, self.request(params, **kwargs), timeout=timeout, dial=dial)

    def send(
        self, name: str, request: pb.MountRequest, *, timeout: float = 60, dial: str = "v1.6"
    ) -> pb.MountResponse:
        with self.channel(name, dial=dial) as ch:
            reply: pb.MountResponse = pb_grpc.CSIDriverProviderStub(ch).Mount(
                request, timeout=timeout
            )
            return reply

    def sync_mount(
        self,
        name: str,
        params: Mapping[str, str],
        *,
        timeout: float = 60,
        **kwargs: Any,
    ) -> pb.MountResponse:
        """Mount as the secrets-store-sync-controller calls it (:func:`sync_controller_request`)."""
        return self.send(name, sync_controller_request(params, **kwargs), timeout=timeout)

    def breaker_clock(self) -> Clock:
        """Put the server's fail-fast breakers on a :class:`Clock` the test moves."""
        assert self.emb.provider is not None
        clock = Clock()
        self.emb.provider.services.breakers.clock = clock
        return clock

    def metric(self, sample: str) -> float | None:
        """The value of one sample, e.g. ``keyferry_mounts_total{dialect="native",...}``."""
        for line in self.metrics_text().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def metrics_text(self) -> str:
        assert self.emb.provider is not None
        from prometheus_client import generate_latest

        return generate_latest(self.emb.provider.metrics.registry).decode()

    def http_get(self, path: str) -> tuple[int, str]:
        assert self.emb.provider is not None and self.emb.provider.http_port
        url = f"http://127.0.0.1:{self.emb.provider.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@contextmanager
def running_server(
    tmp_path: Path,
    *,
    providers: str | Mapping[str, str] = "keyferry",
    backends: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> Iterator[Server]:
    settings: dict[str, Any] = {
        "socket_dir": tmp_path / "sockets",
        "providers": providers,
        "http_address": "",
        "log_level": "debug",
    }
    if backends:
        settings["backends"] = backends
    settings.update(overrides)
    cfg = kconfig.load(None, env={}, overrides=settings)
    logs: list[str] = []
    setup_logging(cfg.log_level, stream=_Lines(logs))
    emb = EmbeddedProvider(cfg)
    emb.start()
    try:
        yield Server(emb=emb, logs=logs)
    finally:
        emb.stop(grace=1.0)
        logging.getLogger("keyferry").handlers.clear()
        logging.getLogger().handlers.clear()
