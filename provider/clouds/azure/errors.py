"""Azure failures as keyferry errors naming the object, the cause and the fix.

Entra ID's answers carry an AADSTS code, for the common ones a hint says what to
change (the federated credential, the tenant, the client secret); Key Vault's carry
an HTTP status and an inner code (access policy or RBAC, firewall, disabled object).
Nothing from nodePublishSecretRef (a service principal's client id) is quoted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.identity import CredentialUnavailableError

from ...breaker import Verdict
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
from ...jwt import unverified_claims
from ..budget import Call
from .identity import Identity, TokenUnavailable
from .ref import AzureRef, AzureSelection

_AADSTS = re.compile(r"(AADSTS\d+)[:\s]+([^\r\n]*)")
_AKV = re.compile(r"AKV\d{5}")
_AADSTS_HINTS = {
    "AADSTS70021": "no federated identity credential matches the token: create one on the "
    "identity {client} with issuer {issuer}, subject '{subject}' and audience "
    "'api://AzureADTokenExchange'",
    "AADSTS700211": "the token's issuer is not the one in the federated identity credential; "
    "set the credential's issuer to {issuer}",
    "AADSTS700027": "the token's signature does not verify with the keys published by its "
    "issuer {issuer}; check that the federated credential's issuer is this cluster's OIDC "
    "issuer URL and that its JWKS is current",
    "AADSTS700016": "the application {client} was not found in tenant {tenant}; check "
    "clientID and tenantID",
    "AADSTS90002": "tenant {tenant} was not found; check tenantID",
    "AADSTS7000215": "the client secret is invalid; update 'clientsecret' in the "
    "nodePublishSecretRef Secret",
    "AADSTS7000222": "the client secret has expired; create a new one and update the "
    "nodePublishSecretRef Secret",
    "AADSTS700024": "the pod's token is expired or not yet valid; check the node's clock",
}

_RBAC_ROLES = {
    "secret": "Key Vault Secrets User",
    "key": "Key Vault Crypto User",
    "cert": "Key Vault Certificate User",
}


def _chain_text(exc: BaseException) -> str:
    """The text of an exception and of the ones it was raised from: MSAL's discovery
    failure carries Entra's answer only in the error it wraps."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(texts) < 5:
        seen.add(id(current))
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def _auth_hint(text: str, identity: Identity) -> str:
    m = _AADSTS.search(text)
    if not m:
        return "check tenantID, clientID and the identity's federated credential or secret"
    code = m.group(1)
    subject = identity.describe.rpartition("(")[2].rstrip(")") if identity.assertion else ""
    issuer = "the cluster's OIDC issuer URL"
    if identity.assertion is not None:
        claims = unverified_claims(identity.assertion.get()) or {}
        if isinstance(claims.get("iss"), str) and claims["iss"]:
            issuer = repr(claims["iss"])
    hint = _AADSTS_HINTS.get(code)
    secret_client = identity.mode == "service_principal"
    client = "(the nodePublishSecretRef clientid)" if secret_client else identity.client_id
    if hint:
        return f"{code}: " + hint.format(
            client=client, tenant=identity.tenant_id, subject=subject, issuer=issuer
        )
    detail = m.group(2)
    if secret_client and identity.client_id:
        # Entra quotes the application id in its descriptions.
        detail = re.sub(
            re.escape(identity.client_id),
            "(the nodePublishSecretRef clientid)",
            detail,
            flags=re.IGNORECASE,
        )
    return f"{code}: {detail[:200].strip()}"


def _from_vault(exc: HttpResponseError, ref: AzureRef) -> bool:
    """Whether an error answer came from Key Vault (not from Entra ID)."""
    response = getattr(exc, "response", None)
    request = getattr(response, "request", None)
    url = str(getattr(request, "url", "") or "")
    return f"/{ref.kind}s/" in url or "/certificates/" in url or f"/{ref.kind}s?" in url


