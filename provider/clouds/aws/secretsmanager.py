"""Secrets Manager reads: BatchGetSecretValue where it helps, GetSecretValue otherwise.

AWSCURRENT secrets of one identity and region are read with ``BatchGetSecretValue``
(20 names a call, following pages) when there are at least two names; a secret
pinned to a VersionId or another VersionStage is read with ``GetSecretValue``, and
so is every secret the batch did not answer for. An identity that may not call
``BatchGetSecretValue`` is remembered for ``batch_denied_seconds`` per region, so
its next mounts go straight to ``GetSecretValue``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ...backend import Services
from ...cache import TTLCache
from ...errors import Code
from ...model import Fetched
from ...observe import get_logger
from .api import NAME, Api, Job, Reading
from .credentials import Identity
from .errors import classify, from_code
from .ref import DEFAULT_STAGE, is_arn
from .settings import AwsSettings

SM_BATCH = 20
_GAVE_UP = (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)
"""A batch that failed this way is not read again one by one: the retries are spent."""
_log = get_logger("aws")


class SecretsManager:
    title = "Secrets Manager"

    def __init__(self, settings: AwsSettings, services: Services, api: Api) -> None:
        self.settings = settings
        self.metrics = services.metrics
        self.api = api
        self._batch_denied: TTLCache[bool] = TTLCache(settings.batch_denied_seconds)

    async def read(self, reading: Reading, jobs: list[Job]) -> None:
        identity, region = reading.identity, reading.region
        batchable = [
            j
            for j in jobs
            if not j.target.version_id and j.target.version_label in ("", DEFAULT_STAGE)
        ]
        singles = [j for j in jobs if j not in batchable]
        use_batch = (
            self.settings.batch_get_secret_value
            and len({j.target.name for j in batchable}) > 1
            and self._batch_denied.get((identity.principal, region)) is None
        )
        if not use_batch:
            singles = jobs
            batchable = []
        by_name: dict[str, list[Job]] = {}
        for job in batchable:
            by_name.setdefault(job.target.name, []).append(job)
        names = list(by_name)
        fallback: list[Job] = []
        if names:
            chunks = [names[k : k + SM_BATCH] for k in range(0, len(names), SM_BATCH)]
            chunk_results = await asyncio.gather(
                *(self._batch(reading, chunk, by_name) for chunk in chunks)
            )
            for leftover in chunk_results:
                fallback.extend(leftover)
        await asyncio.gather(*(self._single(reading, job) for job in [*singles, *fallback]))

    async def _batch(
        self, reading: Reading, names: list[str], by_name: dict[str, list[Job]]
    ) -> list[Job]:
        """One BatchGetSecretValue (with pages); returns the jobs to read one by one."""
        identity, region, outcome = reading.identity, reading.region, reading.outcome
        jobs = [j for n in names for j in by_name[n]]
        values: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        token = ""
        try:
            while True:
                kwargs: dict[str, Any] = {"SecretIdList": names}
                if token:
                    kwargs["NextToken"] = token
                page = await self.api.raw(
                    "BatchGetSecretValue",
                    reading.client.batch_get_secret_value,
                    reading.deadline,
                    **kwargs,
                )
                values.extend(page.get("SecretValues", []) or [])
                errors.extend(page.get("Errors", []) or [])
                token = page.get("NextToken") or ""
                if not token:
                    break
        except Exception as exc:
            failure = classify(exc, f"Secrets Manager BatchGetSecretValue in {region}")
            if failure.transient or failure.error.code in _GAVE_UP:
                for job in jobs:  # each message names its own secret
                    what = f"Secrets Manager {job.target.describe('secretsmanager')} in {region}"
                    outcome.failures[job.index] = classify(exc, f"{what} (BatchGetSecretValue)")
                return []
            if failure.code in ("AccessDeniedException", "AccessDenied"):
                self._batch_denied.put((identity.principal, region), True)
                self.metrics.backend_requests.labels(NAME, "BatchGetSecretValue", "denied").inc()
                _log.info(
                    "BatchGetSecretValue denied; reading secrets one by one",
                    extra={"region": region, "principal": identity.principal.describe()},
                )
            return jobs
        found: dict[str, dict[str, Any]] = {}
        for entry in values:
            for key in ("Name", "ARN"):
                if entry.get(key):
                    found[str(entry[key])] = entry
        failed = {str(e.get("SecretId", "")): e for e in errors}
        leftover: list[Job] = []
        for name in names:
            value: dict[str, Any] | None = found.get(name)
            if value is None and is_arn(name):
                value = next((v for a, v in found.items() if a.startswith(name + "-")), None)
            for job in by_name[name]:
                if value is not None:
                    outcome.results[job.index] = _fetched(value, region)
                elif name in failed:
                    err = failed[name]
                    code = str(err.get("ErrorCode", ""))
                    outcome.failures[job.index] = from_code(
                        code,
                        0,
                        str(err.get("Message", "")),
                        f"Secrets Manager {job.target.describe('secretsmanager')} in {region}",
                        _hint(identity, code),
                    )
                else:
                    leftover.append(job)
        return leftover

    async def _single(self, reading: Reading, job: Job) -> None:
        region = reading.region
        kwargs: dict[str, Any] = {"SecretId": job.target.name}
        if job.target.version_id:
            kwargs["VersionId"] = job.target.version_id
        if job.target.version_label:
            kwargs["VersionStage"] = job.target.version_label
        what = f"Secrets Manager {job.target.describe('secretsmanager')} in {region}"
        try:
            value = await self.api.raw(
                "GetSecretValue", reading.client.get_secret_value, reading.deadline, **kwargs
            )
        except Exception as exc:
            failure = classify(exc, what)
            if not failure.transient and failure.code:
                failure = classify(exc, what, _hint(reading.identity, failure.code))
            reading.outcome.failures[job.index] = failure
            return
        reading.outcome.results[job.index] = _fetched(value, region)


def _hint(identity: Identity, code: str) -> str:
    if code == "DecryptionFailure" or "KMS" in code:
        return identity.principal.needs("kms:Decrypt for the secret's KMS key")
    if code in ("AccessDeniedException", "AccessDenied"):
        return identity.principal.needs("secretsmanager:GetSecretValue")
    return ""


def _fetched(value: Mapping[str, Any], region: str) -> Fetched:
    if value.get("SecretString") is not None:
        content = str(value["SecretString"]).encode("utf-8")
        kind = "text"
    else:
        content = bytes(value.get("SecretBinary") or b"")
        kind = "binary"
    return Fetched(
        content=content,
        version=str(value.get("VersionId", "")),
        content_type=kind,
        served_by=region,
    )
