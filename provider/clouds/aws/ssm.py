"""SSM Parameter Store reads: ``GetParameters``, 10 selectors a call, decrypted.

A selector is ``name``, ``name:version`` or ``name:label``. Results may lack the
selector they answer, so one call never holds two selectors of one parameter; a
parameter read at several versions is spread over calls first, then the rest is
packed first-fit: the fewest calls.
"""

from __future__ import annotations

import asyncio

from ...errors import Internal
from ...model import Fetched
from .api import Api, Job, Reading
from .errors import Failure, classify, from_code
from .ref import is_arn, parse_arn

SSM_BATCH = 10
_DENIED = ("AccessDeniedException", "AccessDenied")


class ParameterStore:
    title = "SSM"

    def __init__(self, api: Api) -> None:
        self.api = api

    async def read(self, reading: Reading, jobs: list[Job]) -> None:
        # One request string per selector; never two selectors of one name in a call,
        # so results (which may lack 'Selector') map back unambiguously.
        by_selector: dict[str, list[Job]] = {}
        for job in jobs:
            by_selector.setdefault(job.target.ssm_selector(), []).append(job)
        # Names with several selectors first, each selector in a different call; then
        # first-fit: the fewest calls when one parameter is read at several versions.
        by_name: dict[str, list[str]] = {}
        for selector, group in by_selector.items():
            by_name.setdefault(_key(group[0].target.name), []).append(selector)
        batches: list[dict[str, str]] = []  # normalized name -> selector
        for name, selectors in sorted(by_name.items(), key=lambda kv: -len(kv[1])):
            for selector in selectors:
                for batch in batches:
                    if len(batch) < SSM_BATCH and name not in batch:
                        batch[name] = selector
                        break
                else:
                    batches.append({name: selector})
        await asyncio.gather(*(self._batch(reading, b, by_selector) for b in batches))

    async def _batch(
        self, reading: Reading, batch: dict[str, str], by_selector: dict[str, list[Job]]
    ) -> None:
        region, outcome = reading.region, reading.outcome
        selectors = list(batch.values())
        try:
            page = await self.api.raw(
                "GetParameters",
                reading.client.get_parameters,
                reading.deadline,
                Names=selectors,
                WithDecryption=True,
            )
        except Exception as exc:
            needs = "ssm:GetParameters (and kms:Decrypt for SecureString)"
            for selector in selectors:
                for job in by_selector[selector]:  # each message names its own parameter
                    what = f"SSM {job.target.describe('ssm')} in {region} (GetParameters)"
                    failure = classify(exc, what)
                    if not failure.transient and failure.code in _DENIED:
                        failure = classify(exc, what, reading.identity.principal.needs(needs))
                    outcome.failures[job.index] = failure
            return
        for param in page.get("Parameters", []) or []:
            found = batch.get(_key(str(param.get("Name", ""))))
            if found is None and param.get("ARN"):
                found = batch.get(_key(str(param["ARN"])))
            if found is None:
                continue
            selector = found
            fetched = Fetched(
                content=str(param.get("Value", "")).encode("utf-8"),
                version=str(param.get("Version", "")),
                content_type=str(param.get("Type", "")),
                served_by=region,
            )
            for job in by_selector[selector]:
                outcome.results[job.index] = fetched
        invalid = set(page.get("InvalidParameters", []) or [])
        for selector in selectors:
            for job in by_selector[selector]:
                if job.index in outcome.results:
                    continue
                what = f"SSM {job.target.describe('ssm')} in {region}"
                if selector in invalid:
                    outcome.failures[job.index] = from_code(
                        "ParameterNotFound",
                        0,
                        "",
                        what,
                        "check the name, the version or label, and the region",
                    )
                else:
                    outcome.failures[job.index] = Failure(
                        Internal(f"{what}: GetParameters returned no result for it"), False
                    )


def _key(name: str) -> str:
    """A parameter name or ARN reduced to the bare name, for matching results."""
    if is_arn(name):
        arn = parse_arn(name)
        if arn is not None and arn.resource.startswith("parameter"):
            name = arn.resource[len("parameter") :]
    return name.lstrip("/")
