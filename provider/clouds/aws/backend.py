"""The ``aws`` backend: Secrets Manager and SSM Parameter Store, read as the pod.

One :meth:`AwsBackend.fetch` per Mount:

1. identity checks that need no network (the token for the right audience);
2. regions: per object, else server configuration / ``AWS_REGION``, else the
   node's ``topology.kubernetes.io/region`` label (Kubernetes API, cached; see
   :mod:`.region`);
3. the pod's credentials (IRSA or EKS Pod Identity, see :mod:`.identity`);
4. values, batched: ``BatchGetSecretValue`` (20 a call) for AWSCURRENT secrets,
   falling back to ``GetSecretValue`` when the identity may not batch
   (:mod:`.secretsmanager`); ``GetParameters`` (10 a call, decrypted) for SSM
   (:mod:`.ssm`); all groups concurrently, every call through :mod:`.api`;
5. failover: objects whose primary region failed with throttling, a 5xx or a
   network error are read again in their failover region. Never after a 4xx.

Values are cached per (principal, ref, region) for the server's
``cache_ttl_seconds`` (``pinned_cache_seconds`` for immutable versions), and
identical concurrent reads (a rollout) share one set of API calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from ...backend import FetchResult, Services
from ...cache import TTLCache
from ...errors import Internal, KeyferryError
from ...lastgood import older
from ...model import Deadline, Fetched, Mount
from ...observe import get_logger
from ...selection import Listing
from . import settings as settings_mod
from .api import NAME, Api, Job, Outcome, Reader, Reading
from .chain import Chains
from .credentials import Identity, IdentityPool
from .errors import classify
from .identity import Identities
from .listing import Lister
from .ref import AddressType, AssumeRole, Auth, AwsRef, AwsSelection, Service
from .region import Regions
from .secretsmanager import SecretsManager
from .settings import AwsSettings
from .ssm import ParameterStore
from .versions import Versions

__all__ = ["AwsBackend", "create"]

_log = get_logger("aws")
Mode = tuple[Auth, AddressType, AssumeRole | None]
"""Refs of one mode are read with one identity: the pod's, or a role it assumes."""


def create(settings: Mapping[str, Any], services: Services) -> AwsBackend:
    """The registry's factory; raises ConfigError on bad ``backends.aws`` settings."""
    return AwsBackend(settings_mod.parse(settings), services)


