"""Locators for the ``azure`` backend (Key Vault secrets, keys and certificates).

A ref carries everything that decides *what* is fetched and *as whom*: the
vault, the cloud name, the identity the class asked for, the object and the
output conversion. Endpoints are not here: they come from server configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ... import sync_controller
from ...errors import FailedPrecondition, InvalidArgument, KeyferryError
from ...model import Mount

WORKLOAD_AUDIENCE = "api://AzureADTokenExchange"
ANNOTATION_CLIENT_ID = "azure.workload.identity/client-id"
ANNOTATION_TENANT_ID = "azure.workload.identity/tenant-id"

# azure-identity's own rule (``azure.identity._internal.validate_tenant_id``): the
# tenant becomes a path segment of the token URL, so nothing else may pass.
_TENANT_ID = re.compile(r"^[A-Za-z0-9.-]{1,100}$")
# Client ids are GUIDs in Entra; anything that could carry a path, query or form
# separator is refused before it reaches azure-identity or the token endpoint.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

ObjectKind = Literal["secret", "key", "cert"]
AuthMode = Literal["auto", "workload", "service_principal", "vm_managed_identity"]
Conversion = Literal["raw", "pem", "pfx", "cert", "fullchain", "key"]
"""What the backend makes of the object:

- ``raw``: a secret's value as stored (plain secrets); for a certificate-backed
  secret the same as ``pem`` (the official provider's default);
- ``pem``: certificate-backed secret → upstream's PEM (key first, ordered chain);
- ``pfx``: certificate-backed secret → the stored value unchanged;
- ``cert`` / ``fullchain`` / ``key``: leaf only / chain leaf → root / key only.

Keys always become a PEM public key and ``cert`` objects their leaf PEM.
"""


@dataclass(frozen=True)
class AzureAuth:
    """The identity a class asks for. ``auto`` is resolved at fetch time:
    nodePublishSecretRef ``clientid``/``clientsecret`` (service principal), else
    the ServiceAccount's ``azure.workload.identity/client-id`` annotation."""

    mode: AuthMode = "auto"
    tenant_id: str = ""
    """Empty: taken from the ServiceAccount's ``azure.workload.identity/tenant-id``."""
    client_id: str = ""
    user_assigned_identity_id: str = ""


@dataclass(frozen=True)
class AzureRef:
    vault: str
    """Vault name (3-24 characters of ``[-A-Za-z0-9]``)."""
    kind: ObjectKind
    name: str
    version: str = ""
    """Empty: the latest version."""
    conversion: Conversion = "raw"
    history: int = 0
    """``> 1``: the ``history`` newest enabled versions; this ref is one of them."""
    index: int = 0
    """With ``history``: which version, 0 = the newest (or ``version`` when given)."""
    cloud: str = ""
    """Cloud name (case-insensitive); empty = the server's default cloud."""
    cloud_env_file: str = ""
    """``AzureStackCloud`` environment file; must be allowlisted by the server."""
    auth: AzureAuth = AzureAuth()

    def describe(self) -> str:
        """How messages name the object (no secret material)."""
        what = f"{self.kind} '{self.name}'"
        if self.version:
            what += f" version '{self.version}'"
        return f"{what} in vault '{self.vault}'"


MAX_TAGS = 15
"""Key Vault keeps at most 15 tags on a secret."""
ANY_VALUE = "*"
"""A tag value in a selection that matches every value (the tag is present)."""


@dataclass(frozen=True)
class AzureSelection:
    """The enabled secrets of ``base``'s vault whose name starts with ``name_prefix``
    (case-insensitively) and that carry every tag in ``tags``; certificates' backing
    secrets only with ``include_certificates``. Key Vault's list has no filter, so the
    listing is filtered here. Each member is ``base`` with the secret's name."""

    base: AzureRef
    name_prefix: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    include_certificates: bool = False

    def describe(self) -> str:
        what = [f"names starting with {self.name_prefix!r}"] if self.name_prefix else []
        what += [f"tag {k}={v}" for k, v in self.tags]
        return f"the secrets of vault '{self.base.vault}' with {' and '.join(what)}"

    def matches(
        self, name: str, tags: Mapping[str, str] | None, managed: bool, enabled: bool
    ) -> bool:
        """Whether a listed secret belongs to the selection."""
        if not enabled or (managed and not self.include_certificates):
            return False
        if not name.lower().startswith(self.name_prefix.lower()):
            return False
        have = tags or {}
        return all(k in have and (v == ANY_VALUE or have[k] == v) for k, v in self.tags)


def _shown(value: str) -> str:
    """A class value in a message: short values quoted, long ones only measured."""
    return repr(value) if len(value) <= 64 else f"({len(value)} characters)"


def _check_id(
    value: str,
    where: str,
    pattern: re.Pattern[str],
    what: str,
    rule: str,
    error: type[KeyferryError],
    show: bool,
) -> str:
    if not pattern.match(value):
        shown = f" {_shown(value)}" if show else ""
        raise error(f"{where}: {what}{shown} is not valid; {rule}")
    return value


def check_tenant_id(
    value: str, where: str, *, error: type[KeyferryError] = InvalidArgument, show: bool = True
) -> str:
    """``value`` if it is a valid Entra tenant id (GUID or domain), else ``error``.

    ``show=False`` keeps the value out of the message (nodePublishSecretRef data)."""
    rule = "use the Entra tenant's id (a GUID) or its domain: 1-100 letters, digits, '.' and '-'"
    return _check_id(value, where, _TENANT_ID, "tenant id", rule, error, show)


def check_client_id(
    value: str, where: str, *, error: type[KeyferryError] = InvalidArgument, show: bool = True
) -> str:
    """``value`` if it can be an Entra client id, else ``error``.

    ``show=False`` keeps the value out of the message (nodePublishSecretRef data)."""
    rule = (
        "use the application's or managed identity's client id (a GUID): "
        "1-128 letters, digits, '.', '_' and '-'"
    )
    return _check_id(value, where, _CLIENT_ID, "client id", rule, error, show)


def require_workload_token(mount: Mount, where: str) -> None:
    """Workload identity needs the pod's token for :data:`WORKLOAD_AUDIENCE`."""
    if WORKLOAD_AUDIENCE not in mount.tokens:
        raise FailedPrecondition(
            f"{where}: workload identity needs the pod's service-account token for audience "
            f"'{WORKLOAD_AUDIENCE}', but the request carries none; "
            + sync_controller.token_fix(mount, WORKLOAD_AUDIENCE)
        )
