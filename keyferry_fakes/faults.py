"""Fault injection the HTTP fakes share: what a cloud endpoint does on a bad day.

A fake keeps a :class:`Faults` and asks it, for each request, whether a fault applies
(:meth:`Faults.take`, by a key the fake chooses: an operation, a path, an endpoint). A
:class:`Fault` is one of

- ``status``: an error answer (the fake words the body as its service does), with a
  ``Retry-After`` header when one is given: throttling (429, ``ThrottlingException``),
  a 5xx burst, or an outage (``times=None``: every request);
- ``reset``: the status line, the headers and half of the body of a success, then the
  connection is reset (TCP RST): a connection reset mid-response;
- ``slow``: nothing is sent until ``seconds`` have passed (or the fake is reset), then
  the request is answered as usual: a slow first byte.

``times`` counts the requests a fault answers (``None``: all of them); ``hits`` how many
it did. :meth:`Faults.apply` carries a fault out for a ``BaseHTTPRequestHandler``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Literal

Kind = Literal["status", "reset", "slow"]


@dataclass
class Fault:
    kind: Kind
    times: int | None = 1
    """Requests to answer this way; ``None``: every one (an outage)."""
    status: int = 503
    code: str = ""
    """The service's error code, for fakes whose error bodies carry one."""
    retry_after: str = ""
    """The ``Retry-After`` header value (seconds), empty for none."""
    seconds: float = 0.0
    """``slow``: how long the first byte is held back."""
    where: str = ""
    """What the fake matches the fault against (an operation, a path part); empty: all."""
    text: str = "injected"
    """The error message, for fakes whose errors carry one."""
    hits: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after} if self.retry_after else {}


class Faults:
    """The faults armed on one fake, applied in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._released = threading.Event()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def status(
        self,
        status: int,
        *,
        times: int | None = 1,
        code: str = "",
        retry_after: str = "",
        where: str = "",
    ) -> Fault:
        """Answer ``status`` (``times=None``: an outage)."""
        return self.add(Fault("status", times, status, code, retry_after, where=where))

    def reset(self, *, times: int | None = 1, where: str = "") -> Fault:
        """Reset the connection in the middle of the response."""
        return self.add(Fault("reset", times, where=where))

    def slow(self, seconds: float, *, times: int | None = 1, where: str = "") -> Fault:
        """Hold the first byte back for ``seconds`` (until :meth:`clear` at the latest)."""
        return self.add(Fault("slow", times, seconds=seconds, where=where))

    def take(self, key: str) -> Fault | None:
        """The first armed fault whose ``where`` is part of ``key``, counted as used."""
        with self._lock:
            for fault in self._faults:
                if fault.where not in key:
                    continue
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                fault.hits += 1
                return fault
        return None

    def apply(
        self,
        h: BaseHTTPRequestHandler,
        key: str,
        answer: Callable[[Fault], None],
        content_type: str = "application/json",
    ) -> bool:
        """Apply the fault armed for ``key`` to the request ``h`` is handling: reset it,
        hold it back (and return ``False``: the fake answers it as usual), or have
        ``answer`` send the error. ``True`` when the request has been dealt with."""
        fault = self.take(key)
        if fault is None:
            return False
        if fault.kind == "reset":
            reset_mid_response(h, content_type)
            return True
        if fault.kind == "slow":
            self.hold(fault)
            return False
        answer(fault)
        return True

    def hold(self, fault: Fault) -> None:
        """Wait out a ``slow`` fault (returns early once the faults are cleared)."""
        self._released.wait(fault.seconds)

    def clear(self) -> None:
        """Disarm everything and let every held request go."""
        with self._lock:
            self._faults.clear()
            released, self._released = self._released, threading.Event()
        released.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)


def reset_mid_response(
    h: BaseHTTPRequestHandler, content_type: str = "application/json", size: int = 512
) -> None:
    """Send a 200's status line and headers announcing ``size`` bytes, half of them, then
    reset the connection (SO_LINGER 0 makes ``close`` send an RST)."""
    body = b'{"padding": "' + b"x" * max(0, size - 15) + b'"}'
    h.send_response(200)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body[: len(body) // 2])
    h.wfile.flush()
    abort_connection(h)


def abort_connection(h: BaseHTTPRequestHandler) -> None:
    """Close the handler's connection with an RST, and make the handler stop quietly."""
    h.close_connection = True
    sock = h.connection
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        # An SSL socket's close() would first try to send close_notify; the raw descriptor
        # is what must go.
        raw = socket.socket(fileno=sock.detach()) if hasattr(sock, "detach") else sock
        raw.close()
    except OSError:
        pass


FAULTS = (
    "throttled",
    "throttled_retry_after",
    "retry_after_past_budget",
    "burst_5xx",
    "reset",
    "slow",
    "outage",
    "slow_past_budget",
)
"""What :func:`arm` can make an endpoint do: throttle twice; throttle once, asking to retry
after a while; throttle asking to retry after 600 s; a 5xx twice; reset the connection
mid-response once; answer a first byte late once; answer every request with a 5xx;
answer nothing for a minute (until the faults are cleared)."""


@dataclass(frozen=True)
class Wire:
    """How an endpoint words throttling and a server error: (HTTP status, error code);
    for a gRPC fake the status is unused and the code is a ``grpc.StatusCode`` name."""

    throttled: tuple[int, str]
    server_error: tuple[int, str]


HTTP = Wire(throttled=(429, ""), server_error=(503, ""))
AWS_JSON = Wire(throttled=(400, "ThrottlingException"), server_error=(503, "ServiceUnavailable"))
AWS_QUERY = Wire(throttled=(400, "Throttling"), server_error=(503, "ServiceUnavailable"))
GRPC = Wire(throttled=(0, "RESOURCE_EXHAUSTED"), server_error=(0, "UNAVAILABLE"))


def arm(
    faults: Faults,
    fault: str,
    wire: Wire,
    where: str = "",
    *,
    retry_after: float = 1.0,
    slow: float = 1.0,
) -> None:
    """Make the fake behind ``faults`` misbehave as ``fault`` (a :data:`FAULTS` entry)
    says: ``retry_after`` for ``throttled_retry_after``, ``slow`` for ``slow``."""
    t_status, t_code = wire.throttled
    e_status, e_code = wire.server_error
    if fault == "throttled":
        faults.status(t_status, code=t_code, times=2, where=where)
    elif fault == "throttled_retry_after":
        faults.status(t_status, code=t_code, times=1, retry_after=f"{retry_after:g}", where=where)
    elif fault == "retry_after_past_budget":
        faults.status(t_status, code=t_code, times=None, retry_after="600", where=where)
    elif fault == "burst_5xx":
        faults.status(e_status, code=e_code, times=2, where=where)
    elif fault == "reset":
        faults.reset(times=1, where=where)
    elif fault == "slow":
        faults.slow(slow, times=1, where=where)
    elif fault == "outage":
        faults.status(e_status, code=e_code, times=None, where=where)
    elif fault == "slow_past_budget":
        faults.slow(60.0, times=None, where=where)
    else:
        raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
