"""The ``backends.gcp`` section of the server configuration, parsed once.

Every Google endpoint keyferry talks to is set here and only here (never by a
SecretProviderClass): Secret Manager and Parameter Manager (global, regional
template and per-location overrides), STS, IAM Credentials, the OAuth2 token
endpoint for service-account keys and the metadata server. ``insecure`` allows
plaintext gRPC and ``http://`` token endpoints; it exists for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ... import settings
from ...errors import ConfigError

SECTION = "backends.gcp"


@dataclass(frozen=True)
class GcpSettings:
    # Workload identity (pod-adc). GKE: project + cluster give the pool
    # ``<project>.svc.id.goog`` and the cluster's identity provider.
    project: str = ""
    cluster_location: str = ""
    cluster_name: str = ""
    workload_identity_pool: str = ""
    """Default ``<project>.svc.id.goog``."""
    identity_provider: str = ""
    """Default ``https://container.googleapis.com/v1/projects/<p>/locations/<l>/clusters/<c>``."""
    audience: str = ""
    """Full STS audience; default ``identitynamespace:<pool>:<provider>``. Fleet/other
    clusters: ``//iam.googleapis.com/projects/<n>/locations/global/workloadIdentityPools/…``."""
    token_audience: str = ""
    """Audience of the driver token to exchange; default: the pool, else ``audience``."""
    discover_from_metadata: bool = True
    """Look up project and cluster on the metadata server when not configured."""

    # Endpoints.
    secret_manager_endpoint: str = "secretmanager.googleapis.com:443"
    secret_manager_regional_endpoint: str = "secretmanager.{location}.rep.googleapis.com:443"
    secret_manager_locations: Mapping[str, str] = field(default_factory=dict)
    parameter_manager_endpoint: str = "parametermanager.googleapis.com:443"
    parameter_manager_regional_endpoint: str = "parametermanager.{location}.rep.googleapis.com:443"
    parameter_manager_locations: Mapping[str, str] = field(default_factory=dict)
    sts_url: str = "https://sts.googleapis.com/v1/token"
    iam_credentials_url: str = "https://iamcredentials.googleapis.com"
    oauth2_token_url: str = "https://oauth2.googleapis.com/token"
    metadata_url: str = "http://metadata.google.internal"
    insecure: bool = False

    # Identities other than the pod's own.
    allow_provider_adc: bool = False
    """``auth: provider-adc``: keyferry's own credentials, with no namespace isolation."""
    allow_node_publish_secret: bool = False
    """nodePublishSecretRef ``key.json`` (service-account keys only)."""
    provider_credentials_file: str = ""
    """provider-adc from this credentials file instead of the metadata server."""

    # Time.
    timeout_seconds: float = 30.0
    """Budget for one object's API call including retries (capped by the Mount's deadline)."""
    attempt_timeout_seconds: float = 10.0
    retry_initial_seconds: float = 0.25
    retry_max_seconds: float = 4.0
    max_attempts: int = 5
    """Attempts per request (Secret Manager, Parameter Manager, STS, IAM Credentials),
    retries included; the Mount's budget may end them sooner."""
    auth_timeout_seconds: float = 15.0
    token_refresh_margin_seconds: float = 300.0
    """Exchanged tokens are reused until this long before they expire."""
    token_lifetime_seconds: int = 3600
    """Lifetime requested for impersonated service-account tokens."""


_MAPS = ("secret_manager_locations", "parameter_manager_locations")
_URLS = ("sts_url", "iam_credentials_url", "oauth2_token_url")


def _endpoint(key: str, value: str) -> str:
    value = value.strip()
    if "://" in value or "/" in value:
        raise ConfigError(f"{SECTION}.{key}: {value!r} must be host:port (no scheme or path)")
    if not value:
        raise ConfigError(f"{SECTION}.{key}: must not be empty")
    return value


def parse(raw: Mapping[str, Any]) -> GcpSettings:
    """Typed settings from the raw section; :class:`ConfigError` on bad input."""
    values, maps = settings.read(GcpSettings, raw, SECTION, structured=_MAPS)
    for key, value in maps.items():
        values[key] = {
            loc: _endpoint(f"{key}.{loc}", ep)
            for loc, ep in settings.text_map(f"{SECTION}.{key}", value).items()
        }
    parsed = GcpSettings(**values)
    for key in ("secret_manager_endpoint", "parameter_manager_endpoint"):
        _endpoint(key, getattr(parsed, key))
    for key in ("secret_manager_regional_endpoint", "parameter_manager_regional_endpoint"):
        template = getattr(parsed, key)
        if "{location}" not in template:
            raise ConfigError(f"{SECTION}.{key}: must contain '{{location}}'")
        _endpoint(key, template.replace("{location}", "x"))
    for key in _URLS:
        url = getattr(parsed, key)
        if not url.startswith("https://") and not (parsed.insecure and url.startswith("http://")):
            raise ConfigError(
                f"{SECTION}.{key}: {url!r} must be an https:// URL "
                "(http:// only with insecure: true)"
            )
    if not parsed.metadata_url.startswith(("http://", "https://")):
        raise ConfigError(f"{SECTION}.metadata_url: must be an http(s) URL")
    if parsed.attempt_timeout_seconds > parsed.timeout_seconds:
        raise ConfigError(f"{SECTION}: attempt_timeout_seconds must not exceed timeout_seconds")
    return parsed
