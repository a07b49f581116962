"""Server configuration of the ``aws`` backend (``backends.aws`` in the config file).

Everything that decides where keyferry connects or whose identity it may use
is read here, from server configuration only; a SecretProviderClass can never
set any of it.

```yaml
backends:
  aws:
    region: us-east-1                 # default region (else AWS_REGION, else the node label)
    endpoint_url: http://127.0.0.1:5000   # one endpoint for every AWS service (tests)
    endpoints:                        # or per service; "{region}" is replaced
      secretsmanager: https://vpce-123.secretsmanager.{region}.vpce.amazonaws.com
      ssm: ...
      sts: ...
    use_fips_endpoint: false
    pod_identity:
      ipv4_url: http://169.254.170.23/v1/credentials
      ipv6_url: http://[fd00:ec2::23]/v1/credentials
      timeout_seconds: 5
    retry_mode: standard              # or adaptive
    max_attempts: 3
    allow_node_identity: false        # never use the node's / provider's own role unless true
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigError, did_you_mean
from .ref import REGION_RE

DEFAULT_AGENT_IPV4 = "http://169.254.170.23/v1/credentials"
DEFAULT_AGENT_IPV6 = "http://[fd00:ec2::23]/v1/credentials"
SERVICES = ("secretsmanager", "ssm", "sts")
RETRY_MODES = ("standard", "adaptive")


@dataclass(frozen=True)
class AwsSettings:
    region: str = ""
    """Default region; empty: ``AWS_REGION``, then the node's topology label."""
    endpoint_url: str = ""
    endpoints: Mapping[str, str] = field(default_factory=dict)
    sts_region: str = ""
    """Region of the STS endpoint for IRSA; empty: the region being read."""
    use_fips_endpoint: bool = False
    pod_identity_ipv4_url: str = DEFAULT_AGENT_IPV4
    pod_identity_ipv6_url: str = DEFAULT_AGENT_IPV6
    pod_identity_timeout_seconds: float = 5.0
    retry_mode: str = "standard"
    max_attempts: int = 3
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    batch_get_secret_value: bool = True
    """Use BatchGetSecretValue (up to 20 secrets a call) for AWSCURRENT secrets."""
    batch_denied_seconds: float = 900.0
    """How long to remember that an identity may not call BatchGetSecretValue."""
    pinned_cache_seconds: float = 600.0
    """Values pinned by VersionId / SSM version number never change; reuse them this long
    (same identity only). Other values use the server's cache_ttl_seconds."""
    region_cache_seconds: float = 3600.0
    max_concurrency: int = 8
    allow_node_identity: bool = False
    app_id: str = "keyferry"
    ca_bundle: str = ""
    """CA bundle for AWS endpoints; empty: the system's."""

    def endpoint(self, service: str, region: str) -> str | None:
        url = self.endpoints.get(service) or self.endpoint_url
        return url.replace("{region}", region) if url else None


_KINDS: dict[str, type] = {
    "region": str,
    "endpoint_url": str,
    "sts_region": str,
    "use_fips_endpoint": bool,
    "retry_mode": str,
    "max_attempts": int,
    "connect_timeout_seconds": float,
    "read_timeout_seconds": float,
    "batch_get_secret_value": bool,
    "batch_denied_seconds": float,
    "pinned_cache_seconds": float,
    "region_cache_seconds": float,
    "max_concurrency": int,
    "allow_node_identity": bool,
    "app_id": str,
    "ca_bundle": str,
}
_AGENT_KEYS = {"ipv4_url": str, "ipv6_url": str, "timeout_seconds": float}


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"backends.aws.{name}: {value!r} is not a boolean")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"backends.aws.{name}: {value!r} is not a number")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"backends.aws.{name}: {value!r} is not a number") from None
        if number <= 0 and name not in ("pinned_cache_seconds", "batch_denied_seconds"):
            raise ConfigError(f"backends.aws.{name}: must be greater than 0")
        if number < 0:
            raise ConfigError(f"backends.aws.{name}: must not be negative")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"backends.aws.{name}: {value!r} is not a string")
    return value.strip()


def _url(name: str, value: str) -> str:
    parts = urlsplit(value.replace("{region}", "us-east-1"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"backends.aws.{name}: {value!r} is not an http(s) URL")
    return value


def parse(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> AwsSettings:
    """Typed settings from the raw ``backends.aws`` section; ``AWS_REGION`` as default."""
    env = os.environ if env is None else env
    known = {f.name for f in fields(AwsSettings)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name == "endpoints":
            if not isinstance(value, Mapping):
                raise ConfigError("backends.aws.endpoints: expected a mapping service -> URL")
            endpoints: dict[str, str] = {}
            for svc, url in value.items():
                if svc not in SERVICES:
                    raise ConfigError(
                        f"backends.aws.endpoints: unknown service {svc!r}"
                        f"{did_you_mean(str(svc), SERVICES)}"
                    )
                endpoints[str(svc)] = _url(
                    f"endpoints.{svc}", _coerce(f"endpoints.{svc}", url, str)
                )
            values["endpoints"] = endpoints
        elif name == "pod_identity":
            if not isinstance(value, Mapping):
                raise ConfigError("backends.aws.pod_identity: expected a mapping")
            for sub, subvalue in value.items():
                subname = str(sub).replace("-", "_")
                if subname not in _AGENT_KEYS:
                    raise ConfigError(
                        f"backends.aws.pod_identity: unknown setting {sub!r}"
                        f"{did_you_mean(subname, _AGENT_KEYS)}"
                    )
                coerced = _coerce(f"pod_identity.{subname}", subvalue, _AGENT_KEYS[subname])
                if subname.endswith("_url"):
                    coerced = _url(f"pod_identity.{subname}", coerced)
                values[f"pod_identity_{subname}"] = coerced
        elif name in _KINDS:
            values[name] = _coerce(name, value, _KINDS[name])
        else:
            hint = did_you_mean(name, known | {"pod_identity"})
            raise ConfigError(f"backends.aws: unknown setting {key!r}{hint}")
    if values.get("endpoint_url"):
        _url("endpoint_url", values["endpoint_url"])
    if not values.get("region") and env.get("AWS_REGION", "").strip():
        values["region"] = env["AWS_REGION"].strip()
    for key in ("region", "sts_region"):
        if values.get(key) and not REGION_RE.match(values[key]):
            raise ConfigError(f"backends.aws.{key}: {values[key]!r} is not an AWS region name")
    if values.get("retry_mode", "standard") not in RETRY_MODES:
        raise ConfigError(
            f"backends.aws.retry_mode: {values['retry_mode']!r} must be standard or adaptive"
        )
    if values.get("max_attempts", 3) > 10:
        raise ConfigError("backends.aws.max_attempts: at most 10 (attempts must fit the mount)")
    return AwsSettings(**values)