class AwsBackend:
    name = NAME

    def __init__(self, settings: AwsSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.pool = IdentityPool(settings)
        self.api = Api(settings, services, self.pool)
        self.calls = self.api.calls
        """API calls made, by operation (for tests and the benchmark)."""
        self.identities = Identities(settings, services, self.pool, self.api)
        self.chains = Chains(settings, self.pool, self.api)
        self.versions = Versions(services, self.api)
        self.regions = Regions(settings, services)
        self.readers: dict[Service, Reader] = {
            "secretsmanager": SecretsManager(settings, services, self.api),
            "ssm": ParameterStore(self.api),
        }
        self._inflight: TTLCache[Outcome] = TTLCache(0)  # coalescing only, nothing kept
        self.lister = Lister(services, self.api, self.identities, self.regions, self.chains)

    async def close(self) -> None:
        self.regions.clear()
        self.lister.listings.clear()

    async def select(
        self, mount: Mount, queries: Sequence[AwsSelection], deadline: Deadline, limit: int
    ) -> list[Listing | Exception]:
        """The secrets or parameters each selection matches (:mod:`.listing`)."""
        return await self.lister.select(mount, queries, deadline, limit)

    async def fetch(
        self, mount: Mount, refs: Sequence[AwsRef], deadline: Deadline
    ) -> list[FetchResult]:
        results: list[FetchResult | None] = [None] * len(refs)

        # 1. tokens (no I/O) per identity mode
        modes: dict[Mode, list[int]] = {}
        for i, ref in enumerate(refs):
            modes.setdefault((ref.auth, ref.address_type, ref.assume), []).append(i)
        token_errors: dict[Mode, KeyferryError] = {}
        for mode in modes:
            err = self.identities.check_token(mount, mode[0])
            if err is None and mode[2] is not None:
                err = self.chains.check(mode[2])  # the server allows the role chain?
            if err is not None:
                token_errors[mode] = err

        # 2. regions and region checks (may read the node label)
        primary: dict[int, str] = {}
        for i, region in enumerate(await self.regions.primary(mount, refs, deadline)):
            if isinstance(region, str):
                primary[i] = region
            else:
                results[i] = region

        # 3. identities, then 4./5. values per identity mode
        tasks = []
        task_indices: list[list[int]] = []
        for mode, indices in modes.items():
            todo = [i for i in indices if results[i] is None]
            if not todo:
                continue
            if mode in token_errors:
                for i in todo:
                    results[i] = token_errors[mode]
                continue
            tasks.append(self._fetch_mode(mount, mode, todo, refs, primary, deadline))
            task_indices.append(todo)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for todo, out in zip(task_indices, outcomes, strict=True):
            if isinstance(out, BaseException):
                if not isinstance(out, Exception):
                    raise out
                for i in todo:  # e.g. the identity failed: every object of it fails
                    results[i] = out
                continue
            for i, value in out.items():
                results[i] = value
        return [r if r is not None else Internal("no result from the aws backend") for r in results]

    async def _fetch_mode(
        self,
        mount: Mount,
        mode: Mode,
        indices: list[int],
        refs: Sequence[AwsRef],
        primary: dict[int, str],
        deadline: Deadline,
    ) -> dict[int, FetchResult]:
        auth, address_type, assume = mode
        identity = await self.identities.resolve(
            mount, auth, address_type, primary[indices[0]], deadline
        )
        if assume is not None:
            identity = await self.chains.resolve(
                mount, identity, assume, primary[indices[0]], deadline
            )
        principal = identity.principal
        out: dict[int, FetchResult] = {}
        refs = list(refs)  # history slots become the version they are pinned to
        pinned_stale: dict[int, float] = {}  # slots pinned from a last-known-good listing
        for i, pinned in (
            await self.versions.pin(identity, refs, indices, primary, deadline, pinned_stale)
        ).items():
            if isinstance(pinned, AwsRef):
                refs[i] = pinned
            else:
                out[i] = pinned
        indices = [i for i in indices if i not in out]
        jobs: list[Job] = []
        for i in indices:
            key = (NAME, principal, refs[i], primary[i])
            cached = self.services.values.get(key)
            if cached is not None:
                self.services.metrics.cache_events.labels("aws-values", "hit").inc()
                out[i] = cached
            else:
                jobs.append(Job(i, refs[i], refs[i].target, primary[i]))
        if not jobs:  # every value cached: nothing to read, share or fail over
            return _marked(out, pinned_stale)
        # Identical concurrent mounts (a rollout: many pods of one service account, one
        # class) share one set of API calls instead of each missing the cache.
        batch_key = (principal, tuple((j.index, j.ref, j.region) for j in jobs))
        shared = await self._inflight.get_or_load(
            batch_key, lambda: self._run_jobs(identity, jobs, deadline)
        )
        outcome = Outcome(dict(shared.results), dict(shared.failures))  # ours to amend
        await self._failover(identity, jobs, outcome, out, deadline)
        for job in jobs:
            fetched = outcome.results.get(job.index)
            if fetched is None:
                key = (NAME, principal, job.ref, job.region)
                stale = self.services.last_known_good(key, out.get(job.index))
                if stale is not None:
                    out[job.index] = stale
                continue
            out[job.index] = fetched
            ttl = (
                self.settings.pinned_cache_seconds
                if job.ref.target.pinned
                else self.services.config.cache_ttl_seconds
            )
            self.services.values.put((NAME, principal, job.ref, job.region), fetched, ttl=ttl)
        return _marked(out, pinned_stale)

    async def _failover(
        self,
        identity: Identity,
        jobs: list[Job],
        outcome: Outcome,
        out: dict[int, FetchResult],
        deadline: Deadline,
    ) -> None:
        """Read the jobs that failed transiently again in their failover region: a success
        goes to ``outcome``, every final failure to ``out``."""
        retry: list[Job] = []
        primary: dict[int, str] = {}
        for job in jobs:
            failure = outcome.failures.get(job.index)
            if failure is None:
                continue
            if failure.transient and job.ref.failover_region:
                retry.append(
                    Job(job.index, job.ref, job.ref.failover_target, job.ref.failover_region)
                )
                primary[job.index] = job.region
                _log.warning(
                    "aws primary region failed, trying the failover region",
                    extra={
                        "region": job.region,
                        "failover_region": job.ref.failover_region,
                        "aws_error": failure.code,
                    },
                )
            else:
                out[job.index] = failure.error
        if not retry:
            return
        second = await self._run_jobs(identity, retry, deadline)
        requests = self.services.metrics.backend_requests
        for job in retry:
            if job.index in second.results:
                requests.labels(NAME, "failover", "ok").inc()
                outcome.results[job.index] = second.results[job.index]
            else:
                requests.labels(NAME, "failover", "error").inc()
                before = outcome.failures[job.index]
                after = second.failures[job.index]
                message = (
                    f"primary region {job.ref.region or primary[job.index]}: "
                    f"{before.error.message}; failover region {job.region}: {after.error.message}"
                )
                out[job.index] = type(after.error)(message, code=after.error.code)

    async def _run_jobs(self, identity: Identity, jobs: list[Job], deadline: Deadline) -> Outcome:
        """Every (service, region) group of ``jobs`` read concurrently by its reader."""
        groups: dict[tuple[Service, str], list[Job]] = {}
        for job in jobs:
            groups.setdefault((job.ref.service, job.region), []).append(job)
        outcome = Outcome()
        runs: list[Awaitable[None]] = []
        for (service, region), group in groups.items():
            runs.append(self._read(identity, service, region, group, deadline, outcome))
        await asyncio.gather(*runs)
        return outcome

    async def _read(
        self,
        identity: Identity,
        service: Service,
        region: str,
        jobs: list[Job],
        deadline: Deadline,
        outcome: Outcome,
    ) -> None:
        reader = self.readers[service]
        try:
            client = await self.api.client(identity, service, region)
        except Exception as exc:  # client creation is local; a failure is a config problem
            outcome.fail(jobs, classify(exc, f"{reader.title} client for {region}"))
            return
        await reader.read(Reading(identity, client, region, deadline, outcome), jobs)


def _marked(out: dict[int, FetchResult], stale: Mapping[int, float]) -> dict[int, FetchResult]:
    """``out`` with each value whose history slot was pinned from a last-known-good
    listing marked stale (with the older of the two ages)."""
    for i, age in stale.items():
        fetched = out.get(i)
        if isinstance(fetched, Fetched):
            out[i] = dataclasses.replace(fetched, stale_seconds=older(age, fetched.stale_seconds))
    return out
