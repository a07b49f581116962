"""Server configuration of the ``azure`` backend (``backends.azure`` in the config file).

Endpoints (authority host, vault URL), the CA bundle and custom clouds come from
server configuration only; a SecretProviderClass names a cloud, never an endpoint::

    backends:
      azure:
        cloud: AzurePublicCloud          # default when a class names none
        clouds:                          # custom clouds (or overrides of built-in ones)
          MyCloud: {authority_host: https://login.example, vault_dns_suffix: vault.example}
        cloud_env_files: [/etc/keyferry/azurestack.json]   # AzureStackCloud files allowed
        authority_host: ""               # override for every cloud
        vault_url: ""                    # override for every cloud, e.g. https://kv.internal/{name}
        ca_bundle: ""                    # PEM bundle for Key Vault and Entra TLS
        verify_challenge_resource: true
        allow_vm_managed_identity: false
        allow_service_principal: true
        service_account_annotations: true
        construct_pem_chain: true
        retry_total: 3
        retry_backoff_factor: 0.8
        retry_backoff_max: 60
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ... import settings
from ...errors import ConfigError, FailedPrecondition, InvalidArgument, did_you_mean
from .ref import AzureRef


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_host: str
    vault_dns_suffix: str
    vault_url: str = ""
    """Template with ``{name}``; empty: ``https://{name}.{vault_dns_suffix}``."""

    def url_for(self, vault: str) -> str:
        if self.vault_url:
            return self.vault_url.replace("{name}", vault).rstrip("/")
        return f"https://{vault}.{self.vault_dns_suffix}"


BUILTIN_CLOUDS = {
    "azurepubliccloud": Cloud(
        "AzurePublicCloud", "https://login.microsoftonline.com", "vault.azure.net"
    ),
    "azurechinacloud": Cloud("AzureChinaCloud", "https://login.chinacloudapi.cn", "vault.azure.cn"),
    "azureusgovernmentcloud": Cloud(
        "AzureUSGovernmentCloud", "https://login.microsoftonline.us", "vault.usgovcloudapi.net"
    ),
}


@dataclass(frozen=True)
class AzureSettings:
    default_cloud: str = "AzurePublicCloud"
    clouds: Mapping[str, Cloud] = field(default_factory=lambda: dict(BUILTIN_CLOUDS))
    """Lower-cased name -> cloud: the built-in ones plus the configured ones."""
    env_files: Mapping[str, Cloud] = field(default_factory=dict)
    """Allowed AzureStackCloud environment files, read once at start-up."""
    ca_bundle: str = ""
    verify_challenge_resource: bool = True
    disable_instance_discovery: bool = False
    allow_vm_managed_identity: bool = False
    allow_service_principal: bool = True
    service_account_annotations: bool = True
    construct_pem_chain: bool = True
    retry_total: int = field(default=3, metadata=settings.ZERO_OK)
    retry_backoff_factor: float = field(default=0.8, metadata=settings.ZERO_OK)
    retry_backoff_max: float = field(default=60.0, metadata=settings.ZERO_OK)
    token_timeout_seconds: float = 10.0
    max_clients: int = 512

    def cloud_for(self, ref: AzureRef) -> Cloud:
        """The cloud a ref names (its environment file, its cloud name or the default)."""
        if ref.cloud_env_file:
            cloud = self.env_files.get(ref.cloud_env_file)
            if cloud is None:
                raise FailedPrecondition(
                    f"cloudEnvFileName {ref.cloud_env_file!r} is not allowed by the keyferry "
                    "server configuration (backends.azure.cloud_env_files); ask the operator "
                    "to add it, or define the cloud under backends.azure.clouds"
                )
            return cloud
        name = ref.cloud or self.default_cloud
        cloud = self.clouds.get(name.lower())
        if cloud is None:
            names = [c.name for c in self.clouds.values()]
            raise InvalidArgument(
                f"cloudName {name!r} is not a cloud this server knows{did_you_mean(name, names)}; "
                "custom clouds are defined in the server configuration (backends.azure.clouds)"
            )
        return cloud