def verdict(exc: BaseException) -> Verdict:
    """What a failed SDK call says about its vault (:mod:`provider.breaker`)."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError | TimeoutError):
        return Verdict.DOWN
    if isinstance(exc, HttpResponseError) and not isinstance(exc, ClientAuthenticationError):
        status = exc.status_code or 0
        if status == 429:
            return Verdict.NEUTRAL
        return Verdict.DOWN if status >= 500 else Verdict.UP
    return Verdict.NEUTRAL


def translate(
    exc: Exception,
    ref: AzureRef,
    identity: Identity,
    call: Call | None = None,
    listing: AzureSelection | None = None,
) -> KeyferryError:
    """One SDK failure as a KeyferryError naming the object (or the ``listing`` of
    ``ref``'s vault), the cause and the fix (and, for a passing one, the attempts
    ``call`` made: :meth:`..budget.Call.outcome`)."""
    error = _translate(exc, ref, identity, listing)
    return call.outcome(error) if call is not None else error


def _translate(
    exc: Exception, ref: AzureRef, identity: Identity, listing: AzureSelection | None
) -> KeyferryError:
    what = f"listing {listing.describe()}" if listing is not None else ref.describe()
    if isinstance(exc, TokenUnavailable):
        return type(exc.error)(f"{what}: {exc.error.message}", code=exc.error.code)
    if isinstance(exc, KeyferryError):
        return exc
    if isinstance(exc, CredentialUnavailableError):
        return FailedPrecondition(f"{what}: {identity.describe} is not available on this node")
    if isinstance(exc, ClientAuthenticationError) and not _from_vault(exc, ref):
        return Unauthenticated(
            f"{what}: Entra ID refused a token for {identity.describe}: "
            f"{_auth_hint(_chain_text(exc), identity)}"
        )
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return DeadlineExceeded(f"{what}: Key Vault did not answer within the mount budget")
    if isinstance(exc, IncompleteReadError):
        return Unavailable(
            f"{what}: the connection to Key Vault broke in the middle of its answer; kubelet "
            "will retry the mount"
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Unavailable(
            f"{what}: cannot reach Key Vault ({type(exc).__name__}); check the vault name, DNS "
            "and network rules"
        )
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        code = exc.error.code if exc.error is not None else ""
        inner = ""
        if exc.error is not None and isinstance(exc.error.innererror, Mapping):
            inner = str(exc.error.innererror.get("code", ""))
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f"/{inner}" if inner else "")
        if status == 404 or isinstance(exc, ResourceNotFoundError):
            return NotFound(
                f"{what} was not found ({detail}); check the object name, type and version and "
                "that it is not deleted"
            )
        if status == 403:
            if inner.endswith("Disabled") or "disabled" in str(exc.error or "").lower():
                return FailedPrecondition(
                    f"{what} is disabled ({detail}); enable it or pick another version"
                )
            if listing is not None and inner != "ForbiddenByFirewall":
                return PermissionDenied(
                    f"{what}: {identity.describe} may not list the vault's secrets ({detail}); "
                    "a selection needs to list them: with Azure RBAC grant the role 'Key Vault "
                    "Secrets User' on the vault (it includes Microsoft.KeyVault/vaults/secrets/"
                    "readMetadata/action, the listing), with access policies add get and list "
                    "permissions on secrets for that identity"
                )
            if inner == "ForbiddenByRbac":
                return PermissionDenied(
                    f"{what}: {identity.describe} may not read it ({detail}); the vault uses "
                    f"Azure RBAC: grant the role '{_RBAC_ROLES[ref.kind]}' on the vault (or the "
                    "object) to that identity"
                )
            if inner == "ForbiddenByFirewall" or "firewall" in str(exc.error or "").lower():
                return PermissionDenied(
                    f"{what}: the vault's network rules block this node ({detail}); allow the "
                    "cluster's network or use a private endpoint"
                )
            perms = "get" + (" and list" if ref.history > 1 else "")
            return PermissionDenied(
                f"{what}: {identity.describe} may not read it ({detail}); add {perms} "
                f"permission on {ref.kind}s to the vault's access policy for that identity "
                f"(or, with Azure RBAC, the role '{_RBAC_ROLES[ref.kind]}')"
            )
        if status == 401:
            # Key Vault's reason code (AKV10032: another tenant's token) is kept; the SDK
            # already followed the challenge's resource, so the tenant is what is left.
            akv = _AKV.search(str(exc.error.message or "") if exc.error is not None else "")
            reason = f", {akv.group(0)}" if akv else ""
            return Unauthenticated(
                f"{what}: Key Vault rejected the token of {identity.describe} ({detail}{reason}); "
                "check that tenantID is the vault's tenant"
            )
        if status == 429:
            return Unavailable(
                f"{what}: Key Vault throttled the requests ({detail}) and the retries allowed "
                "within the mount budget ran out; kubelet will retry the mount"
            )
        if status >= 500:
            return Unavailable(f"{what}: Key Vault failed ({detail}); kubelet will retry the mount")
        if status == 400:
            return InvalidArgument(f"{what}: Key Vault rejected the request ({detail})")
        return Internal(f"{what}: unexpected Key Vault answer ({detail})")
    return Internal(f"{what}: unexpected error {type(exc).__name__}")
