"""The floor for a Python provider: grpc.aio on a Unix socket, parse the attributes,
return 5 fixed files. ``python bench/trivial_provider.py SOCKET`` serves until killed."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provider._proto.v1alpha1 import service_pb2 as pb
from provider._proto.v1alpha1 import service_pb2_grpc as pb_grpc

FILES = [pb.File(path=f"file-{i}", mode=0o644, contents=b"value %d" % i) for i in range(5)]


class Trivial(pb_grpc.CSIDriverProviderServicer):  # type: ignore[misc]
    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(version="v1alpha1", runtime_name="trivial", runtime_version="0")

    async def Mount(self, request: pb.MountRequest, context: Any) -> pb.MountResponse:
        attributes = json.loads(request.attributes)
        if "secretProviderClass" not in attributes:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no secretProviderClass")
        return pb.MountResponse(
            object_version=[pb.ObjectVersion(id=f"file-{i}", version="1") for i in range(5)],
            files=FILES,
        )


async def serve(socket: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_CSIDriverProviderServicer_to_server(Trivial(), server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
