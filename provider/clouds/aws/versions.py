"""Version history (``versionHistory: N``; SSM ``previous: true``): which version each slot is.

A history ref names a slot (``index``, 0 = current) among the most recent versions. Before
reading, the slot is pinned to a concrete version: the ref becomes an ordinary one with a
VersionId (Secrets Manager) or version number (SSM), read and cached like any pinned
version (``pinned_cache_seconds``: a version's content never changes).

- Secrets Manager: ``ListSecretVersionIds`` with ``IncludeDeprecated``: Secrets Manager
  keeps labels only on AWSCURRENT, AWSPREVIOUS and custom stages, so older versions are
  "deprecated" (no label) yet readable by VersionId until Secrets Manager removes them
  (beyond 100 versions); they count, or a history could never be deeper than two. Order:
  the ``AWSCURRENT`` version first, then every other version by ``CreatedDate``, newest
  first; a version whose only label is ``AWSPENDING`` (a rotation in progress, not yet in
  effect) is left out.
- SSM: ``GetParameterHistory`` (50 a page, values not decrypted), newest version first.

The listing is kept per (principal, service, region, name) for the server's
``cache_ttl_seconds`` and shared by concurrent mounts; slots beyond the versions that
exist are :class:`~provider.errors.Absent`. With ``stale_if_error_seconds`` a listing that
fails with an outage is served from the last one of the same key
(:mod:`provider.lastgood`) and the slots pinned from it are stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ... import history
from ...backend import Services
from ...errors import Absent, KeyferryError
from ...lastgood import KnownGood
from ...model import Deadline
from .api import Api
from .credentials import Identity
from .errors import DENIED_CODES, classify
from .ref import DEFAULT_STAGE, AwsRef, AwsTarget

PENDING_STAGE = "AWSPENDING"
_OPERATION = {"secretsmanager": "ListSecretVersionIds", "ssm": "GetParameterHistory"}
_PERMISSION = {
    "secretsmanager": "secretsmanager:ListSecretVersionIds",
    "ssm": "ssm:GetParameterHistory",
}


class Versions:
    def __init__(self, services: Services, api: Api) -> None:
        self.services = services
        self.api = api
        self._lists: KnownGood[tuple[str, ...]] = KnownGood(
            services, cache="aws-versions", backend="aws", listing="history", max_entries=10_000
        )

    async def pin(
        self,
        identity: Identity,
        refs: Sequence[AwsRef],
        indices: Sequence[int],
        regions: dict[int, str],
        deadline: Deadline,
        stale: dict[int, float],
    ) -> dict[int, AwsRef | KeyferryError]:
        """For each history ref among ``indices``: the ref pinned to its slot's version, or
        why it cannot be (Absent beyond the versions that exist). A slot pinned from a
        last-known-good listing gets its age in ``stale``."""
        out: dict[int, AwsRef | KeyferryError] = {}
        wanted = [i for i in indices if refs[i].history]
        # One listing per (service, region, name), all concurrently.
        keys = {i: (refs[i].service, regions[i], refs[i].target.name) for i in wanted}
        unique = list(dict.fromkeys(keys.values()))
        firsts = {key: next(i for i in wanted if keys[i] == key) for key in unique}
        lists = await asyncio.gather(
            *(self._listing(identity, refs[firsts[k]], k[1], deadline) for k in unique),
            return_exceptions=True,
        )
        listings = dict(zip(unique, lists, strict=True))
        for i in wanted:
            ref, got = refs[i], listings[keys[i]]
            if isinstance(got, BaseException):
                if not isinstance(got, KeyferryError):
                    raise got
                out[i] = got
                continue
            listed, age = got
            if age is not None:
                stale[i] = age
            what = f"{ref.service_title} {ref.target.describe(ref.service)}"
            if ref.index >= len(listed):
                out[i] = Absent(history.describe_slot(ref.index, len(listed), what))
                continue
            target = AwsTarget(ref.target.name, version_id=listed[ref.index])
            out[i] = replace(ref, target=target, history=0, index=0)
        return out

    async def _listing(
        self, identity: Identity, ref: AwsRef, region: str, deadline: Deadline
    ) -> tuple[tuple[str, ...], float | None]:
        key = (identity.principal, ref.service, region, ref.target.name)
        return await self._lists.get(key, lambda: self._list(identity, ref, region, deadline))

    async def _list(
        self, identity: Identity, ref: AwsRef, region: str, deadline: Deadline
    ) -> tuple[str, ...]:
        operation = _OPERATION[ref.service]
        what = f"{ref.service_title} {ref.target.describe(ref.service)} in {region} ({operation})"
        client = await self.api.client(identity, ref.service, region)
        pages: list[dict[str, Any]] = []
        token = ""
        try:
            while True:
                kwargs: dict[str, Any] = {"MaxResults": 100 if ref.service != "ssm" else 50}
                if ref.service == "ssm":
                    kwargs.update(Name=ref.target.name, WithDecryption=False)
                    fn = client.get_parameter_history
                else:
                    kwargs.update(SecretId=ref.target.name, IncludeDeprecated=True)
                    fn = client.list_secret_version_ids
                if token:
                    kwargs["NextToken"] = token
                page = await self.api.raw(operation, fn, deadline, **kwargs)
                pages.append(page)
                token = page.get("NextToken") or ""
                if not token:
                    break
        except Exception as exc:
            failure = classify(exc, what)
            if failure.code in DENIED_CODES:
                failure = classify(exc, what, identity.principal.needs(_PERMISSION[ref.service]))
            raise failure.error from None
        if ref.service == "ssm":
            numbers = [int(p["Version"]) for page in pages for p in page.get("Parameters", [])]
            return tuple(str(n) for n in sorted(numbers, reverse=True))
        return _secret_order([v for page in pages for v in page.get("Versions", [])])


def _secret_order(versions: list[dict[str, Any]]) -> tuple[str, ...]:
    """AWSCURRENT first, then the others newest first, without pending-only ones."""
    current = [v for v in versions if DEFAULT_STAGE in (v.get("VersionStages") or [])]
    rest = [
        v
        for v in versions
        if v not in current and (v.get("VersionStages") or []) != [PENDING_STAGE]
    ]
    rest.sort(key=_created, reverse=True)
    return tuple(str(v["VersionId"]) for v in [*current, *rest])


def _created(version: dict[str, Any]) -> float:
    created = version.get("CreatedDate")
    return created.timestamp() if isinstance(created, datetime) else 0.0
