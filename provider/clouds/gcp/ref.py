"""Locators for the ``gcp`` backend: Secret Manager secret versions and
Parameter Manager parameter versions, global or regional, plus the auth mode
the object is fetched with.

Parsing lives in :func:`parse_resource_name` so that both dialects accept
exactly the same names. Patterns are anchored at both ends (the official
provider anchors only the end and so accepts leading junk), and
``locations/global`` means the global service, never a regional endpoint
called ``global``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

AuthMode = Literal["pod-adc", "provider-adc", "node-publish-secret"]
KEY_JSON = "key.json"
"""The nodePublishSecretRef key holding a service-account key (``node-publish-secret``)."""
GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
"""ServiceAccount annotation: the Google service account ``pod-adc`` impersonates."""
DELEGATES_ANNOTATION = "iam.gke.io/gcp-service-account-delegates"
Service = Literal["secretmanager", "parametermanager"]

# Project ids are 6-30 characters (older, domain-scoped ones contain ':' and
# '.'); project numbers are digits. Both are accepted as written.
_PROJECT = r"(?P<project>[a-z0-9](?:[a-z0-9.:-]{0,61}[a-z0-9])?)"
_LOCATION = r"(?P<location>[a-z][a-z0-9-]{0,29})"
_SECRET = r"(?P<secret>[A-Za-z0-9_-]{1,255})"
# ``latest``, a version number, or a version alias (letters, digits, '-', '_').
_SM_VERSION = r"(?P<version>latest|[1-9][0-9]{0,18}|[A-Za-z](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)"
_PARAMETER = r"(?P<parameter>[A-Za-z0-9_-]{1,63})"
_PM_VERSION = r"(?P<version>[A-Za-z0-9_-]{1,63})"

_SM_GLOBAL = re.compile(rf"projects/{_PROJECT}/secrets/{_SECRET}/versions/{_SM_VERSION}")
_SM_REGIONAL = re.compile(
    rf"projects/{_PROJECT}/locations/{_LOCATION}/secrets/{_SECRET}/versions/{_SM_VERSION}"
)
_PM = re.compile(
    rf"projects/{_PROJECT}/locations/{_LOCATION}/parameters/{_PARAMETER}/versions/{_PM_VERSION}"
)

FORMATS = (
    "projects/<project>/secrets/<secret>/versions/<latest|N|alias>",
    "projects/<project>/locations/<location>/secrets/<secret>/versions/<latest|N|alias>",
    "projects/<project>/locations/<location|global>/parameters/<parameter>/versions/<version>",
)


@dataclass(frozen=True, kw_only=True)
class _Fetch:
    """How an object is fetched, and what its service is called in messages; shared by
    both locators (keyword-only, so these follow the name's parts)."""

    service: ClassVar[Service]
    api: ClassVar[str]
    """The service as messages name it."""
    kind: ClassVar[str]
    """What one name designates, for messages."""
    operation: ClassVar[str]
    """The RPC that reads it, for metrics."""

    auth: AuthMode = "pod-adc"
    key_json: bool = False
    """A nodePublishSecretRef ``key.json`` is present (drop-in dialect, ``auth`` unset)."""
    auth_explicit: bool = True

    @property
    def auth_key(self) -> tuple[AuthMode, bool, bool]:
        """Refs with equal keys are fetched as the same identity."""
        return (self.auth, self.key_json, self.auth_explicit)


@dataclass(frozen=True)
class SecretVersionRef(_Fetch):
    """A Secret Manager secret version; ``location`` empty means the global service."""

    service: ClassVar[Service] = "secretmanager"
    api: ClassVar[str] = "Secret Manager"
    kind: ClassVar[str] = "secret version"
    operation: ClassVar[str] = "AccessSecretVersion"

    project: str
    secret: str
    version: str
    location: str = ""
    history: int = 0
    """``> 0``: one of the ``history`` newest enabled versions (``versionHistory``)."""
    index: int = 0
    """With ``history``: which one, 0 = the newest."""

    @property
    def parent(self) -> str:
        """The secret's name (what ListSecretVersions lists)."""
        return self.name.rsplit("/versions/", 1)[0]

    @property
    def name(self) -> str:
        """The name sent to the API (global names without ``locations/global``)."""
        if self.location:
            return (
                f"projects/{self.project}/locations/{self.location}/secrets/{self.secret}"
                f"/versions/{self.version}"
            )
        return f"projects/{self.project}/secrets/{self.secret}/versions/{self.version}"

    @property
    def short(self) -> str:
        return self.secret


@dataclass(frozen=True)
class ParameterVersionRef(_Fetch):
    """A Parameter Manager parameter version; ``location`` empty means ``global``."""

    service: ClassVar[Service] = "parametermanager"
    api: ClassVar[str] = "Parameter Manager"
    kind: ClassVar[str] = "parameter version"
    operation: ClassVar[str] = "RenderParameterVersion"

    project: str
    parameter: str
    version: str
    location: str = ""

    @property
    def name(self) -> str:
        location = self.location or "global"
        return (
            f"projects/{self.project}/locations/{location}/parameters/{self.parameter}"
            f"/versions/{self.version}"
        )

    @property
    def short(self) -> str:
        return self.parameter


GcpRef = SecretVersionRef | ParameterVersionRef

PROJECT = re.compile(_PROJECT)
LOCATION = re.compile(_LOCATION)
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{1,63}")
ANY_VALUE = "*"
"""A label value in a selection that matches every value (the label is present)."""


@dataclass(frozen=True)
class SecretSelection(_Fetch):
    """The Secret Manager secrets of a project (and location) carrying every label in
    ``labels`` (:data:`ANY_VALUE`: any value), listed with ListSecrets' ``filter``; each
    one is read at ``latest`` as a :class:`SecretVersionRef`."""

    service: ClassVar[Service] = "secretmanager"
    api: ClassVar[str] = "Secret Manager"
    kind: ClassVar[str] = "secret selection"
    operation: ClassVar[str] = "ListSecrets"

    project: str
    labels: tuple[tuple[str, str], ...]
    location: str = ""

    @property
    def name(self) -> str:
        """The parent the secrets are listed under."""
        where = f"/locations/{self.location}" if self.location else ""
        return f"projects/{self.project}{where}"

    @property
    def filter(self) -> str:
        """ListSecrets' filter: every label, ANDed (keys and values are checked by the
        dialect, so nothing here needs quoting)."""
        return " AND ".join(
            f"labels.{key}:*" if value == ANY_VALUE else f"labels.{key}={value}"
            for key, value in self.labels
        )

    def describe(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in self.labels)
        return f"the secrets of {self.name} labelled {labels}"

    def member(self, secret: str) -> SecretVersionRef:
        """The ref that reads one listed secret's latest enabled version."""
        return SecretVersionRef(
            self.project,
            secret,
            "latest",
            self.location,
            auth=self.auth,
            key_json=self.key_json,
            auth_explicit=self.auth_explicit,
        )


GcpLocator = GcpRef | SecretSelection
"""Everything an identity is resolved for and an endpoint is chosen for."""


def parse_resource_name(
    text: str,
    *,
    auth: AuthMode = "pod-adc",
    key_json: bool = False,
    auth_explicit: bool = True,
) -> GcpRef | None:
    """The ref for a full resource name, or ``None`` when it matches no format."""
    m = _SM_GLOBAL.fullmatch(text) or _SM_REGIONAL.fullmatch(text)
    if m:
        return SecretVersionRef(
            m["project"],
            m["secret"],
            m["version"],
            _location(m),
            auth=auth,
            key_json=key_json,
            auth_explicit=auth_explicit,
        )
    m = _PM.fullmatch(text)
    if m:
        return ParameterVersionRef(
            m["project"],
            m["parameter"],
            m["version"],
            _location(m),
            auth=auth,
            key_json=key_json,
            auth_explicit=auth_explicit,
        )
    return None


def _location(m: re.Match[str]) -> str:
    """The name's location; ``global`` (or none) is the global service."""
    location = m.groupdict().get("location") or ""
    return "" if location == "global" else location


def explain_bad_name(text: str) -> str:
    """A short reason why ``text`` is not a resource name, for error messages."""
    if text != text.strip():
        return "has leading or trailing whitespace"
    if text.startswith("//") or "googleapis.com" in text:
        return "must be a bare resource name starting with 'projects/', not a URL"
    if not text.startswith("projects/"):
        return "must start with 'projects/'"
    parts = text.split("/")
    if "" in parts:
        return "has an empty path element ('//' or a trailing '/')"
    if "locations" in parts:
        i = parts.index("locations")
        if i + 1 < len(parts) and len(parts[i + 1]) > 30:
            return "has a location longer than 30 characters"
    if "versions" not in parts:
        return "names no version; end it with '/versions/latest' or '/versions/<number>'"
    return "does not match any supported format"
