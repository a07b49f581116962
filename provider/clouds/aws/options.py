"""Native ``backend: aws`` keys beyond the locator: role chaining and version history.

- ``assumeRoleArn`` (with ``externalId`` and ``durationSeconds``): the pod's IRSA or Pod
  Identity credentials assume this role (role chaining) and the object is read as it.
  Whether a server allows it is server configuration (``backends.aws.allow_role_chaining``),
  checked by the backend before any call.
- ``versionHistory: N``: the N most recent versions as ``<path>/0..N-1``; ``previous:
  true``: the version before the current one (Secrets Manager: the ``AWSPREVIOUS`` stage).
  See :mod:`provider.history`.

Pure parsing: no SDK, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ... import history
from ...errors import InvalidArgument
from .fields import text
from .ref import AssumeRole, AwsRef, parse_arn

ROLE_KEYS = ("assumeRoleArn", "externalId", "durationSeconds")
"""The role-chaining keys: also allowed beside ``select`` (:func:`assume_role`)."""
KEYS = (*ROLE_KEYS, *history.KEYS)
PREVIOUS_STAGE = "AWSPREVIOUS"
MIN_DURATION = 900
CHAINED_MAX_DURATION = 3600
"""STS caps a session assumed with role-chained credentials at one hour."""
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_ROLE_NAME = re.compile(r"^role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")


def apply(fields: Mapping[str, Any], where: str, ref: AwsRef) -> AwsRef:
    """``ref`` with the role to assume and the version-history slot the keys ask for."""
    return _history(fields, where, replace(ref, assume=assume_role(fields, where)))


def check_role_arn(value: str, where: str) -> str:
    """An IAM role ARN (``arn:<partition>:iam::<12 digits>:role/<path/name>``), else
    INVALID_ARGUMENT naming the field."""
    arn = parse_arn(value)
    if (
        arn is None
        or arn.service != "iam"
        or arn.region
        or not _ACCOUNT.match(arn.account)
        or not _ROLE_NAME.match(arn.resource)
    ):
        raise InvalidArgument(
            f"{where}: assumeRoleArn {value[:120]!r} is not an IAM role ARN; use "
            "arn:aws:iam::<12-digit account>:role/<name>"
        )
    return value


def assume_role(fields: Mapping[str, Any], where: str) -> AssumeRole | None:
    """The role ``assumeRoleArn`` (with ``externalId`` and ``durationSeconds``) names, or
    ``None``; INVALID_ARGUMENT naming the key for a bad value. Shared by one object
    (:func:`apply`) and a selection (``native_select``)."""
    role = text(fields.get("assumeRoleArn"), where, "assumeRoleArn").strip()
    external_id = text(fields.get("externalId"), where, "externalId")
    duration_text = text(fields.get("durationSeconds"), where, "durationSeconds").strip()
    if not role:
        extra = [k for k in ("externalId", "durationSeconds") if k in fields]
        if extra:
            raise InvalidArgument(f"{where}: '{extra[0]}' needs 'assumeRoleArn'")
        return None
    check_role_arn(role, where)
    if external_id and not _EXTERNAL_ID.match(external_id):
        raise InvalidArgument(
            f"{where}: externalId must be 2 to 1224 characters of letters, digits and "
            "+=,.@:/-_ (what STS accepts)"
        )
    duration = CHAINED_MAX_DURATION
    if duration_text:
        if not (duration_text.isascii() and duration_text.isdigit()):
            raise InvalidArgument(
                f"{where}: durationSeconds must be a whole number of seconds "
                f"({MIN_DURATION}..{CHAINED_MAX_DURATION}), got {duration_text[:20]!r}"
            )
        duration = int(duration_text)
        if duration < MIN_DURATION:
            raise InvalidArgument(
                f"{where}: durationSeconds {duration} is below STS's minimum of {MIN_DURATION}"
            )
        if duration > CHAINED_MAX_DURATION:
            raise InvalidArgument(
                f"{where}: durationSeconds {duration} is above {CHAINED_MAX_DURATION}: the "
                "pod's credentials are themselves a role session, and STS caps a chained "
                "session at one hour whatever the role's maximum session duration"
            )
    return AssumeRole(role, external_id, duration)


def _history(fields: Mapping[str, Any], where: str, ref: AwsRef) -> AwsRef:
    count, index = history.read(fields, where)
    if not count:
        return ref
    target = ref.target
    chosen = "previous" if index else "versionHistory"
    if target.version_id or target.version_label:
        raise InvalidArgument(
            f"{where}: '{chosen}' picks versions itself; remove the version selector "
            "(versionId/versionStage or version/label)"
        )
    if ref.failover_region:
        raise InvalidArgument(
            f"{where}: '{chosen}' cannot be combined with failoverRegion (the versions are "
            "listed in one region)"
        )
    if index and ref.service == "secretsmanager":
        return replace(ref, target=replace(target, version_label=PREVIOUS_STAGE))
    return replace(ref, history=count, index=index)
