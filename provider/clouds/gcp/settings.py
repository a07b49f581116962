"""The ``backends.gcp`` section of the server configuration, parsed once.

Every Google endpoint keyferry talks to is set here and only here (never by a
SecretProviderClass): Secret Manager and Parameter Manager (global, regional
template and per-location overrides), STS, IAM Credentials, the OAuth2 token
endpoint for service-account keys and the metadata server. ``insecure`` allows
plaintext gRPC and ``http://`` token endpoints; it exists for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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
    auth_timeout_seconds: float = 15.0
    token_refresh_margin_seconds: float = 300.0
    """Exchanged tokens are reused until this long before they expire."""
    token_lifetime_seconds: int = 3600
    """Lifetime requested for impersonated service-account tokens."""


_BOOL = {f.name for f in fields(GcpSettings) if f.type == "bool"}
_FLOAT = {f.name for f in fields(GcpSettings) if f.type == "float"}
_INT = {f.name for f in fields(GcpSettings) if f.type == "int"}
_MAPS = {"secret_manager_locations", "parameter_manager_locations"}
_URLS = ("sts_url", "iam_credentials_url", "oauth2_token_url")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{SECTION}.{key}: {value!r} is not a boolean")


def _number(key: str, value: Any, kind: type[float] | type[int]) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(f"{SECTION}.{key}: expected a number, got a boolean")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{SECTION}.{key}: {value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"{SECTION}.{key}: must be greater than 0")
    return number


def _endpoint(key: str, value: str) -> str:
    value = value.strip()
    if "://" in value or "/" in value:
        raise ConfigError(f"{SECTION}.{key}: {value!r} must be host:port (no scheme or path)")
    if not value:
        raise ConfigError(f"{SECTION}.{key}: must not be empty")
    return value


def parse(raw: Mapping[str, Any]) -> GcpSettings:
    """Typed settings from the raw section; :class:`ConfigError` on bad input."""
    known = {f.name for f in fields(GcpSettings)}
    values: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise ConfigError(f"{SECTION}: unknown setting {raw_key!r}")
        if key in _MAPS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{SECTION}.{key}: expected a mapping of location -> host:port")
            values[key] = {
                str(loc): _endpoint(f"{key}.{loc}", str(ep)) for loc, ep in value.items()
            }
        elif key in _BOOL:
            values[key] = _bool(key, value)
        elif key in _FLOAT:
            values[key] = float(_number(key, value, float))
        elif key in _INT:
            values[key] = int(_number(key, value, int))
        else:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{SECTION}.{key}: expected a string")
            values[key] = (value or "").strip()
    settings = GcpSettings(**values)
    for key in ("secret_manager_endpoint", "parameter_manager_endpoint"):
        _endpoint(key, getattr(settings, key))
    for key in ("secret_manager_regional_endpoint", "parameter_manager_regional_endpoint"):
        template = getattr(settings, key)
        if "{location}" not in template:
            raise ConfigError(f"{SECTION}.{key}: must contain '{{location}}'")
        _endpoint(key, template.replace("{location}", "x"))
    for key in _URLS:
        url = getattr(settings, key)
        if not url.startswith("https://") and not (settings.insecure and url.startswith("http://")):
            raise ConfigError(
                f"{SECTION}.{key}: {url!r} must be an https:// URL "
                "(http:// only with insecure: true)"
            )
    if not settings.metadata_url.startswith(("http://", "https://")):
        raise ConfigError(f"{SECTION}.metadata_url: must be an http(s) URL")
    if settings.attempt_timeout_seconds > settings.timeout_seconds:
        raise ConfigError(f"{SECTION}: attempt_timeout_seconds must not exceed timeout_seconds")
    return settings
