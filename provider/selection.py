"""Selecting many objects with one native object: ``select:`` instead of ``name:``.

```yaml
- backend: aws
  service: secretsmanager
  select: {namePrefix: app/prod/}   # backend-specific keys (each backend's SELECT_KEYS)
  path: app                         # the directory the members are written under
  maxMatches: "20"                  # optional; may only lower max_selected_objects
  mode: "0600"                      # optional; applies to every member
  decode: base64                    # optional; applies to every member
  optional: true                    # optional; an empty selection is skipped, not NOT_FOUND
  id: app                           # optional; default: the path
```

The contract, for a backend that supports selections
------------------------------------------------------

**Dialect hook** (``provider.clouds.<backend>.dialect``), pure like ``native_ref``:

- ``SELECT_KEYS: tuple[str, ...]`` — the keys allowed inside ``select`` (checked by
  :func:`native_object` with did-you-mean before the hook is called).
- ``native_select(select, fields, where, mount) -> (query, default_directory)``:
  ``select`` is the checked ``select`` mapping, ``fields`` the object's other keys of the
  backend's ``NATIVE_KEYS`` (``name`` never: ``name`` with ``select`` is rejected here),
  e.g. ``region``/``auth``. ``query`` is a frozen, hashable value that the backend's
  ``select`` understands; ``default_directory`` the output directory when the object has
  no ``path`` (``""``: ``path`` is required). Reject keys that do not apply to a
  selection (a version pin) with InvalidArgument naming them.

**Backend** (``provider.clouds.<backend>.backend``), besides ``fetch``:

- ``async select(mount, queries, deadline, limit) -> list[Listing | Exception]`` — one
  result per query, in order. A :data:`Listing` is a tuple of :class:`Member`
  ``(name, ref)``: ``name`` is the member's name relative to the selection (it becomes
  ``<directory>/<name>``), ``ref`` a plain ref of the backend's own ``fetch``, so member
  values are fetched (batched, cached per principal) together with the class's plain
  objects. Order does not matter (the pipeline sorts by name). Names are returned as the
  store has them: the pipeline checks each with the one path validator and fails the
  object naming a name that cannot be a safe path; nothing is dropped silently.
- ``limit`` is the server's ``max_selected_objects``: past it, stop listing (no further
  page) and fail that query with :func:`too_many` (never a truncated listing); the
  pipeline applies an object's lower ``maxMatches`` itself. No match: return an empty
  listing (the pipeline answers NOT_FOUND naming the object, or skips it when
  ``optional``). Raise only for failures common to every query, like ``fetch``.
- Cache listings per principal with :class:`Listings`: ``await listings.get(key, load)``
  with ``key`` naming the principal, the query and whatever else decides the answer
  (region, ``limit``); TTL ``cache_ttl_seconds``, concurrent identical listings share one
  ``load()``, counted in ``keyferry_cache_events_total{cache="<backend>-listings",
  result="hit"|"miss"|"coalesced"}``; with ``stale_if_error_seconds`` a listing that fails
  with UNAVAILABLE or DEADLINE_EXCEEDED is served from the last one of the same key, as a
  :class:`StaleListing` that makes the selection stale (:mod:`provider.lastgood`), so
  raise outages as UNAVAILABLE or DEADLINE_EXCEEDED, never a bare exception. Make each list
  call through the backend's call gate so that it is counted in
  ``keyferry_backend_requests_total`` under the cloud API's operation name
  (``ListSecrets``, ``GetParametersByPath``) and guarded by the endpoint's breaker. A
  listing the identity may not make fails with PERMISSION_DENIED naming the permission to
  grant. A list API that returns values too (SSM's) may put them into
  ``Services.values`` under the key the backend's ``fetch`` looks up, so they are not read
  twice (see :mod:`provider.clouds.aws.listing`).
- A member whose read is NOT_FOUND (deleted after a cached listing) is reported as
  UNAVAILABLE naming it (:func:`collect`): NOT_FOUND would skip an ``optional`` selection
  and empty its directory at rotation.

**Pipeline** (:mod:`provider.pipeline`): lists every selection of a Mount first (per
backend, concurrently), then fetches plain objects and members in one ``fetch`` per
backend. Each member becomes ``<directory>/<name>`` with the object's ``mode`` and
``decode``; ``extract`` does not apply to a selection and is rejected. ObjectVersions:
``<id>/<name>`` per member (the member's version) and ``<id>`` for the selection, a keyed
HMAC over the sorted member names and versions, so the set changes when a member is
added or removed and the driver's rotation picks it up. The directory belongs to the
selection: no other object may write into it.

Caps: the server's ``max_selected_objects`` (default 100, at most
:data:`MAX_SELECTED_OBJECTS`), lowered per object by ``maxMatches``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import config, registry
from .backend import Services
from .dialect import check_keys, get_str, parse_bool, parse_mode
from .errors import (
    Code,
    Internal,
    InvalidArgument,
    KeyferryError,
    MountFailed,
    NotFound,
    ObjectError,
    ResourceExhausted,
    Unavailable,
    clip,
)
from .files import check_path, path_problem
from .lastgood import KnownGood, older
from .model import (
    Deadline,
    Decoding,
    Fetched,
    Mount,
    ObjectSpec,
    Output,
    OutputFile,
    Selection,
)

MAX_SELECTED_OBJECTS = config.MAX_SELECTED_OBJECTS
"""The hard bound on ``max_selected_objects``: a Mount's objects are all written into one
response, and every member is one more value fetched on every rotation."""
SELECT_EXAMPLE = "select: {namePrefix: app/prod/} with path: app"


@dataclass(frozen=True)
class Member:
    """One object a selection matched: its name relative to the selection and the plain
    ref that reads it."""

    name: str
    ref: Hashable


Listing = tuple[Member, ...]


class Selector(Protocol):
    """The part of a backend that lists selections (see the module docstring)."""

    async def select(
        self, mount: Mount, queries: Sequence[Any], deadline: Deadline, limit: int
    ) -> list[Listing | Exception]: ...


@dataclass(frozen=True)
class Selected(Fetched):
    """A selection's fetch result: every member with its value, sorted by name."""

    members: tuple[tuple[Member, Fetched], ...] = field(default=(), repr=False)


