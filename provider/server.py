"""The grpc.aio server: one Unix socket per provider name, each bound to its dialect.

The request never says which provider name it was sent to (docs/protocol.md §4.1),
so every socket gets its own server and servicer. The same sockets serve
``grpc.health.v1``. :mod:`provider.http` serves the probes and metrics; readiness is
a real Version round trip over every socket (:meth:`Provider.readiness_problems`).
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import os
import signal
import socket
import stat
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from . import __version__, files, protocol, registry, sync_controller
from ._proto.v1alpha1 import service_pb2 as pb
from ._proto.v1alpha1 import service_pb2_grpc as pb_grpc
from .backend import Registry, Services
from .cache import TTLCache
from .config import PROVIDER_NAME_RE, Config
from .errors import Code, ConfigError, Internal, KeyferryError, Unavailable, clip
from .http import ProbeServer
from .kube import KubeClient
from .model import Deadline, Fetched, Mount
from .observe import REDACTOR, Metrics, audit, get_logger
from .pipeline import Pipeline, load_hmac_key

RUNTIME_NAME = "keyferry"
SERVICE_NAME = "v1alpha1.CSIDriverProvider"
# Leave room to answer before the caller's own deadline expires.
DEADLINE_MARGIN = 2.0

log = get_logger("server")


def _status(code: Code) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code.value)  # type: ignore[no-any-return]


class Servicer(pb_grpc.CSIDriverProviderServicer):  # type: ignore[misc]
    """Version and Mount for one socket (one provider name, one dialect)."""

    def __init__(self, provider: Provider, name: str, dialect: str) -> None:
        self.provider = provider
        self.name = name
        self.dialect = dialect

    async def Version(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.VersionResponse:
        try:
            pb.VersionRequest.FromString(request)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "VersionRequest could not be decoded: the request bytes are not a "
                "v1alpha1.VersionRequest protobuf message",
            )
        return pb.VersionResponse(
            version="v1alpha1", runtime_name=RUNTIME_NAME, runtime_version=__version__
        )

    async def Mount(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MountResponse:
        code, message, response = await self.provider.handle_mount(
            request, self.name, self.dialect, context.time_remaining()
        )
        if code is not None:
            await context.abort(_status(code), message)
        return response

    def add_to(self, server: grpc.aio.Server) -> None:
        """The generated ``add_CSIDriverProviderServicer_to_server``, except that requests
        arrive as bytes: grpc answers a failing deserializer with UNKNOWN, so the
        servicer decodes them itself and answers INVALID_ARGUMENT."""
        handlers = {
            "Version": grpc.unary_unary_rpc_method_handler(
                self.Version, response_serializer=pb.VersionResponse.SerializeToString
            ),
            "Mount": grpc.unary_unary_rpc_method_handler(
                self.Mount, response_serializer=pb.MountResponse.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        # As the generated code does: registered methods are found in C++, without
        # asking every generic handler in Python on each call.
        server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]


class Provider:
    """Everything one keyferry process serves, built once from the configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        for name in config.providers:
            if not name or not PROVIDER_NAME_RE.match(name):
                raise ConfigError(f"provider name {name!r} must match ^[a-zA-Z0-9_-]{{1,30}}$")
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(
            max_workers=config.max_concurrent_fetches, thread_name_prefix="keyferry-fetch"
        )
        self.services = Services(
            config=config,
            metrics=self.metrics,
            executor=self.executor,
            kube=KubeClient(config.kubernetes),
            values=TTLCache[Fetched](
                config.cache_ttl_seconds, stale_seconds=config.stale_if_error_seconds
            ),
            hmac_key=load_hmac_key(config.hmac_key_file),
        )
        self.registry = Registry(self.services)
        self.pipeline = Pipeline(self.registry, self.metrics)
        self.servers: dict[str, grpc.aio.Server] = {}
        self.health: dict[str, health_aio.HealthServicer] = {}
        self.sockets: dict[str, Path] = {}
        self._http: ProbeServer | None = None
        self.http_port: int | None = None
        self._stopping = asyncio.Event()
        self._inflight = 0
        self._idle = asyncio.Event()
        """Set whenever no Mount is in flight (what a drain waits for)."""
        self._idle.set()
        self.metrics.inflight.set_function(lambda: self._inflight)

    # -- Mount ---------------------------------------------------------------

    async def handle_mount(
        self,
        request: pb.MountRequest | bytes,
        name: str,
        dialect: str,
        time_remaining: float | None,
    ) -> tuple[Code | None, str, pb.MountResponse]:
        """Returns (error code or None, error message, response). ``request`` may be the
        wire bytes (as the server receives it)."""
        if self._inflight >= self.config.max_concurrent_mounts:
            return self._refuse(dialect)
        start = time.monotonic()
        budget = self.config.mount_timeout_seconds
        if time_remaining is not None:
            budget = max(0.1, min(budget, time_remaining - DEADLINE_MARGIN))
        deadline = Deadline(budget)
        self._inflight += 1
        self._idle.clear()
        mount: Mount | None = None
        record: dict[str, Any] = {"provider": name, "dialect": dialect}
        try:
            if self._stopping.is_set():
                raise Unavailable(
                    "keyferry is shutting down and takes no new Mounts; the driver retries "
                    "(on the keyferry that replaces this one)"
                )
            REDACTOR.start()
            if isinstance(request, bytes):
                request = protocol.parse(request)
            mount = protocol.decode(request, dialect=dialect, provider_name=name)
            REDACTOR.add(protocol.secret_values(mount))
            record.update(_who(mount))
            result = await self.pipeline.mount(mount, deadline)
            REDACTOR.add(f.contents for f in result.files)
            response = protocol.encode(result)
            files.check_budget(result.files, response.ByteSize(), self.config.max_response_bytes)
            record["objects"] = [{"id": v.id, "version": v.version} for v in result.versions]
            if result.skipped:
                record["skipped_optional"] = list(result.skipped)
            if result.stale:
                record["stale"] = [
                    {"object": o, "age_seconds": round(a, 1)} for o, a in result.stale
                ]
            record["files"] = len(result.files)
            record["outcome"] = "ok"
            return None, "", response
        except KeyferryError as exc:
            message = clip(exc.message, MAX_MESSAGE_CHARS)
            record.update(outcome="error", code=exc.code.value, error=message)
            return exc.code, message, pb.MountResponse()
        except Exception as exc:  # never a stack trace to the client
            incident = uuid.uuid4().hex[:12]
            log.exception("mount failed unexpectedly", extra={"incident": incident})
            err = Internal(f"internal error in keyferry (incident {incident}); see provider logs")
            record.update(outcome="error", code=err.code.value, error=type(exc).__name__)
            return err.code, err.message, pb.MountResponse()
        finally:
            seconds = time.monotonic() - start
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
            self.metrics.mount_done(dialect, record.get("outcome", "error"), seconds)
            record["duration_ms"] = round(seconds * 1000, 1)
            if mount is not None and mount.current_versions:
                record["rotation"] = True
            audit(record)

    def _refuse(self, dialect: str) -> tuple[Code, str, pb.MountResponse]:
        """Admission control: past ``max_concurrent_mounts`` a Mount is refused before
        anything is parsed or fetched, so the ones in flight keep their share of the CPU."""
        self.metrics.mounts_rejected.labels(dialect).inc()
        bound = self.config.max_concurrent_mounts
        return (
            Code.RESOURCE_EXHAUSTED,
            f"keyferry is already executing {bound} Mounts, its bound (max_concurrent_mounts: "
            f"{bound}); this Mount was refused before it started and is retried by kubelet. "
            "Raise max_concurrent_mounts in the keyferry configuration if the node has the "
            "CPU for more at once",
            pb.MountResponse(),
        )

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.config.socket_dir.mkdir(parents=True, exist_ok=True)
        for name, dialect in self.config.providers.items():
            path = self.config.socket_dir / f"{name}.sock"
            prepare_socket_path(path)
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)])
            Servicer(self, name, dialect).add_to(server)
            health = health_aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health, server)
            server.add_insecure_port(f"unix:{path}")
            old = os.umask(0o177)  # the socket must never be reachable by others, even briefly
            try:
                await server.start()
            finally:
                os.umask(old)
            os.chmod(path, self.config.socket_mode)
            for service in ("", SERVICE_NAME):
                await health.set(service, health_pb2.HealthCheckResponse.SERVING)
            self.servers[name] = server
            self.health[name] = health
            self.sockets[name] = path
            log.info("listening", extra={"provider": name, "dialect": dialect, "socket": str(path)})
        if self.config.http_address:
            self._http = ProbeServer(
                self.metrics.registry, self.readiness_problems, self.services.breakers.detail
            )
            self._http.start(self.config.http_address)
            self.http_port = self._http.port
        self._preload()
        if self.config.local_root and not self.config.hmac_key_file:
            log.warning(
                "no hmac_key_file configured: versions of local-backend objects change "
                "when keyferry restarts (set hmac_key_file to keep them stable)"
            )

    def _preload(self) -> None:
        """Import the SDKs of the cloud sockets in the background, so the first Mount
        does not pay for them (about 0.3-0.6 s each); the native socket stays lazy."""
        modules = [
            registry.CLOUDS[d].module("backend")
            for d in self.config.providers.values()
            if d in registry.CLOUDS
        ]
        if modules and self.services.kube.enabled:
            modules.append("lightkube.resources.core_v1")

        def run() -> None:
            for name in modules:
                try:
                    importlib.import_module(name)
                except ImportError as exc:
                    log.warning(
                        "backend not installed", extra={"module": name, "missing": exc.name}
                    )

        threading.Thread(target=run, name="keyferry-preload", daemon=True).start()

    def readiness_problems(self) -> list[str]:
        """A real Version call over each socket, as the driver would make it."""
        problems = []
        if self._stopping.is_set():
            problems.append("shutting down")
        for name, path in self.sockets.items():
            try:
                with grpc.insecure_channel(f"unix:{path}") as channel:
                    stub = pb_grpc.CSIDriverProviderStub(channel)
                    reply = stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=3)
                if reply.version != "v1alpha1":
                    problems.append(f"{name}: unexpected version {reply.version!r}")
            except grpc.RpcError as exc:
                problems.append(f"{name}: Version over {path} failed: {exc.code().name}")
        return problems

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new Mounts, let in-flight ones finish within the grace period, clean up.

        New Mounts are answered UNAVAILABLE (the driver retries) by :meth:`handle_mount`
        while the servers still accept: once grpc's own stop runs, it answers CANCELLED."""
        self._stopping.set()
        loop = asyncio.get_running_loop()
        until = loop.time() + (self.config.grace_seconds if grace is None else grace)
        for health in self.health.values():
            await health.enter_graceful_shutdown()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, until - loop.time()))
        except TimeoutError:
            log.warning("grace period over; cancelling the Mounts still in flight")
        remaining = max(0.0, until - loop.time())
        await asyncio.gather(*(s.stop(remaining) for s in self.servers.values()))
        for path in self.sockets.values():
            path.unlink(missing_ok=True)
        if self._http is not None:
            self._http.stop()
        await self.registry.close()
        await self.services.kube.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()
        log.info("signal received; draining", extra={"in_flight": self._inflight})
        await self.stop()


def prepare_socket_path(path: Path) -> None:
    """Remove a stale socket; refuse to take over a live one or a non-socket file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)
            log.info("removed stale socket", extra={"socket": str(path)})
            return
        raise ConfigError(f"cannot probe existing socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise ConfigError(
        f"{path} is in use by a running process (another provider with this name?); "
        "stop it first — two providers must never share a socket name on one node"
    )


MAX_MESSAGE_CHARS = 4000
"""Status messages stay well under gRPC's metadata limits (16 KiB in some clients)."""


def _who(mount: Mount) -> dict[str, Any]:
    return {
        "pod": {"namespace": mount.pod.namespace, "name": mount.pod.name, "uid": mount.pod.uid},
        "service_account": mount.pod.service_account,
        "secret_provider_class": mount.secret_provider_class,
        **sync_controller.caller(mount),
    }
