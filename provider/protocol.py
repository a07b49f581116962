"""The driver's MountRequest in, a MountResponse out.

Decoding is strict about shape and lenient about what the driver legitimately
varies (docs/protocol.md §2): ``secrets`` may be ``null``, ``{}`` or a map;
``permission`` is JSON (``"420"`` = 0644); tokens may sit in ``attributes`` or
in ``secrets``; the v1.5 rotation path omits ``secretProviderClass`` and the
``ephemeral`` flag. Nothing decoded here is trusted for authorisation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError

from ._proto.v1alpha1 import service_pb2 as pb
from .errors import InvalidArgument
from .model import Mount, Pod, Result, Token

KUBELET_PREFIX = "csi.storage.k8s.io/"
TOKENS_KEY = "csi.storage.k8s.io/serviceAccount.tokens"
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT = "csi.storage.k8s.io/serviceAccount.name"
# Volume attributes the driver itself interprets; they are not provider parameters.
DRIVER_KEYS = ("secretProviderClass", "providerName")


def _string_map(raw: str, field: str, *, allow_null: bool) -> dict[str, str]:
    text = raw.strip()
    if allow_null and text in ("", "null"):
        return {}
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidArgument(f"MountRequest.{field} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"MountRequest.{field} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "it must be a JSON object of strings as the Secrets Store CSI Driver sends it"
        ) from None
    if value is None and allow_null:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(
            f"MountRequest.{field} must be a JSON object of strings, got {type(value).__name__}"
        )
    for key, item in value.items():
        if not isinstance(item, str):
            shown = key if field == "attributes" else "a key"
            raise InvalidArgument(
                f"MountRequest.{field}: the value of {shown!r} is a {type(item).__name__}; "
                "every value must be a string (quote numbers and booleans in the "
                "SecretProviderClass parameters)"
            )
    return value


def _tokens(raw: str, source: str) -> dict[str, Token]:
    try:
        value: Any = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidArgument(
            f"{TOKENS_KEY} in {source} is not valid JSON; it must be the object kubelet "
            'sends: {"<audience>": {"token": "...", "expirationTimestamp": "..."}}'
        ) from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{TOKENS_KEY} in {source} must be a JSON object keyed by audience")
    tokens: dict[str, Token] = {}
    for audience, entry in value.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("token", None), str):
            raise InvalidArgument(
                f"{TOKENS_KEY} in {source}: the entry for audience {audience!r} must be an "
                'object with a string "token"'
            )
        expiration = entry.get("expirationTimestamp", "")
        tokens[audience] = Token(
            audience=audience,
            token=entry["token"],
            expiration=expiration if isinstance(expiration, str) else "",
        )
    return tokens


def _permission(raw: str) -> int:
    if raw == "420":  # what the driver always sends (0644)
        return 0o644
    if raw.strip() == "":
        raise InvalidArgument(
            "MountRequest.permission is empty; it must be the default file mode as JSON "
            '(the driver always sends "420" for 0644)'
        )
    try:
        value = json.loads(raw) if len(raw) <= 32 else None
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        value = None
    if isinstance(value, str):  # tolerate a quoted number
        value = int(value) if value.isascii() and value.isdigit() else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o777:
        raise InvalidArgument(
            f"MountRequest.permission {raw[:20]!r} is not a JSON file mode between 0 and 511 "
            '(the driver sends "420" for 0644)'
        )
    return value


def parse(raw: bytes) -> pb.MountRequest:
    """The request's wire bytes → MountRequest (the server takes requests as bytes, so a
    message that is not protobuf is INVALID_ARGUMENT, not grpc's UNKNOWN)."""
    try:
        return pb.MountRequest.FromString(raw)
    except DecodeError:  # its text is not shown: it may quote request bytes
        raise InvalidArgument(
            "MountRequest could not be decoded: the request bytes are not a "
            "v1alpha1.MountRequest protobuf message (corrupt or truncated wire format, or a "
            "string field that is not UTF-8); the caller must speak the Secrets Store CSI "
            "Driver's v1alpha1 provider protocol"
        ) from None


def decode(
    request: pb.MountRequest, *, dialect: str = "native", provider_name: str = "keyferry"
) -> Mount:
    attributes = _string_map(request.attributes, "attributes", allow_null=False)
    secrets = _string_map(request.secrets, "secrets", allow_null=True)
    tokens: dict[str, Token] = {}
    if attributes.get(TOKENS_KEY):
        tokens = _tokens(attributes[TOKENS_KEY], "attributes")
    elif secrets.get(TOKENS_KEY):
        tokens = _tokens(secrets[TOKENS_KEY], "secrets")
    secrets.pop(TOKENS_KEY, None)
    pod = Pod(
        namespace=attributes.get(POD_NAMESPACE, ""),
        name=attributes.get(POD_NAME, ""),
        uid=attributes.get(POD_UID, ""),
        service_account=attributes.get(SERVICE_ACCOUNT, ""),
    )
    parameters = {
        k: v
        for k, v in attributes.items()
        if not k.startswith(KUBELET_PREFIX) and k not in DRIVER_KEYS
    }
    current: dict[str, str] = {}
    for ov in request.current_object_version:
        current[ov.id] = ov.version
    return Mount(
        pod=pod,
        parameters=parameters,
        tokens=tokens,
        secrets=secrets,
        default_mode=_permission(request.permission),
        secret_provider_class=attributes.get("secretProviderClass", ""),
        current_versions=current,
        target_path=request.target_path,
        dialect=dialect,
        provider_name=provider_name,
    )


def encode(result: Result) -> pb.MountResponse:
    # Fields set on added elements: half the cost of building messages from keywords.
    response = pb.MountResponse()
    for v in result.versions:
        version = response.object_version.add()
        version.id = v.id
        version.version = v.version
    for f in result.files:
        out = response.files.add()
        out.path = f.path
        out.mode = f.mode
        out.contents = f.contents
    return response


def secret_values(mount: Mount) -> list[str]:
    """Everything in a request that must never be logged (fed to the log redactor)."""
    values = [t.token for t in mount.tokens.values()]
    values.extend(mount.secrets.values())
    return values


def attributes_json(attributes: Mapping[str, str]) -> str:
    """Encode attributes the way the driver does (Go's json.Marshal of a map)."""
    text = json.dumps(dict(sorted(attributes.items())), separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text


_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
