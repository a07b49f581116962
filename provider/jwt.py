"""Reading the claims of the pod's ServiceAccount token without verifying it.

keyferry only reads claims to catch a token meant for another ServiceAccount or
audience before sending it anywhere, and to name the subject in messages; the
cloud's identity service verifies the signature and is the only judge of it."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any


def unverified_claims(token: str) -> Mapping[str, Any] | None:
    """The JSON payload of a compact JWT, or None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, Mapping) else None