def _https(value: Any, where: str) -> str:
    text = str(value or "").strip().rstrip("/")
    if text and not text.startswith("https://"):
        raise ConfigError(
            f"{where}: {text!r} must be an https:// URL (Key Vault and Entra need TLS)"
        )
    return text


def _cloud(name: str, raw: Any, base: Cloud | None, where: str) -> Cloud:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping with authority_host and vault_dns_suffix")
    unknown = set(raw) - {"authority_host", "vault_dns_suffix", "vault_url"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    authority = _https(raw.get("authority_host", base.authority_host if base else ""), where)
    suffix = str(raw.get("vault_dns_suffix", base.vault_dns_suffix if base else "")).strip(" ./")
    vault_url = _https(raw.get("vault_url", base.vault_url if base else ""), where)
    if not authority or not (suffix or vault_url):
        raise ConfigError(
            f"{where}: authority_host and vault_dns_suffix (or vault_url) are required"
        )
    if vault_url and "{name}" not in vault_url:
        raise ConfigError(f"{where}: vault_url must contain {{name}} (the vault name)")
    return Cloud(name, authority, suffix, vault_url)


def _env_file(path: str) -> Cloud:
    """An AzureStackCloud environment file (go-autorest JSON), read at start-up."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"backends.azure.cloud_env_files: cannot read {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"backends.azure.cloud_env_files: {path} is not a JSON object")
    return _cloud(
        str(data.get("name") or "AzureStackCloud"),
        {
            "authority_host": str(data.get("activeDirectoryEndpoint", "")),
            "vault_dns_suffix": str(data.get("keyVaultDNSSuffix", "")),
        },
        None,
        f"backends.azure.cloud_env_files {path}",
    )


_STRUCTURED = ("cloud", "clouds", "cloud_env_files", "authority_host", "vault_url")


def parse_settings(section: Mapping[str, Any]) -> AzureSettings:
    values, raw = settings.read(
        AzureSettings,
        section,
        "backends.azure",
        structured=_STRUCTURED,
        hidden=("default_cloud", "env_files"),
    )
    clouds: dict[str, Cloud] = dict(BUILTIN_CLOUDS)
    custom = raw.get("clouds") or {}
    if not isinstance(custom, Mapping):
        raise ConfigError("backends.azure.clouds: must be a mapping of cloud name -> settings")
    for name, section in custom.items():
        key = str(name).lower()
        clouds[key] = _cloud(str(name), section, clouds.get(key), f"backends.azure.clouds.{name}")
    authority = _https(raw.get("authority_host"), "backends.azure.authority_host")
    vault_url = _https(raw.get("vault_url"), "backends.azure.vault_url")
    if vault_url and "{name}" not in vault_url:
        raise ConfigError("backends.azure.vault_url: must contain {name} (the vault name)")
    env_files: dict[str, Cloud] = {}
    files = raw.get("cloud_env_files") or []
    if not isinstance(files, list):
        raise ConfigError("backends.azure.cloud_env_files: must be a list of file paths")
    for path in files:
        env_files[str(path)] = _env_file(str(path))

    def override(c: Cloud) -> Cloud:
        return Cloud(
            c.name, authority or c.authority_host, c.vault_dns_suffix, vault_url or c.vault_url
        )

    clouds = {k: override(c) for k, c in clouds.items()}
    env_files = {k: override(c) for k, c in env_files.items()}
    default = str(raw.get("cloud") or "AzurePublicCloud")
    if default.lower() not in clouds:
        names = [c.name for c in clouds.values()]
        raise ConfigError(
            f"backends.azure.cloud: unknown cloud {default!r}{did_you_mean(default, names)}"
        )
    ca = values.get("ca_bundle", "")
    if ca:
        try:
            with open(ca, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"backends.azure.ca_bundle: cannot read {ca}: {exc.strerror}"
            ) from None
    custom_authority = any(
        c.authority_host not in {b.authority_host for b in BUILTIN_CLOUDS.values()}
        for c in (*clouds.values(), *env_files.values())
    )
    values.setdefault("disable_instance_discovery", custom_authority)
    return AzureSettings(
        default_cloud=clouds[default.lower()].name, clouds=clouds, env_files=env_files, **values
    )
