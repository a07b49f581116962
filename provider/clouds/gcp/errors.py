"""Google's errors as keyferry errors: one message a user can act on, naming the
resource, the identity and the fix, and never a token or key material.

Token endpoints (STS, IAM Credentials, the OAuth2 token endpoint, the metadata
server) fail through google-auth, whose exceptions carry the response body but
not the HTTP status; the caller passes the status its transport saw, which is
what tells a rejection (4xx: PERMISSION_DENIED) from an outage (5xx, 429 or no
answer: UNAVAILABLE, kubelet retries). Secret Manager and Parameter Manager
fail through google-api-core with the gRPC status of the call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import google.auth.exceptions
from google.api_core import exceptions as core_exceptions

from ...errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KeyferryError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from ..budget import Call
from .ref import GSA_ANNOTATION, KEY_JSON, GcpLocator, SecretSelection
from .settings import GcpSettings

# -- token endpoints (google-auth) ----------------------------------------------------


def _error_detail(exc: BaseException) -> str:
    """The service's own error text (STS/IAM JSON bodies), trimmed; never a token."""
    texts: list[str] = []
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "replace")
        if isinstance(arg, str) and arg.strip():
            texts.append(arg.strip())
    for text in reversed(texts):  # google-auth puts the raw response body last
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        err = body.get("error")
        if isinstance(err, dict):
            detail = str(err.get("message") or err.get("status") or "")
        else:
            detail = " ".join(str(x) for x in (err, body.get("error_description")) if x)
        if detail:
            return detail[:300]
    return texts[0][:300] if texts else ""


def _in_parens(detail: str) -> str:
    return f" ({detail})" if detail else ""


def _is_outage(exc: BaseException, status: int | None) -> bool:
    """Whether a token endpoint failure is transient (UNAVAILABLE), not a rejection.

    A 5xx or 429 answer, or no answer at all, is an outage; any other answer
    (4xx) is the service refusing the credential. Without a status, google-auth's
    own classification decides (TransportError, ``retryable``)."""
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(exc, google.auth.exceptions.TransportError) or bool(
        getattr(exc, "retryable", False)
    )


def _status_text(status: int | None) -> str:
    return f"HTTP {status}" if status is not None else "no answer"


def sts_error(
    exc: BaseException, status: int | None, sts_url: str, audience: str, ns: str, ksa: str
) -> KeyferryError:
    """STS refused (or failed) to exchange the pod's token for ``audience``."""
    detail = _error_detail(exc)
    if _is_outage(exc, status) and "invalid_grant" not in detail:
        return Unavailable(
            f"the Google STS endpoint {sts_url} failed to exchange the token "
            f"of {ns}/{ksa} ({_status_text(status)}, {type(exc).__name__}); kubelet will "
            "retry the mount"
        )
    return PermissionDenied(
        f"Google STS rejected the workload identity token of service account {ns}/{ksa} "
        f"for audience '{audience}'"
        + _in_parens(detail)
        + "; check that the cluster is registered with this workload identity pool and "
        "provider, and that the driver's tokenRequests audience matches"
    )


def iam_error(
    exc: BaseException,
    status: int | None,
    iam_credentials_url: str,
    gsa: str,
    ns: str,
    ksa: str,
    member: str,
) -> KeyferryError:
    """IAM Credentials refused (or failed) to let ``ns/ksa`` impersonate ``gsa``
    (``member``: the IAM member ``ns/ksa`` is in its workload identity pool)."""
    if _is_outage(exc, status):
        return Unavailable(
            f"IAM Credentials at {iam_credentials_url} failed to impersonate "
            f"{gsa} ({_status_text(status)}, {type(exc).__name__}); kubelet will retry "
            "the mount"
        )
    return PermissionDenied(
        f"Kubernetes service account {ns}/{ksa} may not impersonate {gsa}"
        + _in_parens(_error_detail(exc))
        + f"; the IAM binding is probably missing: grant roles/iam.workloadIdentityUser on "
        f"{gsa} to member '{member}', or remove the "
        f"{GSA_ANNOTATION} annotation to use the pod's own principal"
    )


def provider_adc_error(
    exc: BaseException, status: int | None, settings: GcpSettings
) -> KeyferryError:
    """keyferry's own credentials (provider-adc) could not be loaded or were refused."""
    path = settings.provider_credentials_file
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return FailedPrecondition(
            f"backends.gcp.provider_credentials_file ({path}) is missing or is not a Google "
            "credentials file; fix the path or the file in the keyferry server configuration"
        )
    if path:
        source = f"backends.gcp.provider_credentials_file ({path})"
        fix = "the key may be disabled or deleted: replace the credentials file"
    else:
        source = f"the metadata server at {settings.metadata_url}"
        fix = "check the node's service account and its access scopes"
    if _is_outage(exc, status):
        return Unavailable(
            f"keyferry could not get its own Google credentials (provider-adc) from "
            f"{source} ({_status_text(status)}, {type(exc).__name__}); "
            "kubelet will retry the mount"
        )
    return PermissionDenied(
        f"Google refused keyferry's own credentials (provider-adc) from {source}"
        + _in_parens(_error_detail(exc))
        + f"; {fix}"
    )


