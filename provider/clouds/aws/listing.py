"""``select`` for the ``aws`` backend (:mod:`provider.selection`): list, as the pod.

- Secrets Manager: ``ListSecrets`` (100 a page) with the service's filters — ``name``
  (a case-sensitive prefix match), ``tag-key`` and ``tag-value`` of the first tag a
  filter value can hold (ASCII only; tags are not) — then every result is
  checked again here: the name must start with the prefix exactly and every tag must be
  on the secret with exactly its value (the service matches tag keys and values each by
  prefix and independently of each other). Secrets scheduled for deletion are left out,
  as the service does by default. The members' values are then read by the backend's
  ``fetch`` with the class's other secrets (``BatchGetSecretValue``, 20 a call).
- SSM: ``GetParametersByPath`` (10 a page, decrypted, recursive or not). It returns the
  values too: they go into the value cache under the member's key, so the Mount's
  ``fetch`` reads none of them again (while ``cache_ttl_seconds`` is above 0).

With ``assumeRoleArn`` the listing and the members' reads run as the assumed role
(:mod:`.chain`, only where the server allows role chaining; the gate is checked before
any call), as a plain object's read does.

A listing is cached per (principal, selection, region) for ``cache_ttl_seconds`` and
identical concurrent listings share one set of calls (:class:`provider.selection.Listings`);
a chained principal names the pod's principal, the role, its external id and duration, so
a listing is never shared between the pod's role and a role it assumes, or between roles.
With ``stale_if_error_seconds`` a listing that fails with an outage is served from the last
one of the same key (:mod:`provider.lastgood`).
Past the server's ``max_selected_objects`` the listing stops and the Mount fails.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import botocore.session
from botocore import xform_name

from ...backend import Services
from ...errors import Internal, KeyferryError
from ...model import Deadline, Fetched, Mount
from ...selection import Listing, Listings, Member, too_many
from .api import NAME, Api
from .chain import Chains
from .credentials import Identity
from .identity import Identities
from .ref import AwsSelection
from .region import Regions

_DENIED = ("AccessDeniedException", "AccessDenied")
_PERMISSIONS = {
    "ListSecrets": "secretsmanager:ListSecrets",
    "GetParametersByPath": "ssm:GetParametersByPath on the path (and kms:Decrypt for SecureString)",
}
"""What a denied list call needs (IAM actions)."""


@functools.cache
def _filter_value() -> re.Pattern[str]:
    """What ListSecrets accepts as a filter value (botocore's model of the API)."""
    model = botocore.session.get_session().get_service_model("secretsmanager")
    return re.compile(str(model.shape_for("FilterValueStringType").metadata["pattern"]))


def _filterable(text: str) -> bool:
    return len(text) <= 512 and _filter_value().fullmatch(text) is not None


class Lister:
    def __init__(
        self,
        services: Services,
        api: Api,
        identities: Identities,
        regions: Regions,
        chains: Chains,
    ) -> None:
        self.services = services
        self.api = api
        self.identities = identities
        self.regions = regions
        self.chains = chains
        self.listings = Listings(NAME, services)

    async def select(
        self, mount: Mount, queries: Sequence[AwsSelection], deadline: Deadline, limit: int
    ) -> list[Listing | Exception]:
        out: list[Listing | Exception | None] = [self._refusal(mount, q) for q in queries]
        todo = [i for i, problem in enumerate(out) if problem is None]
        probes = [queries[i].member("") for i in todo]
        regions = await self.regions.primary(mount, probes, deadline) if todo else []
        listed = await asyncio.gather(
            *(
                self._one(mount, queries[i], region, deadline, limit)
                for i, region in zip(todo, regions, strict=True)
            ),
            return_exceptions=True,
        )
        for i, item in zip(todo, listed, strict=True):
            if isinstance(item, BaseException) and not isinstance(item, Exception):
                raise item
            out[i] = item
        return [item if item is not None else Internal("no aws listing") for item in out]

    def _refusal(self, mount: Mount, query: AwsSelection) -> KeyferryError | None:
        """Why ``query`` cannot be listed, found without I/O: the pod's token, and whether
        the server allows the role chain it names."""
        problem = self.identities.check_token(mount, query.auth)
        if problem is None and query.assume is not None:
            problem = self.chains.check(query.assume)
        return problem

    async def _one(
        self,
        mount: Mount,
        query: AwsSelection,
        region: str | KeyferryError,
        deadline: Deadline,
        limit: int,
    ) -> Listing:
        if isinstance(region, KeyferryError):
            raise region
        identity = await self.identities.resolve(
            mount, query.auth, query.address_type, region, deadline
        )
        if query.assume is not None:  # list as the target role, as fetch reads its members
            identity = await self.chains.resolve(mount, identity, query.assume, region, deadline)
        key = (identity.principal, query, region, limit)
        lister = self._parameters if query.service == "ssm" else self._secrets
        return await self.listings.get(
            key, lambda: lister(identity, query, region, deadline, limit)
        )

    async def _secrets(
        self, identity: Identity, query: AwsSelection, region: str, deadline: Deadline, limit: int
    ) -> Listing:
        filters: list[dict[str, Any]] = []
        if query.name_prefix:
            filters.append({"Key": "name", "Values": [query.name_prefix]})
        # A tag narrows the listing (each is checked exactly below), if ListSecrets can filter
        # by it: its filter values are ASCII only, tags are not ("café").
        narrowing = [tag for tag in query.tags if all(map(_filterable, tag))]
        if narrowing:
            key, value = narrowing[0]
            filters.append({"Key": "tag-key", "Values": [key]})
            filters.append({"Key": "tag-value", "Values": [value]})
        members: list[Member] = []
        request = {"Filters": filters, "MaxResults": 100}
        async for page in self._pages(identity, query, region, deadline, "ListSecrets", request):
            for secret in page.get("SecretList", []) or []:
                name = str(secret.get("Name", ""))
                if secret.get("DeletedDate") or not name.startswith(query.name_prefix):
                    continue
                tags = {(str(t.get("Key")), str(t.get("Value"))) for t in secret.get("Tags") or []}
                if not all(tag in tags for tag in query.tags):
                    continue
                members.append(Member(query.relative(name), query.member(name)))
                if len(members) > limit:
                    raise too_many(query.describe(), limit)
        return tuple(members)

    async def _parameters(
        self, identity: Identity, query: AwsSelection, region: str, deadline: Deadline, limit: int
    ) -> Listing:
        ttl = self.services.config.cache_ttl_seconds
        members: list[Member] = []
        request = {"Path": query.path, "Recursive": query.recursive, "WithDecryption": True}
        operation = "GetParametersByPath"
        async for page in self._pages(identity, query, region, deadline, operation, request):
            for param in page.get("Parameters", []) or []:
                name = str(param.get("Name", ""))
                ref = query.member(name)
                fetched = Fetched(
                    content=str(param.get("Value", "")).encode("utf-8"),
                    version=str(param.get("Version", "")),
                    content_type=str(param.get("Type", "")),
                    served_by=region,
                )
                # The value came with the listing: the Mount's fetch finds it here.
                self.services.values.put((NAME, identity.principal, ref, region), fetched, ttl=ttl)
                members.append(Member(query.relative(name), ref))
                if len(members) > limit:
                    raise too_many(query.describe(), limit)
        return tuple(members)

    async def _pages(
        self,
        identity: Identity,
        query: AwsSelection,
        region: str,
        deadline: Deadline,
        operation: str,
        request: dict[str, Any],
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of one list operation (``NextToken``), each call through the gate; a
        denial names the permission and who needs it."""
        client = await self.api.client(identity, query.service, region)
        method = getattr(client, xform_name(operation))
        what = f"{operation} in {region} ({query.describe()})"
        hints = dict.fromkeys(_DENIED, identity.principal.needs(_PERMISSIONS[operation]))
        token = ""
        while True:
            kwargs = {**request, "NextToken": token} if token else request
            page: dict[str, Any] = await self.api.call(
                query.service, operation, method, deadline, what=what, hints=hints, **kwargs
            )
            yield page
            token = page.get("NextToken") or ""
            if not token:
                return
