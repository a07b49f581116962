"""The one object model shared by every step of a Mount.

Parsing happens at the boundary (:mod:`provider.protocol`, the dialects);
after that every step trusts these types. Secret material is kept out of
``repr`` so a stray log line or traceback cannot print it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_MODE = 0o644

ExtractKind = Literal["jmespath", "json_key", "yaml_key"]
Decoding = Literal["utf-8", "base64", "hex"]


@dataclass(frozen=True)
class Pod:
    """The pod a Mount is for, as kubelet describes it (all may be empty)."""

    namespace: str = ""
    name: str = ""
    uid: str = ""
    service_account: str = ""


@dataclass(frozen=True)
class Token:
    """A service-account token the driver passed for one audience."""

    audience: str
    token: str = field(repr=False)
    expiration: str = ""


@dataclass(frozen=True)
class Mount:
    """A decoded MountRequest."""

    pod: Pod
    parameters: Mapping[str, str]
    """SecretProviderClass parameters plus volumeAttributes; kubelet keys removed."""
    tokens: Mapping[str, Token] = field(default_factory=dict, repr=False)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    """nodePublishSecretRef data; never logged."""
    default_mode: int = DEFAULT_MODE
    secret_provider_class: str = ""
    current_versions: Mapping[str, str] = field(default_factory=dict)
    target_path: str = ""
    dialect: str = "native"
    provider_name: str = "keyferry"


@dataclass(frozen=True)
class Extraction:
    """Pull one value out of a structured document (JSON or YAML)."""

    kind: ExtractKind
    expression: str


@dataclass(frozen=True)
class Output:
    """One file an object produces."""

    path: str
    mode: int | None = None
    """``None`` means the driver's default mode (``permission``)."""
    extract: Extraction | None = None
    decode: Decoding | None = None
    transform: Callable[[Fetched, Output, str], bytes] | None = None
    """Format conversion before extraction/decoding, e.g. certificates:
    ``transform(fetched, output, where) -> bytes``; raise InvalidArgument on bad input."""
    write: bool = True
    """``False``: the value is only read by templates (:class:`TemplateSpec`), not written."""


@dataclass(frozen=True)
class ObjectSpec:
    """One object to fetch and the files it becomes."""

    label: str
    """How messages name this object, e.g. ``objects[2] (db-password)``."""
    backend: str
    ref: Hashable
    """Backend-specific locator (a frozen dataclass from :mod:`provider.refs`)."""
    outputs: tuple[Output, ...]
    ids: tuple[str, ...]
    """ObjectVersion ids reported for this object; each gets the fetched version."""
    optional: bool = False
    selection: Selection | None = None
    """Set when ``ref`` selects many objects (:mod:`provider.selection`): ``outputs`` is
    then the one directory the members are written under."""


@dataclass(frozen=True)
class Selection:
    """How a selecting object's members become files (:mod:`provider.selection`)."""

    max_matches: int = 0
    """The object's own cap (``maxMatches``); 0: the server's ``max_selected_objects``."""


@dataclass(frozen=True)
class TemplateSpec:
    """One file rendered from other objects' outputs (``provider.templates``)."""

    label: str
    path: str
    mode: int | None
    id: str
    source: str = field(repr=False)
    inputs: tuple[str, ...]
    """The output paths the template reads, sorted."""
    inline: bool = True
    """Straight-line (no loops, macros or calls): cheap enough for the event loop."""


@dataclass(frozen=True)
class Plan:
    dialect: str
    objects: tuple[ObjectSpec, ...]
    templates: tuple[TemplateSpec, ...] = ()
    """Rendered after every object was fetched (native dialect only)."""


@dataclass(frozen=True)
class Fetched:
    """What a backend returned for one ref."""

    content: bytes = field(repr=False)
    version: str | None = None
    """The backend's own version id; ``None`` lets the pipeline derive a keyed HMAC."""
    content_type: str = ""
    served_by: str = ""
    """Where the bytes came from (e.g. the AWS region), for the audit log."""
    stale_seconds: float | None = None
    """The age of a last-known-good value served because the backend was unavailable
    (``stale_if_error_seconds``); ``None`` for a value fetched now or fresh in the cache."""


@dataclass(frozen=True)
class OutputFile:
    path: str
    mode: int
    contents: bytes = field(repr=False)
    source: str = ""
    """Label of the object the file came from, for error messages."""


@dataclass(frozen=True)
class ObjectVersion:
    id: str
    version: str


@dataclass(frozen=True)
class Result:
    files: tuple[OutputFile, ...]
    versions: tuple[ObjectVersion, ...]
    skipped: tuple[str, ...] = ()
    """Labels of optional objects that were not found."""
    stale: tuple[tuple[str, float], ...] = ()
    """(label, age in seconds) of objects served last-known-good values."""


class Deadline:
    """A point in monotonic time by which a Mount must answer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0
