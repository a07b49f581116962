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
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import files, registry, render, selection
from .backend import Backend, Registry, digest_part
from .errors import (
    Absent,
    Code,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    KeyferryError,
    MountFailed,
    NotFound,
    ObjectError,
    ResourceExhausted,
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
    if not plan.objects and plan.templates:
        raise InvalidArgument(
            "the SecretProviderClass has template objects only; a template renders the "
            "outputs of the class's other objects: add the objects it reads (with write: "
            "false to keep them out of the volume)"
        )
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
            for object_id, version in self._versions(spec, result):
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
            from . import templates  # Jinja2 is loaded by the first class that has one

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
                errors.extend(templates.id_clashes(plan, from_templates, versions))
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

    def _versions(self, spec: ObjectSpec, fetched: Fetched) -> list[tuple[str, str]]:
        """(ObjectVersion id, version) pairs of one fetched object."""
        if not isinstance(fetched, selection.Selected):
            version = fetched.version or self._content_version(spec.backend, spec.ref, fetched)
            return [(object_id, version) for object_id in spec.ids]
        members = [
            (m.name, f.version or self._content_version(spec.backend, m.ref, f))
            for m, f in fetched.members
        ]
        whole = selection.version(self.registry.services, members)
        return [
            pair
            for object_id in spec.ids
            for pair in [(object_id, whole), *((f"{object_id}/{n}", v) for n, v in members)]
        ]

    def _content_version(self, backend: str, ref: Hashable, fetched: Fetched) -> str:
        key = (backend, ref)
        prefix = self._version_prefixes.get(key)
        if prefix is None:  # the (backend, ref) parts of the HMAC, encoded once per ref
            if len(self._version_prefixes) >= 4096:
                self._version_prefixes.clear()
            prefix = digest_part(backend.encode()) + digest_part(repr(ref).encode())
            self._version_prefixes[key] = prefix
        digest = self.registry.services.keyed_digest_of(prefix + digest_part(fetched.content))
        return "hmac-sha256:" + digest[:32]

    async def _fetch_all(
        self, mount: Mount, plan: Plan, deadline: Deadline
    ) -> list[Fetched | Exception]:
        listings: dict[int, selection.Listing | Exception] = {}
        if any(spec.selection for spec in plan.objects):  # list first, then fetch members
            listings = await self._list_all(mount, plan, deadline)
        unique: dict[str, dict[Hashable, None]] = {}  # refs per backend, once, in order
        for i, spec in enumerate(plan.objects):
            if spec.selection is None:
                unique.setdefault(spec.backend, {})[spec.ref] = None
                continue
            listing = listings[i]
            if not isinstance(listing, Exception):
                for member in listing:
                    unique.setdefault(spec.backend, {})[member.ref] = None
        results: dict[tuple[str, Hashable], Fetched | Exception] = await self._per_backend(
            deadline, unique, lambda backend, refs: backend.fetch(mount, refs, deadline)
        )
        out: list[Fetched | Exception] = []
        for i, spec in enumerate(plan.objects):
            if spec.selection is None:
                out.append(results[(spec.backend, spec.ref)])
                continue
            listing = listings[i]
            if isinstance(listing, Exception):
                out.append(listing)
                continue
            mine = {m.ref: results[(spec.backend, m.ref)] for m in listing}
            out.append(selection.collect(listing, mine))
        return out

    async def _list_all(
        self, mount: Mount, plan: Plan, deadline: Deadline
    ) -> dict[int, selection.Listing | Exception]:
        """Every selection of the plan listed (one ``select`` per backend, concurrently)
        and checked against its object's cap and directory."""
        limit = self.registry.services.config.max_selected_objects
        queries: dict[str, dict[Hashable, None]] = {}
        for spec in plan.objects:
            if spec.selection is not None:
                queries.setdefault(spec.backend, {})[spec.ref] = None

        def select(backend: Backend[Any], refs: list[Hashable]) -> Awaitable[list[Any]]:
            select = getattr(backend, "select", None)
            if select is None:
                raise FailedPrecondition(f"backend {backend.name} cannot select many objects")
            listed: Awaitable[list[Any]] = select(mount, refs, deadline, limit)
            return listed

        found: dict[tuple[str, Hashable], selection.Listing | Exception] = await self._per_backend(
            deadline, queries, select
        )
        out: dict[int, selection.Listing | Exception] = {}
        for i, spec in enumerate(plan.objects):
            if spec.selection is None:
                continue
            listing = found[(spec.backend, spec.ref)]
            if not isinstance(listing, Exception):
                try:
                    listing = selection.check_listing(spec, listing, limit)
                except KeyferryError as exc:
                    listing = exc
            out[i] = listing
        total = sum(len(listing) for listing in out.values() if not isinstance(listing, Exception))
        if total > limit and len(out) > 1:  # the cap bounds what one Mount reads and holds
            over = ResourceExhausted(
                f"the selections of this class match {total} objects together, over the "
                f"server's max_selected_objects ({limit}), which bounds one Mount; narrow the "
                "selections or raise max_selected_objects (nothing was mounted)"
            )
            out = {i: over if not isinstance(v, Exception) else v for i, v in out.items()}
        return out

    async def _per_backend(
        self,
        deadline: Deadline,
        by_backend: Mapping[str, Mapping[Hashable, None]],
        call: Callable[[Backend[Any], list[Hashable]], Awaitable[list[Any]]],
    ) -> dict[tuple[str, Hashable], Any]:
        """``call(backend, refs)`` for every backend concurrently within the Mount's
        deadline: one result per (backend, ref); a failure of the whole call becomes every
        ref's result. Past the deadline, DEADLINE_EXCEEDED naming the slow backends."""
        results: dict[tuple[str, Hashable], Any] = {}

        async def run(name: str, refs: list[Hashable]) -> None:
            try:
                backend = await self.registry.get(name)
                got = await call(backend, refs)
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
                    name, refs = next(iter(by_backend.items()))
                    await run(name, list(refs))
                else:
                    await asyncio.gather(*(run(n, list(r)) for n, r in by_backend.items()))
        except TimeoutError:
            slow = sorted(n for n, r in by_backend.items() if any((n, x) not in results for x in r))
            raise DeadlineExceeded(
                f"fetching did not finish within {deadline.seconds:.0f}s "
                f"(still waiting on backend {', '.join(slow)}); the backend is slow or "
                "unreachable from this node"
            ) from None
        return results


INLINE_RENDER_BYTES = 64 * 1024
"""Up to this many fetched bytes, JSON extraction and decoding run on the event loop:
tens of microseconds, where a thread hop costs more than the work. JMESPath expressions
are bounded in size and fan-out when parsed (``render.compile_jmespath``)."""


def _cheap_to_render(plan: Plan, fetched: Sequence[Fetched | Exception]) -> bool:
    size = 0
    for result in fetched:
        if isinstance(result, Fetched):
            size += selection.size(result)
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
            if isinstance(result, selection.Selected):
                out.append(selection.render(spec, result, default_mode, render.decode))
                continue
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