def too_many(what: str, limit: int) -> ResourceExhausted:
    """The error for a listing that found more than ``limit`` matches."""
    return ResourceExhausted(
        f"{what}: more than {limit} objects match (the server's max_selected_objects); "
        "narrow the selection (a longer prefix, a tag) or raise max_selected_objects in the "
        f"keyferry server configuration (at most {MAX_SELECTED_OBJECTS}). Nothing was "
        "mounted: a truncated selection would drop files silently"
    )


class StaleListing(tuple[Member, ...]):
    """A listing served from the last-known-good window (``stale_if_error_seconds``)
    while the backend is unavailable: its age in seconds."""

    stale_seconds: float

    def __new__(cls, members: Iterable[Member], stale_seconds: float) -> StaleListing:
        listing = super().__new__(cls, members)
        listing.stale_seconds = stale_seconds
        return listing


def listing_age(listing: Listing) -> float | None:
    """How old a listing served from the last-known-good window is (``None``: fresh)."""
    return listing.stale_seconds if isinstance(listing, StaleListing) else None


class Listings:
    """Listings cached per principal (the caller's key names it) for ``cache_ttl_seconds``,
    concurrent identical listings sharing one load; hits, misses and coalesced loads in
    ``keyferry_cache_events_total{cache="<backend>-listings"}``. With
    ``stale_if_error_seconds`` a listing that fails with an outage is served from the
    last one of the same key (:mod:`provider.lastgood`), as a :class:`StaleListing`."""

    def __init__(self, backend: str, services: Services) -> None:
        self._cache: KnownGood[Listing] = KnownGood(
            services, cache=f"{backend}-listings", backend=backend, listing="selection"
        )

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Listing]]) -> Listing:
        listing, age = await self._cache.get(key, load)
        return listing if age is None else StaleListing(listing, age)

    def clear(self) -> None:
        self._cache.clear()


# --------------------------------------------------------------------------- parsing


def native_object(
    where: str,
    backend: str,
    fields: Mapping[str, Any],
    mount: Mount,
    decoding: Callable[[Any, str], Decoding | None],
) -> ObjectSpec:
    """A native object with ``select`` (its keys already checked against the common and
    the backend's keys)."""
    module = registry.import_part(backend, "dialect", where)
    hook = getattr(module, "native_select", None)
    if hook is None:
        raise InvalidArgument(
            f"{where}: backend '{backend}' cannot select many objects yet; name one object "
            "with 'name' instead of 'select'"
        )
    if "name" in fields:
        raise InvalidArgument(
            f"{where}: give either 'name' (one object) or 'select' (many objects), not both"
        )
    if "extract" in fields:
        raise InvalidArgument(
            f"{where}: 'extract' does not apply to 'select' (each selected object becomes a "
            "file of its own); mount the object by 'name' to extract keys from it"
        )
    raw = fields["select"]
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidArgument(
            f"{where}: 'select' must be a mapping of {', '.join(module.SELECT_KEYS)}, e.g. "
            + SELECT_EXAMPLE
        )
    select = check_keys(raw, module.SELECT_KEYS, f"{where} select")
    own = {k: v for k, v in fields.items() if k in module.NATIVE_KEYS and k != "name"}
    query, default_dir = hook(select, own, where, mount)
    path = get_str(fields, "path", where) or default_dir
    label = f"{where} ({backend}: select {default_dir or path})"
    if not path:
        raise InvalidArgument(
            f"{where}: 'path' is required with this 'select' (the directory the selected "
            "objects are written under)"
        )
    check_path(path, f"{label} path")
    mode = parse_mode(fields["mode"], f"{label} mode") if "mode" in fields else None
    decode = decoding(fields.get("decode"), label)
    optional = parse_bool(fields.get("optional", False), f"{label} optional")
    object_id = get_str(fields, "id", label) or path
    return ObjectSpec(
        label=label,
        backend=backend,
        ref=query,
        outputs=(Output(path=path, mode=mode, decode=decode),),
        ids=(object_id,),
        optional=optional,
        selection=Selection(max_matches=max_matches(fields.get("maxMatches"), label)),
    )


