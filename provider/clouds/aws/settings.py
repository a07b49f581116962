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
    max_attempts: 3                   # per call, within the mount's budget
    max_backoff_seconds: 20
    allow_node_identity: false        # never use the node's / provider's own role unless true
    allow_role_chaining: false        # objects may name an assumeRoleArn only when true
    role_chaining_roles: "arn:aws:iam::210987654321:role/*"   # only these (globs, comma-separated)
```
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ... import settings
from ...errors import ConfigError, did_you_mean
from .ref import REGION_RE

DEFAULT_AGENT_IPV4 = "http://169.254.170.23/v1/credentials"
DEFAULT_AGENT_IPV6 = "http://[fd00:ec2::23]/v1/credentials"
SECTION = "backends.aws"
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
    """Attempts per API call, retries included; the Mount's budget may end them sooner."""
    max_backoff_seconds: float = 20.0
    """Longest wait between attempts (botocore's jittered backoff is truncated here); a
    ``Retry-After`` the service sends is honoured even if longer, within the budget."""
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 10.0
    batch_get_secret_value: bool = True
    """Use BatchGetSecretValue (up to 20 secrets a call) for AWSCURRENT secrets."""
    batch_denied_seconds: float = field(default=900.0, metadata=settings.ZERO_OK)
    """How long to remember that an identity may not call BatchGetSecretValue."""
    pinned_cache_seconds: float = field(default=600.0, metadata=settings.ZERO_OK)
    """Values pinned by VersionId / SSM version number never change; reuse them this long
    (same identity only). Other values use the server's cache_ttl_seconds."""
    region_cache_seconds: float = 3600.0
    max_concurrency: int = 8
    allow_node_identity: bool = False
    allow_role_chaining: bool = False
    """Objects may name an ``assumeRoleArn``: the pod's credentials assume that role."""
    role_chaining_roles: str = "*"
    """With ``allow_role_chaining``: the role ARNs objects may assume, comma-separated, with
    IAM's wildcards (``arn:aws:iam::210987654321:role/*``): ``*`` any characters, ``/``
    included (a role's path is part of its name), ``?`` one; ``*`` alone allows any role."""
    app_id: str = "keyferry"
    ca_bundle: str = ""
    """CA bundle for AWS endpoints; empty: the system's."""

    def may_assume(self, role_arn: str) -> bool:
        """Whether ``role_arn`` matches ``role_chaining_roles``."""
        patterns = [p.strip() for p in self.role_chaining_roles.split(",") if p.strip()]
        return any(_iam_wildcard(p).fullmatch(role_arn) for p in patterns)

    def endpoint(self, service: str, region: str) -> str | None:
        url = self.endpoints.get(service) or self.endpoint_url
        return url.replace("{region}", region) if url else None


@functools.lru_cache(maxsize=64)
def _iam_wildcard(pattern: str) -> re.Pattern[str]:
    """An ARN pattern as IAM reads one: ``*`` any run of characters, ``?`` one, the rest
    literal (no character classes, unlike fnmatch)."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.S)


_AGENT_KEYS = ("ipv4_url", "ipv6_url", "timeout_seconds")
_AGENT_FIELDS = tuple(f"pod_identity_{k}" for k in _AGENT_KEYS)


def _url(name: str, value: str) -> str:
    parts = urlsplit(value.replace("{region}", "us-east-1"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"backends.aws.{name}: {value!r} is not an http(s) URL")
    return value


def parse(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> AwsSettings:
    """Typed settings from the raw ``backends.aws`` section; ``AWS_REGION`` as default."""
    env = os.environ if env is None else env
    values, structured = settings.read(
        AwsSettings, raw, SECTION, structured=("endpoints", "pod_identity"), hidden=_AGENT_FIELDS
    )
    if "endpoints" in structured:
        endpoints = settings.text_map(f"{SECTION}.endpoints", structured["endpoints"])
        for svc, url in endpoints.items():
            if svc not in SERVICES:
                raise ConfigError(
                    f"{SECTION}.endpoints: unknown service {svc!r}{did_you_mean(svc, SERVICES)}"
                )
            _url(f"endpoints.{svc}", url)
        values["endpoints"] = endpoints
    if "pod_identity" in structured:
        agent = structured["pod_identity"]
        if not isinstance(agent, Mapping):
            raise ConfigError(f"{SECTION}.pod_identity: expected a mapping")
        for sub in agent:
            if settings.key(sub) not in _AGENT_KEYS:
                raise ConfigError(
                    f"{SECTION}.pod_identity: unknown setting {sub!r}"
                    f"{did_you_mean(settings.key(sub), _AGENT_KEYS)}"
                )
        prefixed = {f"pod_identity_{settings.key(k)}": v for k, v in agent.items()}
        got, _ = settings.read(AwsSettings, prefixed, f"{SECTION}.pod_identity")
        for name, value in got.items():
            values[name] = _url(name, value) if name.endswith("_url") else value
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
