"""What IAM decides for the AWS fake: role-to-role trust policies and identity policies.

Moto allows every call and lets any credentials assume any role. :class:`Iam` adds the
two decisions the proxy in :mod:`keyferry_fakes.aws_faults` needs to be as strict as AWS
for role chaining and the list APIs:

- ``sts:AssumeRole``: the target role's trust policy must name the calling role
  (:meth:`Iam.trust_role`, ``"Principal": {"AWS": "<caller role ARN>"}``), with
  ``"Condition": {"StringEquals": {"sts:ExternalId": ...}}`` when given; a session
  assumed with role-session credentials (role chaining) lasts at most 3600 seconds;
  the RoleSessionName is 2..64 characters of ``[\\w+=,.@-]``. Else 403 ``AccessDenied`` /
  400 ``ValidationError``, the answers STS gives.
- identity policies (:meth:`Iam.allow`): a role given at least one policy statement may
  do only what its statements allow (IAM's default deny), e.g.
  ``secretsmanager:ListSecretVersionIds`` on ``team/*``; else 400
  ``AccessDeniedException`` (JSON APIs) or 403 ``AccessDenied`` (STS). A role given no
  statement keeps moto's allow-all, as before this module existed.
- the list actions keyferry's selections call (:data:`LIST_ACTIONS`, and
  ``BatchGetSecretValue`` with ``Filters``, which needs ``secretsmanager:ListSecrets``):
  refused to every role until :meth:`Iam.grant` gave it the action, as a role's policy
  must in AWS; else 400 ``AccessDeniedException``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

CHAINED_MAX_SECONDS = 3600
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
LIST_ACTIONS = frozenset({"secretsmanager:ListSecrets", "ssm:GetParametersByPath"})
"""Actions a role may call only once :meth:`Iam.grant` allowed them to it."""
_RESOURCE_FIELDS = ("SecretId", "Name", "Path", "RoleArn")
_RESOURCE_LISTS = ("SecretIdList", "Names")


@dataclass(frozen=True)
class Denial:
    status: int
    code: str
    message: str


@dataclass
class Iam:
    role_trusts: dict[str, dict[str, str]] = field(default_factory=dict)
    """target role ARN -> {caller role ARN: the ExternalId its condition requires ("": none)}."""
    policies: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """role ARN -> (action glob, resource glob) statements that allow."""
    grants: dict[str, set[str]] = field(default_factory=dict)
    """role ARN -> the :data:`LIST_ACTIONS` its policies allow."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def trust_role(self, target: str, caller: str, external_id: str = "") -> None:
        """Let ``target``'s trust policy allow sts:AssumeRole for the role ``caller``."""
        with self._lock:
            self.role_trusts.setdefault(target, {})[caller] = external_id

    def allow(self, role: str, action: str, resource: str = "*") -> None:
        """An Allow statement in ``role``'s identity policy (globs, as IAM's wildcards)."""
        with self._lock:
            self.policies.setdefault(role, []).append((action, resource))

    def grant(self, role: str, *actions: str) -> None:
        """Let ``role`` call the list ``actions`` (of :data:`LIST_ACTIONS`)."""
        unknown = set(actions) - LIST_ACTIONS
        if unknown:
            raise ValueError(f"not a list action: {sorted(unknown)}")
        with self._lock:
            self.grants.setdefault(role, set()).update(actions)

    def reset(self) -> None:
        with self._lock:
            self.role_trusts.clear()
            self.policies.clear()
            self.grants.clear()

    def authorize(
        self, role: str, service: str, operation: str, body: bytes, json_api: bool
    ) -> Denial | None:
        """The identity-policy decision for one request made as ``role``: its policy
        statements, then the list actions it needs."""
        action = f"{service}:{operation}"
        return self._policies(role, action, body, json_api) or self._listing(role, action, body)

    def _listing(self, role: str, action: str, body: bytes) -> Denial | None:
        needed = [action] if action in LIST_ACTIONS else []
        if action == "secretsmanager:BatchGetSecretValue" and "Filters" in json.loads(
            body or b"{}"
        ):
            needed.append("secretsmanager:ListSecrets")
        with self._lock:
            allowed = set(self.grants.get(role, ()))
        for wanted in needed:
            if wanted not in allowed:
                who = role.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")
                return Denial(
                    400,
                    "AccessDeniedException",
                    f"User: {who}/keyferry is not authorized to perform: {wanted} because no "
                    f"identity-based policy allows the {wanted} action",
                )
        return None

    def _policies(self, role: str, action: str, body: bytes, json_api: bool) -> Denial | None:
        with self._lock:
            statements = list(self.policies.get(role, ()))
        if not statements:
            return None
        resources = _resources(body, json_api) or ["*"]
        for resource in resources:
            if not any(
                fnmatch.fnmatchcase(action, a) and fnmatch.fnmatchcase(resource, r)
                for a, r in statements
            ):
                message = (
                    f"User: {role} is not authorized to perform: {action} on resource: "
                    f"{resource} because no identity-based policy allows the {action} action"
                )
                if json_api:
                    return Denial(400, "AccessDeniedException", message)
                return Denial(403, "AccessDenied", message)
        return None

    def assume_role(self, caller: str, chained: bool, body: bytes) -> Denial | None:
        """The trust-policy and session checks of one sts:AssumeRole by ``caller``."""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        target = form.get("RoleArn", "")
        session = form.get("RoleSessionName", "")
        if not _SESSION_NAME.match(session):
            return Denial(
                400,
                "ValidationError",
                "1 validation error detected: Value at 'roleSessionName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* "
                "and length 2..64",
            )
        duration = int(form.get("DurationSeconds", "3600") or 3600)
        if chained and duration > CHAINED_MAX_SECONDS:
            return Denial(
                400,
                "ValidationError",
                "The requested DurationSeconds exceeds the 1 hour session limit for roles "
                "assumed by role chaining.",
            )
        with self._lock:
            callers = dict(self.role_trusts.get(target, {}))
        denied = Denial(
            403,
            "AccessDenied",
            f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {target}",
        )
        if caller not in callers:
            return denied
        wanted = callers[caller]
        if wanted and form.get("ExternalId", "") != wanted:
            return denied
        return None


def _resources(body: bytes, json_api: bool) -> list[str]:
    if not json_api:
        form = parse_qs(body.decode("utf-8", "replace"))
        return [v[0] for k, v in form.items() if k in _RESOURCE_FIELDS]
    try:
        doc: Any = json.loads(body or b"{}")
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    found = [str(doc[k]) for k in _RESOURCE_FIELDS if isinstance(doc.get(k), str)]
    for k in _RESOURCE_LISTS:
        if isinstance(doc.get(k), list):
            found.extend(str(v) for v in doc[k])
    return found
