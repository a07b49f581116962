"""AWS failures as keyferry errors, and which of them may fail over.

Failover and retries are for transient trouble only: throttling, 5xx and
network errors. A 4xx (AccessDenied, ResourceNotFound, ...) is the caller's
problem and is reported as is, never hidden by another region.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ...errors import (
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KeyferryError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    clip,
)
from .. import budget

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "ParameterVersionLabelNotFound",
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedOperation",
        "DecryptionFailure",
        "KMSAccessDeniedException",
    }
)
UNAUTHENTICATED_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidIdentityToken",
        "IDPRejectedClaim",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidSignatureException",
    }
)
INVALID_CODES = frozenset(
    {"InvalidParameterException", "ValidationException", "InvalidKeyId", "InvalidParameters"}
)


@dataclass
class Failure:
    """A classified failure: the error to report and whether failover may help."""

    error: KeyferryError
    transient: bool
    code: str = ""


def _brief(text: str) -> str:
    """An AWS message on one line, at most 240 characters."""
    return clip(" ".join(text.split()), 240)


def from_code(code: str, status: int, message: str, what: str, hint: str = "") -> Failure:
    """Classify an AWS error code (from an exception or a batch result entry)."""
    detail = f"{what}: {code}" + (f" (HTTP {status})" if status else "")
    if message:
        detail += f": {_brief(message)}"
    if code in THROTTLING_CODES or status == 429:
        return Failure(
            Unavailable(detail + "; AWS is throttling requests, retries were exhausted"),
            True,
            code,
        )
    if status >= 500 or code in ("InternalServiceError", "InternalFailure", "ServiceUnavailable"):
        return Failure(Unavailable(detail + "; AWS had a server error"), True, code)
    suffix = f"; {hint}" if hint else ""
    if code in NOT_FOUND_CODES:
        return Failure(
            NotFound(detail + (suffix or "; check the name, version and region")), False, code
        )
    if code in DENIED_CODES:
        return Failure(PermissionDenied(detail + suffix), False, code)
    if code in UNAUTHENTICATED_CODES:
        return Failure(Unauthenticated(detail + suffix), False, code)
    if code in INVALID_CODES:
        return Failure(InvalidArgument(detail + suffix), False, code)
    return Failure(FailedPrecondition(detail + suffix), False, code)


def classify(exc: BaseException, what: str, hint: str = "") -> Failure:
    """Turn an exception raised by a botocore call into a :class:`Failure`, saying how
    many attempts the call made and, when the Mount's budget ended its retries, as
    DEADLINE_EXCEEDED (no failover then: there is no time left for it)."""
    failure = _classify(exc, what, hint)
    call = budget.attached(exc)
    if call is None or budget.attached(failure.error) is call:
        return failure
    error = call.outcome(failure.error)
    budget.attach(error, call)
    return Failure(error, failure.transient and call.stopped != "budget", failure.code)


def _classify(exc: BaseException, what: str, hint: str) -> Failure:
    if isinstance(exc, KeyferryError):
        return Failure(exc, exc.code is Code.UNAVAILABLE)
    if isinstance(exc, ClientError):
        err: dict[str, Any] = exc.response.get("Error", {}) or {}
        meta: dict[str, Any] = exc.response.get("ResponseMetadata", {}) or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        return from_code(
            str(err.get("Code", "Unknown")), status, str(err.get("Message", "")), what, hint
        )
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Failure(
            DeadlineExceeded(f"{what}: no answer within the mount's time budget"), False, "Timeout"
        )
    if isinstance(exc, HTTPClientError | BotoConnectionError):
        return Failure(
            Unavailable(f"{what}: network error talking to AWS ({type(exc).__name__})"),
            True,
            type(exc).__name__,
        )
    if isinstance(exc, NoCredentialsError):
        return Failure(FailedPrecondition(f"{what}: no AWS credentials"), False, "NoCredentials")
    if isinstance(exc, CredentialRetrievalError):
        return Failure(
            Unavailable(f"{what}: {_brief(str(exc))}"),
            True,
            "CredentialRetrieval",
        )
    if isinstance(exc, BotoCoreError):
        return Failure(
            Internal(f"{what}: AWS SDK error {type(exc).__name__}: {_brief(str(exc))}"),
            False,
            type(exc).__name__,
        )
    return Failure(Internal(f"{what}: unexpected {type(exc).__name__}"), False, type(exc).__name__)
