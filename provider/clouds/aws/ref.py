"""Locators for the ``aws`` backend (Secrets Manager and SSM Parameter Store).

Built by :mod:`provider.clouds.aws.dialect` (both the drop-in ``aws`` dialect and the
native ``backend: aws`` objects) and read by :mod:`provider.clouds.aws.backend`.
No SDK imports: a dialect describes an object without loading boto3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Service = Literal["secretsmanager", "ssm"]
Auth = Literal["irsa", "pod-identity"]
AddressType = Literal["auto", "ipv4", "ipv6"]

IRSA_AUDIENCE = "sts.amazonaws.com"
POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"
DEFAULT_STAGE = "AWSCURRENT"
ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
"""The ServiceAccount annotation naming the IAM role that IRSA assumes."""

# Commercial, China, GovCloud and ISO partitions: us-east-1, cn-north-1,
# us-gov-west-1, us-isob-east-1, eu-isoe-west-1, ap-southeast-5, il-central-1...
REGION_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+){1,3}-[0-9]{1,2}$")


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str


def parse_arn(text: str) -> Arn | None:
    """The ARN's parts, or ``None`` when ``text`` is not a well-formed ARN.

    Same rule as the AWS SDK for Go's ``arn.Parse`` (six ``:``-separated
    sections), plus non-empty partition, service and resource.
    """
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    _, partition, service, region, account, resource = parts
    if not partition or not service or not resource:
        return None
    return Arn(partition, service, region, account, resource)


def is_arn(text: str) -> bool:
    return text.startswith("arn:")


def audience(auth: Auth) -> str:
    """The audience of the service-account token an identity method needs."""
    return POD_IDENTITY_AUDIENCE if auth == "pod-identity" else IRSA_AUDIENCE


@dataclass(frozen=True)
class AwsTarget:
    """What to read in one region: a name or ARN and an optional version selector.

    Secrets Manager: ``version_id`` is the VersionId, ``version_label`` the
    VersionStage (``""`` means AWSCURRENT). SSM: ``version_id`` is the version
    number and ``version_label`` the parameter label (at most one of them).
    """

    name: str
    version_id: str = ""
    version_label: str = ""

    @property
    def pinned(self) -> bool:
        """A VersionId / version number never changes its content."""
        return bool(self.version_id)

    def ssm_selector(self) -> str:
        """``name``, ``name:version`` or ``name:label`` for GetParameters."""
        if self.version_id:
            return f"{self.name}:{self.version_id}"
        if self.version_label:
            return f"{self.name}:{self.version_label}"
        return self.name

    def describe(self, service: Service) -> str:
        what = "secret" if service == "secretsmanager" else "parameter"
        sel = ""
        if service == "ssm" and self.version_id:
            sel = f" (version {self.version_id})"
        elif service == "ssm" and self.version_label:
            sel = f" (label {self.version_label})"
        elif self.version_id or self.version_label:
            bits = []
            if self.version_id:
                bits.append(f"VersionId {self.version_id}")
            if self.version_label:
                bits.append(f"VersionStage {self.version_label}")
            sel = f" ({', '.join(bits)})"
        return f"{what} {self.name!r}{sel}"


@dataclass(frozen=True)
class AssumeRole:
    """A role the pod's credentials assume before reading (role chaining)."""

    role_arn: str
    external_id: str = field(default="", repr=False)
    duration_seconds: int = 3600


@dataclass(frozen=True)
class AwsRef:
    """One value to read from Secrets Manager or SSM Parameter Store as the pod."""

    service: Service
    target: AwsTarget
    region: str = ""
    """``""``: the server's default region, else ``AWS_REGION``, else the node's
    ``topology.kubernetes.io/region`` label."""
    failover_region: str = ""
    failover: AwsTarget | None = None
    """What to read in ``failover_region``; ``None`` means the primary target."""
    auth: Auth = "irsa"
    address_type: AddressType = "auto"
    """Pod Identity agent address family (ignored for IRSA)."""
    assume: AssumeRole | None = None
    """``assumeRoleArn``: read as this role, assumed with the pod's credentials."""
    history: int = 0
    """``> 0``: one of the ``history`` most recent versions (``versionHistory``)."""
    index: int = 0
    """With ``history``: which version, 0 = the current one."""

    @property
    def audience(self) -> str:
        return audience(self.auth)

    @property
    def failover_target(self) -> AwsTarget:
        return self.failover or self.target

    @property
    def service_title(self) -> str:
        return "Secrets Manager" if self.service == "secretsmanager" else "SSM Parameter Store"


@dataclass(frozen=True)
class AwsSelection:
    """Many values selected in one store (the native dialect's ``select``): Secrets Manager
    secrets by name prefix and/or exact tags (ListSecrets), or SSM parameters under a path
    (GetParametersByPath). Read in one region as the pod, or as the role it assumes
    (``assume``), like :class:`AwsRef`: the listing and every member."""

    service: Service
    name_prefix: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    """Every (key, value) must be on a secret, exactly; sorted."""
    path: str = ""
    """The SSM hierarchy, without a trailing ``/``."""
    recursive: bool = False
    region: str = ""
    auth: Auth = "irsa"
    address_type: AddressType = "auto"
    assume: AssumeRole | None = None
    """``assumeRoleArn``: list and read as this role, assumed with the pod's credentials."""

    def member(self, name: str) -> AwsRef:
        """The plain ref that reads one selected secret or parameter (its current value),
        as the same identity as the listing."""
        return AwsRef(
            service=self.service,
            target=AwsTarget(name),
            region=self.region,
            auth=self.auth,
            address_type=self.address_type,
            assume=self.assume,
        )

    def relative(self, name: str) -> str:
        """A selected name relative to the selection: below the prefix or path (one ``/``
        after it dropped), or the whole name when tags alone select."""
        base = self.name_prefix if self.service == "secretsmanager" else self.path
        rest = name[len(base) :] if base and name.startswith(base) else name
        return rest[1:] if base and not base.endswith("/") and rest.startswith("/") else rest

    def describe(self) -> str:
        if self.service == "ssm":
            how = "recursively" if self.recursive else "directly"
            return f"SSM parameters {how} under {self.path!r}"
        bits = [f"name prefix {self.name_prefix!r}"] if self.name_prefix else []
        bits += [f"tag {k}={v}" for k, v in self.tags]
        return "Secrets Manager secrets with " + " and ".join(bits)
