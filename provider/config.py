"""Server configuration: one typed object, built once from a file, the
environment and flags (flags win over the environment, which wins over the file).

Everything that decides *where* keyferry connects or *whose* identity it may
use lives here and only here: endpoints, CA bundles, the local root, identity
fallbacks. SecretProviderClass parameters can never set any of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from . import settings
from .errors import ConfigError
from .registry import DIALECTS

PROVIDER_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{0,30}$")
DEFAULT_SOCKET_DIR = Path("/var/run/secrets-store-csi-providers")
ENV_PREFIX = "KEYFERRY_"
MAX_SELECTED_OBJECTS = 1000
"""The hard bound on ``max_selected_objects`` (``provider.selection``)."""


@dataclass(frozen=True)
class KubeConfig:
    """How to reach the Kubernetes API (ServiceAccount annotations, node labels)."""

    api_url: str = ""
    """Empty: in-cluster (KUBERNETES_SERVICE_HOST/PORT) when available, else disabled."""
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    insecure: bool = False
    """Plain HTTP / no TLS verification; for tests only."""
    cache_seconds: float = field(default=60.0, metadata=settings.ZERO_OK)
    timeout_seconds: float = 5.0
    """Bound on one API request (connect, send, wait for the answer)."""


@dataclass(frozen=True)
class Config:
    socket_dir: Path = DEFAULT_SOCKET_DIR
    providers: Mapping[str, str] = field(default_factory=lambda: {"keyferry": "native"})
    """Socket name -> dialect. The socket decides the dialect (the request does not)."""
    socket_mode: int = 0o600
    http_address: str = "0.0.0.0:8095"
    """``/healthz``, ``/readyz`` and ``/metrics``; empty disables the listener."""
    grace_seconds: float = 20.0
    mount_timeout_seconds: float = 60.0
    """Internal budget per Mount, well inside kubelet's ~2 minute NodePublish deadline."""
    max_response_bytes: int = 4 * 1024 * 1024
    """Encoded MountResponse budget; the driver's default receive limit is 4 MiB."""
    max_concurrent_fetches: int = 64
    """Blocking SDK calls in flight at once, across all Mounts: the size of the worker
    pool (its threads start only when needed). Each cloud bounds its own calls below it
    (``backends.aws.max_concurrency``; Google and Key Vault calls take the whole bound),
    and a Mount puts all its objects in flight up to those bounds."""
    max_concurrent_mounts: int = 64
    """Mounts executing at once. One more is refused at once with RESOURCE_EXHAUSTED
    naming this bound (kubelet retries the volume mount with backoff) and counted in
    ``keyferry_mounts_rejected_total``, so a burst cannot slow every Mount in flight
    past kubelet's deadline."""
    cache_ttl_seconds: float = 30.0
    """How long a fetched value is reused for the same identity (0 = coalescing only)."""
    max_selected_objects: int = 100
    """The most objects one ``select`` of the native dialect may match, and all the
    selections of one Mount together (at most 1000); more fails the Mount with
    RESOURCE_EXHAUSTED naming the selection, never a truncated mount. An object's
    ``maxMatches`` can only lower it."""
    stale_if_error_seconds: float = 0.0
    """Last-known-good, off at 0: while a backend is unavailable (UNAVAILABLE or
    DEADLINE_EXCEEDED, never a denial or a missing object), a Mount may be served the value
    last fetched for the same principal, object and version selector, if it is no older
    than this, and a selection or version history the last listing of the same principal
    and query; kept in memory only, logged and counted as stale. A revoked grant keeps
    working for that long (docs/operations.md)."""
    fail_fast_threshold: int = 3
    """Backend calls in a row that must fail at the transport (refused, reset, timed out,
    5xx) before keyferry fails further calls to that endpoint at once with UNAVAILABLE;
    0 turns fail-fast off."""
    fail_fast_seconds: float = 1.0
    """How long an endpoint that went down fails fast before one Mount probes it; doubles
    after each failed probe."""
    fail_fast_max_seconds: float = 30.0
    """The longest fail-fast interval."""
    local_root: Path | None = None
    """Root directory of the ``local`` backend; unset disables it."""
    hmac_key_file: Path | None = None
    """Key for content-derived versions; unset means a random key per process."""
    log_level: str = "info"
    kubernetes: KubeConfig = field(default_factory=KubeConfig)
    backends: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-backend sections (``aws``, ``gcp``, ``azure``), parsed by each backend."""

    def dialect_for(self, provider_name: str) -> str:
        return self.providers[provider_name]


_SCALARS: dict[str, type] = {
    "socket_dir": Path,
    "socket_mode": int,
    "http_address": str,
    "grace_seconds": float,
    "mount_timeout_seconds": float,
    "max_response_bytes": int,
    "max_concurrent_fetches": int,
    "max_concurrent_mounts": int,
    "cache_ttl_seconds": float,
    "max_selected_objects": int,
    "stale_if_error_seconds": float,
    "fail_fast_threshold": int,
    "fail_fast_seconds": float,
    "fail_fast_max_seconds": float,
    "local_root": Path,
    "hmac_key_file": Path,
    "log_level": str,
}


_OPTIONAL_PATHS = {"local_root", "hmac_key_file"}


def _coerce(name: str, value: Any, kind: type) -> Any:
    if value is None or value == "":
        if kind is Path and name in _OPTIONAL_PATHS:
            return None
        if kind is str:
            return ""
        raise ConfigError(f"config {name}: a value is required")
    try:
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if kind is int and isinstance(value, str):
            text = value.strip()
            if len(text) > 1 and text.startswith("0") and text.isdigit():
                return int(text, 8)  # file modes: 0600 means octal, as in chmod
            return int(text, 0)
        if kind is bool:
            return settings.boolean(f"config {name}", value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {name}: {value!r} is not a valid {kind.__name__}") from exc


def parse_providers(value: Any) -> dict[str, str]:
    """``keyferry,aws`` or ``[keyferry, aws]`` or ``{name: dialect}``; ``name=dialect`` too.

    A bare name is its own dialect (``aws`` -> ``aws``), except ``keyferry`` -> ``native``.
    """
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, Mapping):
        items = [f"{k}={v}" for k, v in value.items()]
    else:
        raise ConfigError("config providers: expected a list of socket names")
    out: dict[str, str] = {}
    for item in items:
        name, _, dialect = str(item).partition("=")
        name = name.strip()
        dialect = dialect.strip() or ("native" if name == "keyferry" else name)
        if not name or not PROVIDER_NAME_RE.match(name):
            raise ConfigError(
                f"config providers: socket name {name!r} must match ^[a-zA-Z0-9_-]{{1,30}}$ "
                "(the driver's rule: no dots, at most 30 characters)"
            )
        if dialect not in DIALECTS:
            raise ConfigError(
                f"config providers: {name!r} names unknown dialect {dialect!r}; "
                f"use one of {', '.join(DIALECTS)}"
            )
        if name in out:
            raise ConfigError(f"config providers: socket name {name!r} is listed twice")
        out[name] = dialect
    if not out:
        raise ConfigError("config providers: at least one socket name is needed")
    return out


def _apply(config: Config, values: Mapping[str, Any], source: str) -> Config:
    changes: dict[str, Any] = {}
    known = {f.name for f in fields(Config)}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        if key in _SCALARS:
            changes[key] = _coerce(key, value, _SCALARS[key])
        elif key == "providers":
            changes[key] = parse_providers(value)
        elif key == "kubernetes":
            changes[key] = _kube(value, config.kubernetes, source)
        elif key == "backends":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: backends must be a mapping of backend -> settings")
            merged = {k: dict(v) for k, v in config.backends.items()}
            for name, section in value.items():
                if not isinstance(section, Mapping):
                    raise ConfigError(f"{source}: backends.{name} must be a mapping")
                merged.setdefault(str(name), {}).update(section)
            changes[key] = merged
    return replace(config, **changes)


def _kube(value: Any, base: KubeConfig, source: str) -> KubeConfig:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: kubernetes must be a mapping")
    changes, _ = settings.read(KubeConfig, value, f"{source}: kubernetes")
    return replace(base, **changes)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration: defaults < file < environment < ``overrides`` (flags)."""
    config = Config()
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        config = _apply(config, data, f"config file {path}")
    env = os.environ if env is None else env
    from_env = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in env.items()
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() in _SCALARS | {"providers": 0}
    }
    config = _apply(config, from_env, "environment")
    if overrides:
        config = _apply(config, {k: v for k, v in overrides.items() if v is not None}, "flags")
    for name in ("max_response_bytes", "max_concurrent_fetches", "max_concurrent_mounts"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"config {name}: must be > 0")
    if not 1 <= config.max_selected_objects <= MAX_SELECTED_OBJECTS:
        raise ConfigError(
            f"config max_selected_objects: must be from 1 to {MAX_SELECTED_OBJECTS} "
            f"(got {config.max_selected_objects})"
        )
    for name in (
        "cache_ttl_seconds",
        "stale_if_error_seconds",
        "fail_fast_threshold",
        "fail_fast_seconds",
        "fail_fast_max_seconds",
    ):
        if getattr(config, name) < 0:
            raise ConfigError(f"config {name}: must not be negative")
    if not 0 <= config.socket_mode <= 0o777:
        raise ConfigError("config socket_mode: must be a file mode such as 0600 or 0660")
    return config
