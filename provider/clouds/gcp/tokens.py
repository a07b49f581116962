"""Fresh Google access tokens over HTTP, for the identities other than the pod's
workload identity: keyferry's own credentials (``provider-adc``: a configured
credentials file, else the metadata server) and a nodePublishSecretRef
``key.json`` service-account key. Also the plumbing every token request shares
(workload.py uses it too): one HTTP session, requests bounded by the mount's
budget that remember the status of their answer, and the metadata server.

Nothing here caches; identity.py caches the tokens. Calls are blocking and run
on the shared worker pool.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import google.auth
import google.auth.exceptions
import requests
from google.auth.compute_engine import _metadata
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from ...errors import InvalidArgument, Unavailable
from ..budget import Call, retry_after
from .errors import key_json_error, provider_adc_error
from .ref import KEY_JSON
from .settings import GcpSettings

SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# google-auth ships py.typed but leaves these untyped; call them through Any.
_google_auth: Any = google.auth
_service_account: Any = service_account
_metadata_get: Any = _metadata.get


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    expiry: float
    """Wall-clock expiry (``time.time()`` seconds)."""


def expiry(value: datetime.datetime | None, default_seconds: float = 300.0) -> float:
    """A google-auth credential's expiry as ``time.time()`` seconds."""
    if value is None:
        return time.time() + default_seconds
    if value.tzinfo is None:  # google-auth keeps naive UTC datetimes
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


class BoundedRequest:
    """A google-auth transport request whose timeout never exceeds the budget.

    Remembers the HTTP status of its last answer (google-auth's STS and IAM errors do
    not carry it, and it is what tells a rejection (4xx) from an outage (5xx)), the
    ``Retry-After`` it asked for, and whether a request without an answer timed out."""

    def __init__(self, inner: Request, timeout: float, call: Call | None = None) -> None:
        self._inner = inner
        self._timeout = max(0.1, timeout)
        self._call = call
        self.last_status: int | None = None
        self.last_asked: float | None = None
        self.timed_out = False

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        limit = self._timeout if timeout is None else min(timeout, self._timeout)
        if self._call is not None:
            limit = max(0.01, min(limit, self._call.remaining()))
        self.last_status, self.last_asked, self.timed_out = None, None, False
        try:
            response = self._inner(
                url, method=method, body=body, headers=headers, timeout=limit, **kwargs
            )
        except google.auth.exceptions.TransportError as exc:
            self.timed_out = isinstance(exc.__cause__, requests.exceptions.Timeout)
            raise
        status = getattr(response, "status", None)
        self.last_status = status if isinstance(status, int) else None
        self.last_asked = retry_after((getattr(response, "headers", None) or {}).get("Retry-After"))
        return response


class TokenClient:
    """One HTTP session to Google's token endpoints and the metadata server."""

    def __init__(self, settings: GcpSettings) -> None:
        self.settings = settings
        self._session = requests.Session()
        self.exchanges = 0
        """Key and provider-adc token fetches made; for tests and the benchmark."""

    def close(self) -> None:
        self._session.close()

    def request(self, budget: float, call: Call | None = None) -> BoundedRequest:
        return BoundedRequest(Request(self._session), budget, call)

    def metadata(self, request: BoundedRequest, path: str, **kwargs: Any) -> Any:
        """``path`` below ``computeMetadata/v1/`` on the configured metadata server."""
        root = self.settings.metadata_url.rstrip("/") + "/computeMetadata/v1/"
        return _metadata_get(request, path, root=root, **kwargs)

    def provider_adc(self, budget: float) -> AccessToken:
        """keyferry's own token: the configured credentials file, else the metadata server."""
        request = self.request(budget)
        self.exchanges += 1
        try:
            if self.settings.provider_credentials_file:
                creds, _ = _google_auth.load_credentials_from_file(
                    self.settings.provider_credentials_file, scopes=[SCOPE]
                )
                creds.refresh(request)
                return AccessToken(str(creds.token), expiry(creds.expiry))
            data = self.metadata(
                request,
                "instance/service-accounts/default/token",
                params={"scopes": SCOPE},
                retry_count=2,
                timeout=budget,
            )
        except google.auth.exceptions.GoogleAuthError as exc:
            raise provider_adc_error(exc, request.last_status, self.settings) from None
        if not isinstance(data, Mapping) or "access_token" not in data:
            raise Unavailable("the metadata server returned no access token (provider-adc)")
        return AccessToken(str(data["access_token"]), time.time() + float(data["expires_in"]))

    def key_json(self, text: str, budget: float) -> AccessToken:
        """A token for the service-account key in nodePublishSecretRef ``key.json``."""
        try:
            info = json.loads(text)
        except ValueError:
            raise InvalidArgument(
                f"nodePublishSecretRef {KEY_JSON} is not valid JSON; store a service account "
                "key file under that key"
            ) from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise InvalidArgument(
                f"nodePublishSecretRef {KEY_JSON} must be a service account key "
                '("type": "service_account"); other credential types are not accepted'
            )
        # The token endpoint comes from server configuration, not from the key file.
        info = {**info, "token_uri": self.settings.oauth2_token_url}
        try:
            creds = _service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, KeyError, TypeError, google.auth.exceptions.GoogleAuthError):
            raise InvalidArgument(
                f"nodePublishSecretRef {KEY_JSON} is missing fields of a service account key "
                "(client_email, private_key, ...)"
            ) from None
        self.exchanges += 1
        request = self.request(budget)
        try:
            creds.refresh(request)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise key_json_error(
                exc, request.last_status, self.settings.oauth2_token_url, info
            ) from None
        return AccessToken(str(creds.token), expiry(creds.expiry))
