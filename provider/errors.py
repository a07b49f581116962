"""The error taxonomy: every failure keyferry reports carries a gRPC status code.

Only :mod:`provider.server` turns these into gRPC statuses; everything else
raises them. Messages are the user interface (they reach the pod's
``FailedMount`` event), so they name the field, the object and the fix, and
they never contain secret bytes, tokens or nodePublishSecretRef data.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Sequence


class Code(enum.Enum):
    """gRPC status codes keyferry uses (names match ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    INTERNAL = "INTERNAL"


class KeyferryError(Exception):
    """Base error. ``str(err)`` is the user-facing message."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str, *, code: Code | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidArgument(KeyferryError):
    code = Code.INVALID_ARGUMENT


class NotFound(KeyferryError):
    code = Code.NOT_FOUND


class Absent(NotFound):
    """An optional slot with nothing in it by design (e.g. a version-history entry
    beyond the versions that exist): skipped without being reported as missing."""


class PermissionDenied(KeyferryError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(KeyferryError):
    code = Code.UNAUTHENTICATED


class FailedPrecondition(KeyferryError):
    code = Code.FAILED_PRECONDITION


class Unavailable(KeyferryError):
    """Transient, provider-local or backend condition; the driver retries these."""

    code = Code.UNAVAILABLE


class DeadlineExceeded(KeyferryError):
    code = Code.DEADLINE_EXCEEDED


class ResourceExhausted(KeyferryError):
    code = Code.RESOURCE_EXHAUSTED


class Internal(KeyferryError):
    code = Code.INTERNAL


class ConfigError(Exception):
    """Invalid server configuration; raised at start-up, never during a Mount."""


# When several objects fail, the mount's status is the most actionable cause.
# Permanent user errors first; UNAVAILABLE only when every cause is transient,
# because the driver retries UNAVAILABLE and each retry repeats every cloud call.
_PRIORITY = [
    Code.INVALID_ARGUMENT,
    Code.FAILED_PRECONDITION,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
    Code.NOT_FOUND,
    Code.RESOURCE_EXHAUSTED,
    Code.INTERNAL,
    Code.DEADLINE_EXCEEDED,
    Code.UNAVAILABLE,
]


class ObjectError(KeyferryError):
    """A failure of one object, labelled with where it came from."""

    def __init__(self, label: str, cause: KeyferryError) -> None:
        super().__init__(f"{label}: {cause.message}", code=cause.code)
        self.label = label
        self.cause = cause


class MountFailed(KeyferryError):
    """Several errors reported as one status listing each of them."""

    def __init__(self, errors: Sequence[KeyferryError], *, summary: str = "") -> None:
        if not errors:
            raise ValueError("MountFailed needs at least one error")
        self.errors = list(errors)
        code = min((e.code for e in errors), key=_PRIORITY.index)
        if len(errors) == 1 and not summary:
            text = errors[0].message
        else:
            head = summary or f"{len(errors)} objects failed"
            text = head + ": " + "; ".join(f"[{i + 1}] {e.message}" for i, e in enumerate(errors))
        super().__init__(text, code=code)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, else a list of valid ones."""
    options = sorted(set(choices))
    lowered = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{lowered[close[0]]}'?)"
    return " (valid: " + ", ".join(options) + ")"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