def max_matches(value: Any, where: str) -> int:
    """``maxMatches``: a whole number from 1 to :data:`MAX_SELECTED_OBJECTS`; 0 when unset."""
    if value is None:
        return 0
    text = str(value).strip()
    digits = text.isascii() and text.isdigit()  # isdigit() alone takes "¹", int() does not
    if isinstance(value, bool) or not digits or not 1 <= int(text) <= MAX_SELECTED_OBJECTS:
        raise InvalidArgument(
            f"{where}: maxMatches {clip(text, 40)!r} must be a whole number from 1 to "
            f"{MAX_SELECTED_OBJECTS} (it can only lower the server's max_selected_objects)"
        )
    return int(text)


# --------------------------------------------------------------------------- mounting


def check_listing(spec: ObjectSpec, listing: Listing, limit: int) -> Listing:
    """The listing sorted by name, or an error: empty, over the object's cap, or a
    member name that cannot be a file under the object's directory."""
    assert spec.selection is not None
    directory = spec.outputs[0].path
    if not listing:
        raise NotFound(
            "the selection matches no objects; check the selection keys, the region and "
            "the identity's access, or set optional: true"
        )
    cap = min(limit, spec.selection.max_matches or limit)
    if len(listing) > cap:
        setting = (
            f"maxMatches {cap}" if cap < limit else f"the server's max_selected_objects ({limit})"
        )
        raise ResourceExhausted(
            f"the selection matches {len(listing)} objects, over {setting}; narrow the "
            "selection or raise the limit (nothing was mounted)"
        )
    errors: list[KeyferryError] = []
    seen: set[str] = set()
    for member in listing:
        problem = path_problem(f"{directory}/{member.name}")  # '', '/x', '..' included
        if problem:
            errors.append(
                InvalidArgument(
                    f"selected object {clip(member.name, 120)!r} cannot be written as a file "
                    f"under {directory!r}: {problem.replace('output path', 'name')}; rename "
                    "it in the store or narrow the selection so that it is not selected"
                )
            )
        elif member.name in seen:
            errors.append(InvalidArgument(f"the selection names {clip(member.name, 120)!r} twice"))
        seen.add(member.name)
    if errors:
        raise MountFailed(
            errors, summary=f"{spec.label}: {len(errors)} selected names are not safe paths"
        )
    ordered = sorted(listing, key=lambda m: m.name)
    age = listing_age(listing)
    return tuple(ordered) if age is None else StaleListing(ordered, age)


def collect(
    listing: Listing, results: Mapping[Hashable, Fetched | Exception]
) -> Selected | KeyferryError:
    """The members' fetch results as one :class:`Selected`, or one error naming each
    member that failed."""
    members: list[tuple[Member, Fetched]] = []
    errors: list[KeyferryError] = []
    stale = listing_age(listing)  # a last-known-good listing makes the selection stale
    for member in listing:
        got = results[member.ref]
        if isinstance(got, Exception):
            cause = (
                got
                if isinstance(got, KeyferryError)
                else Internal(f"unexpected {type(got).__name__}")
            )
            if cause.code is Code.NOT_FOUND:
                # Listed, then gone: the listing is older than the object's removal. Not the
                # selection's NOT_FOUND (which skips an optional selection: its files would
                # vanish from the volume), a transient state the next listing resolves.
                cause = Unavailable(
                    f"{cause.message}; it was removed after the selection was listed (listings "
                    "are kept for cache_ttl_seconds), the next listing leaves it out"
                )
            errors.append(ObjectError(f"selected object {clip(member.name, 120)!r}", cause))
            continue
        members.append((member, got))
        stale = older(stale, got.stale_seconds)
    if errors:
        if len(errors) == 1:
            return errors[0]
        return MountFailed(errors, summary=f"{len(errors)} of {len(listing)} selected objects")
    return Selected(content=b"", members=tuple(members), stale_seconds=stale)


def version(services: Services, versions: Sequence[tuple[str, str]]) -> str:
    """The selection's own version: a keyed HMAC over its sorted (name, version) pairs."""
    parts = [b"selection"]
    for name, member_version in sorted(versions):
        parts += [name.encode(), member_version.encode()]
    return "hmac-sha256:" + services.keyed_digest(*parts)[:32]


def render(
    spec: ObjectSpec,
    selected: Selected,
    default_mode: int,
    decode: Callable[[bytes, str | None, str], bytes],
) -> list[OutputFile]:
    out = spec.outputs[0]
    mode = default_mode if out.mode is None else out.mode
    files: list[OutputFile] = []
    for member, fetched in selected.members:
        path = f"{out.path}/{member.name}"
        source = f"{spec.label} selected {clip(member.name, 120)!r}"
        data = decode(fetched.content, out.decode, source)
        files.append(OutputFile(path=path, mode=mode, contents=data, source=source))
    return files


def size(fetched: Fetched) -> int:
    if isinstance(fetched, Selected):
        return sum(len(f.content) for _, f in fetched.members)
    return len(fetched.content)
