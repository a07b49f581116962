"""Logs, the audit record and Prometheus metrics.

Logs are JSON lines on stderr. Nothing here is ever handed secret bytes,
tokens or nodePublishSecretRef data; as a second line of defence
:class:`Redactor` scrubs any registered secret value from every log line.
Metric labels are low-cardinality: dialect, backend, operation, outcome.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LOGGER_NAME = "keyferry"
_JSON_ESCAPES = re.compile(r'([\\"]|[^\ -~])')
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class Redactor:
    """Replaces the secret values of the *current request* in its log lines.

    Values live in a context variable, so one request's values never touch another
    request's lines (a tenant must not be able to blank other tenants' audit records
    by mounting a secret whose value is, say, their namespace). Each gRPC call runs
    in its own task, and blocking work is run with the caller's context copied.
    """

    _values: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
        "keyferry_redact", default=()
    )
    MIN_LENGTH = 6  # shorter strings would redact ordinary words
    MAX_LENGTH = 64 * 1024

    def start(self) -> None:
        """Begin a request with nothing to redact."""
        self._values.set(())

    def add(self, values: Iterable[str | bytes]) -> None:
        current = list(self._values.get())
        for v in values:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            if self.MIN_LENGTH <= len(text) <= self.MAX_LENGTH:
                current.append(text)
                # log lines are JSON-encoded (json's own test for what it escapes)
                escaped = json.dumps(text)[1:-1] if _JSON_ESCAPES.search(text) else text
                if escaped != text:
                    current.append(escaped)
        self._values.set(tuple(current))

    def scrub(self, text: str) -> str:
        for v in self._values.get():
            if v in text:
                text = text.replace(v, "[REDACTED]")
        return text


REDACTOR = Redactor()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _second(int(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return REDACTOR.scrub(json.dumps(entry, default=str, sort_keys=False))


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def setup_logging(level: str = "info", stream: Any = None) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # No line shows the process or thread: do not look them up for every record.
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    # Third-party loggers (SDKs) go through the same JSON formatter and redaction,
    # warnings and above only: their debug output can quote request details.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


_AUDIT = logging.getLogger(f"{LOGGER_NAME}.audit")


def audit(record: Mapping[str, Any]) -> None:
    """One line per Mount: who, which class, which objects and versions, outcome.

    The record is built directly (``Logger.info`` would also walk the stack to find the
    caller's file and line, which an audit line does not show)."""
    if _AUDIT.isEnabledFor(logging.INFO):
        _AUDIT.handle(
            _AUDIT.makeRecord(
                _AUDIT.name, logging.INFO, "", 0, "mount", (), None, extra={"audit": record}
            )
        )


_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Prometheus metrics of one server; a registry per instance keeps tests apart."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.mounts = Counter(
            "keyferry_mounts",
            "Mount calls by dialect and outcome",
            ["dialect", "outcome"],
            registry=r,
        )
        self.mount_duration = Histogram(
            "keyferry_mount_duration_seconds",
            "Mount duration",
            ["dialect"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        # labels() takes a lock and builds a key on every call: children are kept
        self._mount_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._call_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self.inflight = Gauge("keyferry_mounts_in_flight", "Mounts in progress", registry=r)
        self.mounts_rejected = Counter(
            "keyferry_mounts_rejected",
            "Mounts refused at once because max_concurrent_mounts were executing",
            ["dialect"],
            registry=r,
        )
        self.backend_requests = Counter(
            "keyferry_backend_requests",
            "Backend API requests by backend, operation and outcome",
            ["backend", "operation", "outcome"],
            registry=r,
        )
        self.backend_attempts = Counter(
            "keyferry_backend_attempts",
            "Attempts on the wire (a request and its retries) by backend, operation and "
            "outcome: ok, throttled, server_error, network_error, timeout, rejected",
            ["backend", "operation", "outcome"],
            registry=r,
        )
        self.backend_latency = Histogram(
            "keyferry_backend_request_duration_seconds",
            "Backend API request latency",
            ["backend", "operation"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.cache_events = Counter(
            "keyferry_cache_events",
            "Cache lookups by cache and result",
            ["cache", "result"],
            registry=r,
        )
        self.objects_skipped = Counter(
            "keyferry_optional_objects_skipped",
            "Optional objects not found",
            ["backend"],
            registry=r,
        )

        self.endpoint_fail_fast = Counter(
            "keyferry_endpoint_fail_fast",
            "Backend calls refused at once because their endpoint is down",
            ["backend", "endpoint"],
            registry=r,
        )
        self.endpoint_transitions = Counter(
            "keyferry_endpoint_transitions",
            "Backend endpoints entering a state (open, half_open, closed)",
            ["backend", "endpoint", "state"],
            registry=r,
        )
        self.endpoint_states: Callable[[], Mapping[tuple[str, str], int]] = dict
        """(backend, endpoint label) -> state, read when scraped (:mod:`provider.breaker`
        sets it)."""
        r.register(_EndpointStates(self))
        self.stale_served = Counter(
            "keyferry_stale_values_served",
            "Last-known-good values served while the backend was unavailable",
            ["backend"],
            registry=r,
        )
        self.stale_listings_served = Counter(
            "keyferry_stale_listings_served",
            "Last-known-good listings (selection, history) served while the backend was "
            "unavailable",
            ["backend", "listing"],
            registry=r,
        )

    def mount_done(self, dialect: str, outcome: str, seconds: float) -> None:
        children = self._mount_children.get((dialect, outcome))
        if children is None:
            children = self.mounts.labels(dialect, outcome), self.mount_duration.labels(dialect)
            self._mount_children[(dialect, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def backend_call(self, backend: str, operation: str, outcome: str, seconds: float) -> None:
        key = (backend, operation, outcome)
        children = self._call_children.get(key)
        if children is None:
            children = (
                self.backend_requests.labels(backend, operation, outcome),
                self.backend_latency.labels(backend, operation),
            )
            self._call_children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class _EndpointStates(Collector):
    """``keyferry_endpoint_state{backend, endpoint}``, computed when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "keyferry_endpoint_state",
            "Backend endpoint state: 0 closed, 1 half open (probing), 2 open (failing fast)",
            labels=["backend", "endpoint"],
        )
        for (backend, label), value in sorted(self.metrics.endpoint_states().items()):
            family.add_metric([backend, label], value)
        yield family
