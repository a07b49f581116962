"""The gate every AWS API call of the ``aws`` backend goes through, and the units of work.

:class:`Api` runs a blocking botocore call on the shared thread pool, at most
``max_concurrency`` at a time, bounded by the mount's deadline, timed and counted;
botocore's own retries run inside that deadline (:mod:`.retries`), each attempt counted.
The per-service readers (:mod:`.secretsmanager`, :mod:`.ssm`) work on :class:`Job` s
(one ref in one region) and fill an :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ...backend import Services
from ...breaker import Endpoint, Verdict
from ...errors import DeadlineExceeded, KeyferryError
from ...model import Deadline, Fetched
from .. import budget
from .credentials import Identity, IdentityPool
from .errors import THROTTLING_CODES, Failure, classify
from .ref import AwsRef, AwsTarget
from .settings import AwsSettings

NAME = "aws"
T = TypeVar("T")


@dataclass
class Job:
    """One ref to read in one region."""

    index: int
    ref: AwsRef
    target: AwsTarget
    region: str


@dataclass
class Outcome:
    """What reading a set of jobs gave, by job index."""

    results: dict[int, Fetched] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)

    def fail(self, jobs: Iterable[Job], failure: Failure) -> None:
        for job in jobs:
            self.failures[job.index] = failure


@dataclass
class Reading:
    """One identity reading one service in one region: the client, the mount's deadline
    and where results go."""

    identity: Identity
    client: Any
    region: str
    deadline: Deadline
    outcome: Outcome


class Reader(Protocol):
    """One service's reads: a group of jobs in one region."""

    title: str
    """The service as messages name it."""

    async def read(self, reading: Reading, jobs: list[Job]) -> None: ...


class Api:
    def __init__(self, settings: AwsSettings, services: Services, pool: IdentityPool) -> None:
        self.settings = settings
        self.services = services
        self.pool = pool
        self._semaphore: asyncio.Semaphore | None = None
        self.calls: dict[str, int] = {}
        """API calls made, by operation (for tests and the benchmark)."""

    async def client(self, identity: Identity, service: str, region: str) -> Any:
        """The identity's client for (service, region), created once."""
        client = identity.clients.get((service, region))
        if client is not None:
            return client
        return await self.services.run_blocking(self.pool.client, identity, service, region)

    async def call(
        self,
        service: str,
        operation: str,
        fn: Callable[..., T],
        deadline: Deadline,
        *args: Any,
        what: str = "",
        hint: str = "",
        hints: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        """Like :meth:`raw`, but failures come back as classified :class:`KeyferryError`
        (with ``hints[code]`` instead of ``hint`` for the AWS error codes it names; the
        attempts made stay attached, see :func:`..budget.attached`)."""
        if deadline.remaining() <= 0:
            raise DeadlineExceeded(f"{what or operation}: the mount's time budget is spent")
        try:
            return await self.raw(operation, fn, deadline, *args, **kwargs)
        except KeyferryError:
            raise
        except Exception as exc:
            failure = classify(exc, what or f"{service} {operation}", hint)
            if hints and failure.code in hints:
                failure = classify(exc, what or f"{service} {operation}", hints[failure.code])
            raise failure.error from None

    async def raw(
        self, operation: str, fn: Callable[..., T], deadline: Deadline, *args: Any, **kwargs: Any
    ) -> T:
        """One blocking SDK call on the shared pool, bounded by the mount deadline;
        botocore's exceptions pass unclassified (``TimeoutError`` once the budget is spent)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        if deadline.remaining() <= 0:
            raise TimeoutError
        self.calls[operation] = self.calls.get(operation, 0) + 1
        breaker = self.services.breakers.guard(_endpoint(fn), deadline, verdict)
        call = budget.begin(
            NAME,
            operation,
            deadline,
            max_attempts=self.settings.max_attempts,
            metrics=self.services.metrics,
            reserve=budget.RESERVE,
        )
        try:
            async with breaker, self._semaphore:
                return await asyncio.wait_for(
                    self.services.timed(NAME, operation, fn, *args, **kwargs),
                    timeout=max(0.05, call.remaining()),
                )
        except Exception as exc:
            budget.attach(exc, call)
            raise


def _endpoint(fn: Callable[..., Any]) -> Endpoint | None:
    """The endpoint a client method calls (``None`` for credential refreshes: the
    identity endpoints fail their own way). Its label has the region as ``{region}``."""
    meta = getattr(getattr(fn, "__self__", None), "meta", None)
    if meta is None:
        return None
    host = urlsplit(meta.endpoint_url).netloc
    region, service = meta.region_name, meta.service_model.endpoint_prefix
    if region and region in host:
        return Endpoint(NAME, host, host.replace(region, "{region}"))
    return Endpoint(NAME, f"{host} ({service} in {region})", host)


def verdict(exc: BaseException) -> Verdict:
    """What a failed botocore call says about its endpoint (:mod:`provider.breaker`)."""
    if isinstance(exc, ClientError):
        code = str((exc.response.get("Error") or {}).get("Code", ""))
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING_CODES or status == 429:
            return Verdict.NEUTRAL
        return Verdict.DOWN if status >= 500 else Verdict.UP
    if isinstance(exc, HTTPClientError | BotoConnectionError | TimeoutError):
        return Verdict.DOWN
    return Verdict.NEUTRAL