def key_json_error(
    exc: BaseException, status: int | None, token_url: str, info: Mapping[str, Any]
) -> KeyferryError:
    """The OAuth2 token endpoint refused (or failed) the key.json service account
    ``info``; the message never names the key's email or ids."""
    if _is_outage(exc, status):
        return Unavailable(
            f"{token_url} failed for the {KEY_JSON} service account "
            f"({_status_text(status)}); kubelet will retry the mount"
        )
    # Never the key's client_email or key id: nodePublishSecretRef data.
    detail = _error_detail(exc)
    for field_name in ("client_email", "private_key_id", "client_id"):
        value = info.get(field_name)
        if isinstance(value, str) and len(value) >= 3:
            detail = detail.replace(value, f"<{field_name}>")
    return PermissionDenied(
        f"Google rejected the nodePublishSecretRef {KEY_JSON} service account"
        + _in_parens(detail)
        + "; the key may be disabled or deleted"
    )


# -- Secret Manager and Parameter Manager (google-api-core) ----------------------------

_GRANT = {
    "secretmanager": "grant roles/secretmanager.secretAccessor on the secret to {who}",
    "parametermanager": (
        "grant roles/parametermanager.parameterViewer on the project to {who} "
        "(Parameter Manager has no per-parameter IAM; an IAM condition can narrow it)"
    ),
}


def _server_text(exc: BaseException) -> str:
    text = getattr(exc, "message", "") or ""
    text = str(text).strip().replace("\n", " ")
    return f" (server: {text[:240]})" if text else ""


def translate(
    exc: BaseException,
    ref: GcpLocator,
    endpoint: str,
    call: Call | None = None,
    member: str = "",
) -> KeyferryError:
    """An API error as a keyferry error naming the resource and the fix (``member``: the
    IAM member the pod's identity is, to name in a PERMISSION_DENIED; ``call``: the
    attempts made, for a transient failure, see :meth:`..budget.Call.outcome`)."""
    error = _translate(exc, ref, endpoint, member)
    return call.outcome(error) if call is not None else error


def _translate(exc: BaseException, ref: GcpLocator, endpoint: str, member: str) -> KeyferryError:
    what = ref.api
    name = ref.name
    server = _server_text(exc)
    if isinstance(ref, SecretSelection):
        listing = _listing_error(exc, ref, member, server)
        if listing is not None:
            return listing
    if isinstance(exc, core_exceptions.NotFound):
        where = f" in location {ref.location}" if ref.location else ""
        return NotFound(
            f"{what} has no {ref.kind} {name}{where}{server}; check the project, the name and "
            "the version, and for regional resources the location"
        )
    if isinstance(exc, core_exceptions.PermissionDenied):
        who = (
            f"member '{member}'"
            if member
            else "the identity the pod uses (its Google service account, or its workload "
            "identity principal)"
        )
        fix = _GRANT[ref.service].format(who=who)
        return PermissionDenied(f"{what} denied access to {name}{server}; {fix}")
    if isinstance(exc, core_exceptions.Unauthenticated):
        return Unauthenticated(f"{what} did not accept the access token for {name}{server}")
    if isinstance(exc, core_exceptions.FailedPrecondition):
        return FailedPrecondition(
            f"{what} cannot serve {name}{server}; the version may be disabled or destroyed: "
            "enable it or point at another version"
        )
    if isinstance(exc, core_exceptions.InvalidArgument):
        return InvalidArgument(f"{what} rejected the name {name}{server}")
    if isinstance(exc, core_exceptions.TooManyRequests):
        return Unavailable(
            f"{what} at {endpoint} is throttling requests for {name} (quota exhausted){server}; "
            "kubelet will retry the mount (raise the quota if this lasts)"
        )
    if isinstance(exc, core_exceptions.ServiceUnavailable):
        return Unavailable(f"{what} at {endpoint} is unavailable for {name}{server}")
    if isinstance(exc, core_exceptions.DeadlineExceeded | core_exceptions.RetryError):
        return DeadlineExceeded(
            f"{what} at {endpoint} did not answer for {name} within the time budget{server}"
        )
    return Internal(f"{what} failed for {name}: {type(exc).__name__}{server}")


def _listing_error(
    exc: BaseException, ref: SecretSelection, member: str, server: str
) -> KeyferryError | None:
    """A ListSecrets refusal in words of its own (others read as for one secret)."""
    who = f"member '{member}'" if member else "the identity the pod uses"
    if isinstance(exc, core_exceptions.PermissionDenied):
        return PermissionDenied(
            f"Secret Manager denied listing the secrets of {ref.name}{server}; a selection "
            f"needs secretmanager.secrets.list on the project: grant roles/secretmanager.viewer "
            f"on project {ref.project} to {who} (roles/secretmanager.secretAccessor reads "
            "values but cannot list them; the selected secrets also need it)"
        )
    if isinstance(exc, core_exceptions.NotFound):
        return NotFound(f"Secret Manager has no project {ref.name}{server}; check the project")
    if isinstance(exc, core_exceptions.InvalidArgument):
        return InvalidArgument(
            f"Secret Manager rejected the listing of {ref.name} with filter {ref.filter!r}{server}"
        )
    return None
