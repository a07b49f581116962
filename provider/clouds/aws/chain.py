"""Role chaining: objects with ``assumeRoleArn`` are read as that role.

The pod's own credentials (IRSA or EKS Pod Identity, :mod:`.identity`) call
``sts:AssumeRole`` for the target role through botocore's AssumeRoleCredentialFetcher
(:meth:`.credentials.IdentityPool.chained`); the session names the pod as the first hop's
does, the credentials are kept per (pod principal, role, external id, duration) and
refreshed by botocore before they expire. Only when the server allows it
(``backends.aws.allow_role_chaining`` and ``role_chaining_roles``).
"""

from __future__ import annotations

from ...errors import FailedPrecondition, KeyferryError
from ...model import Deadline, Mount
from .api import Api
from .credentials import Identity, IdentityPool
from .identity import role_session_name
from .ref import AssumeRole
from .settings import AwsSettings


class Chains:
    def __init__(self, settings: AwsSettings, pool: IdentityPool, api: Api) -> None:
        self.settings = settings
        self.pool = pool
        self.api = api

    def check(self, assume: AssumeRole) -> KeyferryError | None:
        """Why the server refuses to assume ``assume.role_arn`` (no I/O), or ``None``."""
        if not self.settings.allow_role_chaining:
            return FailedPrecondition(
                f"assumeRoleArn {assume.role_arn}: this keyferry server does not allow role "
                "chaining; the cluster operator must set backends.aws.allow_role_chaining: "
                "true (and may limit it with backends.aws.role_chaining_roles)"
            )
        if not self.settings.may_assume(assume.role_arn):
            return FailedPrecondition(
                f"assumeRoleArn {assume.role_arn}: the role is not among the roles this "
                "keyferry server lets objects assume (backends.aws.role_chaining_roles); ask "
                "the cluster operator to add it"
            )
        return None

    async def resolve(
        self,
        mount: Mount,
        source: Identity,
        assume: AssumeRole,
        region: str,
        deadline: Deadline,
    ) -> Identity:
        """The target role's identity, its credentials loaded (STS only when they are
        missing or near expiry)."""
        identity = self.pool.chained(source, assume, self.settings.sts_region or region)
        identity.update("", role_session_name(mount))
        if not identity.credentials.refresh_needed():
            return identity
        first = source.principal
        caller = first.role_arn if first.kind == "irsa" else first.describe()
        condition = (
            ' with the condition {"StringEquals": {"sts:ExternalId": <the externalId>}}'
            if assume.external_id
            else ""
        )
        hint = (
            f"the trust policy of {assume.role_arn} must allow sts:AssumeRole for "
            f'{{"AWS": "{caller}"}}{condition}, and {first.describe()} needs sts:AssumeRole on '
            f"{assume.role_arn} in its own permissions"
        )
        duration_hint = (
            f"STS refused DurationSeconds {assume.duration_seconds} for {assume.role_arn}: a "
            "chained session lasts at most 3600 seconds and at most the role's maximum "
            "session duration; lower durationSeconds"
        )
        await self.api.call(
            "sts",
            "AssumeRole",
            identity.credentials.get_frozen_credentials,
            deadline,
            what=f"AssumeRole of {assume.role_arn} with the credentials of {first.describe()}",
            hint=hint,
            hints={"ValidationError": duration_hint},
        )
        return identity
