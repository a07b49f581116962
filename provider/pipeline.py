"""Plan -> fetch -> render -> files, all or nothing.

Objects are grouped by backend and fetched concurrently; identical refs in one
mount are fetched once. Every output path is validated before any fetch and
again after rendering. On success the result holds every file and at least one
ObjectVersion; on failure one error lists every failing object.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Hashable, Sequence
from pathlib import Path

from . import files, registry, render, templates
from .backend import Registry, digest_part
from .errors import (
    Absent,
    Code,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    KeyferryError,
    MountFailed,
    NotFound,
    ObjectError,
)
from .model import (
    Deadline,
    Fetched,
    Mount,
    ObjectSpec,
    ObjectVersion,
    OutputFile,
    Plan,
    Result,
)
from .observe import Metrics, get_logger
from .plans import PlanCache

log = get_logger("pipeline")


def load_hmac_key(path: Path | None) -> bytes:
    """The key for content-derived versions: from a file, or random per process."""
    if path is None:
        return secrets.token_bytes(32)
    data = path.read_bytes().strip()
    if len(data) < 16:
        raise ValueError(f"hmac_key_file {path} must hold at least 16 bytes")
    return data


def make_plan(mount: Mount) -> Plan:
    """Parse the parameters with the socket's dialect and check every output path,
    before anything is fetched."""
    plan: Plan = registry.dialect_module(mount.dialect).parse(mount)
    if not plan.objects:
        raise InvalidArgument(
            "the SecretProviderClass selects no objects; the driver would fail the mount "
            "with 'missing object versions'"
        )
    files.check_file_set(
        [
            OutputFile(path=o.path, mode=o.mode or 0, contents=b"", source=spec.label)
            for spec in plan.objects
            for o in spec.outputs
        ]
    )
    return plan


class Pipeline:
    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self.plans = PlanCache(make_plan)
        self._version_prefixes: dict[tuple[str, Hashable], bytes] = {}
        self._plan_hits = metrics.cache_events.labels("plans", "hit")
        self._plan_misses = metrics.cache_events.labels("plans", "miss")

    async def mount(self, mount: Mount, deadline: Deadline) -> Result:
        plan, cached = self.plans.get(mount)
        (self._plan_hits if cached else self._plan_misses).inc()
        fetched = await self._fetch_all(mount, plan, deadline)
        out_files: list[OutputFile] = []
        versions: dict[str, tuple[str, str]] = {}
        errors: list[KeyferryError] = []
        skipped: list[str] = []
        stale: list[tuple[ObjectSpec, float]] = []
        if _cheap_to_render(plan, fetched):
            rendered = _render_all(plan, fetched, mount.default_mode)
        else:
            # One hop off the event loop for all objects: parsing a large document or
            # converting a certificate must not stall other mounts.
            rendered = await asyncio.get_running_loop().run_in_executor(
                None, _render_all, plan, fetched, mount.default_mode
            )
        for spec, result, output in zip(plan.objects, fetched, rendered, strict=True):
            if spec.optional and isinstance(result, Absent):
                continue
            if (
                spec.optional
                and isinstance(result, KeyferryError)
                and result.code is Code.NOT_FOUND
            ):
                skipped.append(spec.label)
                self.metrics.objects_skipped.labels(spec.backend).inc()
                continue
            if isinstance(result, Exception):
                errors.append(_as_object_error(spec, result))
                continue
            if isinstance(output, Exception):
                errors.append(_as_object_error(spec, output))
                continue
            out_files.extend(output or ())
            if result.stale_seconds is not None:
                stale.append((spec, result.stale_seconds))
            version = result.version or self._content_version(spec, result)
            for object_id in spec.ids:
                previous = versions.get(object_id)
                if previous is not None and previous[0] != version:
                    errors.append(
                        InvalidArgument(
                            f"{spec.label}: object id {object_id!r} is also used by "
                            f"{previous[1]} with different content; give them distinct "
                            "names or aliases"
                        )
                    )
                versions[object_id] = (version, spec.label)
        if plan.templates and not errors:  # files rendered from the others (templates.py)
            work = functools.partial(
                templates.render_all,
                plan,
                out_files,
                {i: v for i, (v, _) in versions.items()},
                self.registry.services.keyed_digest_of,
                mount.default_mode,
            )
            try:
                if templates.cheap(plan, out_files):
                    out_files, from_templates = work()
                else:
                    out_files, from_templates = await asyncio.to_thread(work)
                versions.update((v.id, (v.version, v.id)) for v in from_templates)
            except KeyferryError as exc:  # a MountFailed holds one error per template
                errors.extend(exc.errors if isinstance(exc, MountFailed) else [exc])
        if errors:
            total = len(plan.objects) + len(plan.templates)
            raise MountFailed(errors, summary=f"{len(errors)} of {total} objects failed")
        files.check_file_set(out_files)
        if not versions:
            raise NotFound(
                "every object is optional and none was found; the driver needs at least one "
                "object (make one object required or create one of them): " + ", ".join(skipped)
            )
        for spec, age in stale:
            self.metrics.stale_served.labels(spec.backend).inc()
            log.warning(
                "backend unavailable: served the last-known-good value",
                extra={"object": spec.label, "backend": spec.backend, "age_seconds": round(age)},
            )
        return Result(
            files=tuple(out_files),
            versions=tuple(ObjectVersion(i, v) for i, (v, _) in sorted(versions.items())),
            skipped=tuple(skipped),
            stale=tuple((spec.label, age) for spec, age in stale),
        )

    def _content_version(self, spec: ObjectSpec, fetched: Fetched) -> str:
        key = (spec.backend, spec.ref)
        prefix = self._version_prefixes.get(key)
        if prefix is None:  # the (backend, ref) parts of the HMAC, encoded once per ref
            if len(self._version_prefixes) >= 4096:
                self._version_prefixes.clear()
            prefix = digest_part(spec.backend.encode()) + digest_part(repr(spec.ref).encode())
            self._version_prefixes[key] = prefix
        digest = self.registry.services.keyed_digest_of(prefix + digest_part(fetched.content))
        return "hmac-sha256:" + digest[:32]

    async def _fetch_all(
        self, mount: Mount, plan: Plan, deadline: Deadline
    ) -> list[Fetched | Exception]:
        unique: dict[str, dict[Hashable, None]] = {}  # refs per backend, once, in order
        for spec in plan.objects:
            unique.setdefault(spec.backend, {})[spec.ref] = None
        by_backend = {name: list(refs) for name, refs in unique.items()}
        results: dict[tuple[str, Hashable], Fetched | Exception] = {}

        async def run(name: str, refs: Sequence[Hashable]) -> None:
            try:
                backend = await self.registry.get(name)
                got = await backend.fetch(mount, refs, deadline)
                if len(got) != len(refs):
                    raise RuntimeError(
                        f"backend {name} returned {len(got)} results for {len(refs)}"
                    )
            except Exception as exc:  # one failure for every object of this backend
                got = [exc] * len(refs)
            for ref, item in zip(refs, got, strict=True):
                results[(name, ref)] = item

        try:
            # No task per backend when there is one: the timeout cancels this one.
            async with asyncio.timeout(deadline.remaining()):
                if len(by_backend) == 1:
                    await run(*next(iter(by_backend.items())))
                else:
                    await asyncio.gather(*(run(n, r) for n, r in by_backend.items()))
        except TimeoutError:
            slow = sorted(n for n, r in by_backend.items() if any((n, x) not in results for x in r))
            raise DeadlineExceeded(
                f"fetching did not finish within {deadline.seconds:.0f}s "
                f"(still waiting on backend {', '.join(slow)}); the backend is slow or "
                "unreachable from this node"
            ) from None
        return [results[(spec.backend, spec.ref)] for spec in plan.objects]


INLINE_RENDER_BYTES = 64 * 1024
"""Up to this many fetched bytes, JSON extraction and decoding run on the event loop:
tens of microseconds, where a thread hop costs more than the work. JMESPath expressions
are bounded in size and fan-out when parsed (``render.compile_jmespath``)."""


def _cheap_to_render(plan: Plan, fetched: Sequence[Fetched | Exception]) -> bool:
    size = 0
    for result in fetched:
        if isinstance(result, Fetched):
            size += len(result.content)
    if size > INLINE_RENDER_BYTES:
        return False
    for spec in plan.objects:
        for out in spec.outputs:
            # YAML documents are parsed in pure Python and certificates converted with
            # key derivation: both go to a thread whatever their size.
            if out.transform is not None or (out.extract and out.extract.kind == "yaml_key"):
                return False
    return True


def _render_all(
    plan: Plan, fetched: Sequence[Fetched | Exception], default_mode: int
) -> list[list[OutputFile] | Exception | None]:
    out: list[list[OutputFile] | Exception | None] = []
    for spec, result in zip(plan.objects, fetched, strict=True):
        if isinstance(result, Exception):
            out.append(None)
            continue
        try:
            out.append(render.render(spec, result, default_mode))
        except Exception as exc:  # reported per object by the caller
            out.append(exc)
    return out


def _as_object_error(spec: ObjectSpec, exc: Exception) -> KeyferryError:
    if isinstance(exc, ObjectError | MountFailed):
        return exc
    if isinstance(exc, KeyferryError):
        return ObjectError(spec.label, exc)
    log.error(
        "unexpected backend failure",
        extra={"object": spec.label, "backend": spec.backend, "error_type": type(exc).__name__},
    )
    return ObjectError(
        spec.label, Internal(f"unexpected {type(exc).__name__} in backend {spec.backend}")
    )
