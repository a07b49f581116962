"""Template objects of the native dialect: one file rendered from other objects' values.

```yaml
- backend: aws
  name: prod/db
  write: false                       # fetched and read by templates, not written
  extract:
    - {path: db/user, jmesPath: username}
    - {path: db/password, jmesPath: password}
- template: |
    DB_USER={{ values["db/user"] }}
    DB_PASSWORD={{ values["db/password"] | shellquote }}
  path: app.env
  mode: "0600"
```

A template reads the files the class's other objects produce, by their output path,
through constant subscripts of ``values`` only: the inputs are known when the class is
parsed, so an unknown path is an error there, and a rendered file's version is a keyed
HMAC of the template and the versions of exactly the objects it reads.

The class author controls the template; the sandbox keeps it to the values it names:

- Jinja2's ``ImmutableSandboxedEnvironment`` with no loader (``include``, ``import``,
  ``extends`` and blocks are rejected when the class is parsed), no autoescaping,
  ``StrictUndefined``, no globals but a bounded ``range``, no attribute access at all
  (except ``loop.index`` and its kin), no ``str.format``, an allow-list of filters.
- Bounds on the work a render can do, checked in hooks that every loop iteration,
  call, filter, operator, concatenation and emitted piece passes through: steps,
  characters produced (so ``{% set s = s ~ s %}`` written 40 times stops early), macro
  depth, the output's size (counted while it streams) and a time limit.
- Errors say what went wrong and on which line of the template; they never carry an
  exception's own message, which could quote a value.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.filters
import jinja2.meta
import jinja2.nodes as nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

from .backend import digest_part
from .dialect import check_keys, get_str, parse_mode
from .errors import (
    InvalidArgument,
    KeyferryError,
    MountFailed,
    ResourceExhausted,
    clip,
    did_you_mean,
)
from .files import check_path
from .model import ObjectSpec, ObjectVersion, OutputFile, Plan, TemplateSpec

KEYS = ("template", "path", "mode", "id")

MAX_SOURCE_CHARS = 16 * 1024
"""A template's source, as written in the class."""
MAX_OUTPUT_BYTES = 1024 * 1024
"""The rendered file (a Kubernetes Secret synced from the mount holds at most 1 MiB)."""
MAX_PRODUCED_CHARS = 4 * 1024 * 1024
"""Characters a render may produce in all: emitted pieces, concatenations, operator and
filter results, captured blocks. Bounds its memory whatever the template does."""
MAX_STEPS = 20_000
"""Loop iterations, calls and filter applications in one render."""
MAX_DEPTH = 32
"""Nested macro calls."""
MAX_WIDTH = 1024
"""Width and count arguments of filters (``indent``, ``center``, ``truncate``...)."""
MAX_INT_BITS = 4096
"""Integer results of ``*`` and ``**``."""
MAX_RENDER_SECONDS = 0.5
"""Wall-clock bound on one render, beside the deterministic step bound."""
INLINE_INPUT_BYTES = 8 * 1024
INLINE_OPERATIONS = 16
"""A template without loops, macros, calls, ``*`` or ``**``, with at most
``INLINE_OPERATIONS`` filters and operators, all of them quoting or converting one value
(:data:`_LIGHT`), renders on the event loop over up to ``INLINE_INPUT_BYTES`` of input
(well under a millisecond); any other goes to a worker thread."""

_LIGHT = frozenset(
    ("shellquote", "json", "b64encode", "b64decode", "upper", "lower", "trim", "default"),
) | frozenset(("d", "length", "count", "int", "float", "string", "capitalize", "title"))
"""Filters that make one value of about its size, at C speed."""
_FILENAME = "<keyferry template>"
_GLOBALS = ("values", "range")
_FORBIDDEN: dict[type[nodes.Node], str] = {
    nodes.Extends: "'extends' is not available (templates have no loader)",
    nodes.Include: "'include' is not available (templates have no loader)",
    nodes.Import: "'import' is not available (templates have no loader)",
    nodes.FromImport: "'from ... import' is not available (templates have no loader)",
    nodes.Block: "'block' is not available (templates have no inheritance)",
}

# -- the budget of one render ------------------------------------------------------------


class _Exceeded(Exception):
    """A bound was hit; ``what`` is a fixed text naming it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Refused(Exception):
    """The sandbox refused an operation; ``what`` is a fixed text naming it."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


_clock: Callable[[], float] = time.monotonic
"""The clock of the time bound (tests put one of their own here)."""


class _Budget:
    __slots__ = ("depth", "produced", "steps", "until")

    def __init__(self) -> None:
        self.steps = 0
        self.produced = 0
        self.depth = 0
        self.until = _clock() + MAX_RENDER_SECONDS

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Exceeded(
                f"the template did more than {MAX_STEPS} loop iterations, calls and "
                "filter applications"
            )
        self.check_time()

    def check_time(self) -> None:
        if _clock() > self.until:
            raise _Exceeded(f"the template took longer than {MAX_RENDER_SECONDS}s to render")

    def produce(self, chars: int) -> None:
        self.produced += chars
        if self.produced > MAX_PRODUCED_CHARS:
            raise _Exceeded(
                f"the template produced more than {MAX_PRODUCED_CHARS} characters while rendering"
            )

    def allow(self, chars: int) -> None:
        """Before building a value of ``chars`` characters."""
        if self.produced + chars > MAX_PRODUCED_CHARS:
            raise _Exceeded(_WOULD_EXCEED)


_WOULD_EXCEED = f"the template would produce more than {MAX_PRODUCED_CHARS} characters"
_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("keyferry_template_budget")


def _current() -> _Budget:
    budget = _budget.get(None)
    if budget is None:  # only ever rendered through render_one, which sets it
        raise _Refused("the template was evaluated outside a render")
    return budget


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


_SCALARS = (str, int, float, bool, type(None), jinja2.Undefined)


def _measure(value: Any) -> int:
    """An upper bound on the characters of ``value`` as text, refusing what is not data
    (a function or macro written out would show a memory address, which changes on every
    restart, and with it a file whose version says it did not change). Lists share their
    items (``[l, l, l]``), so their text can be far larger than anything counted so far:
    the walk stops as soon as the bound passes what is left of the budget."""
    budget = _current()
    room = MAX_PRODUCED_CHARS - budget.produced
    total = 0
    visits = 0
    stack = [(value, 1)]
    while stack:
        item, scale = stack.pop()
        if isinstance(item, str):
            total += len(item) * scale
        elif isinstance(item, _SCALARS):
            total += _int_bits(item) // 3 + 24 if isinstance(item, int) else 24
        elif isinstance(item, range):  # of at most MAX_STEPS numbers (_bounded_range)
            total += 2 + 8 * len(item)
        elif isinstance(item, list | tuple | dict):
            total += 2 + 4 * len(item)
            if total > room:  # before walking a list that may hold millions of items
                raise _Exceeded(_WOULD_EXCEED)
            # Inside a list a string is written quoted and escaped: up to 10 characters
            # for one (repr's \U0001xxxx, JSON's \u00xx).
            pairs = item.items() if isinstance(item, dict) else ((x,) for x in item)
            stack.extend((x, 10) for pair in pairs for x in pair)
        else:
            raise _Refused(
                f"a {type(item).__name__} cannot be written or converted to text; write "
                "values, numbers or lists of them"
            )
        visits += 1
        if total > room:
            raise _Exceeded(_WOULD_EXCEED)
        if visits % 4096 == 0:
            budget.check_time()
    return total


# -- the environment ---------------------------------------------------------------------


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _binop(operator: str, left: Any, right: Any) -> Any:
    budget = _current()
    budget.step()
    if operator == "%" and isinstance(left, str):
        raise _Refused("string formatting with '%' is not available; use '~' to join")
    if operator == "*":
        count, seq = (right, left) if isinstance(left, str | list | tuple) else (left, right)
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            budget.allow(len(seq) * max(0, count))
        elif _int_bits(left) + _int_bits(right) > MAX_INT_BITS:
            raise _Exceeded(f"an integer product would exceed {MAX_INT_BITS} bits")
    elif operator == "**":
        if isinstance(right, int | float) and abs(right) > 64 and _int_bits(left) > 1:
            raise _Exceeded("an exponent above 64 is not available")
        bits = _int_bits(left) * right if isinstance(right, int) and right > 0 else 0
        if isinstance(left, int) and bits > MAX_INT_BITS:
            raise _Exceeded(f"a power would exceed {MAX_INT_BITS} bits")
    elif operator == "+":
        budget.allow(_size(left) + _size(right))
    result = ImmutableSandboxedEnvironment.default_binop_table[operator](left, right)
    budget.produce(_size(result))
    return result


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(("+", "*", "**", "%", "//", "/"))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Only a for loop's own variables (loop.index, loop.first...): no methods, no
        # attributes of values, macros or anything else.
        return isinstance(obj, LoopContext) and super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format stays an unsafe attribute like every other method

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        return _binop(operator, left, right)

    def call(
        __self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:
        budget = _current()
        budget.step()
        if not __self.is_safe_callable(__obj):  # the sandbox's own check, kept
            raise _Refused("the template called something the sandbox does not allow")
        if budget.depth >= MAX_DEPTH:
            raise _Exceeded(f"macros call each other more than {MAX_DEPTH} levels deep")
        budget.depth += 1
        try:
            result = __context.call(__obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        budget.produce(_size(result))
        return result


def _bounded_range(*args: int) -> range:
    _current().step()
    for arg in args:
        if not isinstance(arg, int) or isinstance(arg, bool):
            raise _Refused("range() takes integers")
    result = range(*args)
    if len(result) > MAX_STEPS:
        raise _Exceeded(f"range() of more than {MAX_STEPS} numbers")
    return result


@pass_context
def _emit(context: jinja2.runtime.Context, value: Any) -> Any:
    """Every piece an output statement writes (into the file, a captured block or a
    macro's result) passes here: as ``finalize``, and for template text through the
    ``Const`` nodes it is turned into."""
    budget = _current()
    if isinstance(value, str):
        budget.produce(len(value))
        return value
    _measure(value)
    text = str(value)  # what Jinja would write: the file counts what it holds
    budget.produce(len(text))
    return text


def _iterate(iterable: Any) -> Iterator[Any]:
    budget = _current()
    for item in iterable:
        budget.step()
        yield item


def _concat(items: Sequence[Any]) -> str:
    budget = _current()
    budget.allow(sum(_measure(item) for item in items))
    parts = [str(item) for item in items]
    result = "".join(parts)
    budget.produce(len(result))
    return result


def _shellquote(value: Any) -> str:
    """One word for a POSIX shell, single-quoted when it needs quoting."""
    return shlex.quote(str(value))


def _json(value: Any) -> str:
    """A JSON value: a string comes out double-quoted with JSON escapes (also a valid
    YAML and TOML string)."""
    return json.dumps(value, ensure_ascii=False)


def _b64encode(value: Any) -> str:
    return base64.b64encode(str(value).encode("utf-8")).decode("ascii")


def _b64decode(value: Any) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _Refused("b64decode was given text that is not base64 of UTF-8 text") from None


_BUILTIN_FILTERS = (
    *("abs", "capitalize", "center", "count", "default", "d", "first", "float", "indent"),
    *("int", "join", "last", "length", "list", "lower", "max", "min", "replace", "reverse"),
    *("round", "sort", "string", "sum", "title", "trim", "truncate", "unique", "upper"),
    *("urlencode", "wordcount", "wordwrap"),
)
_OWN_FILTERS: dict[str, Callable[..., Any]] = {
    "shellquote": _shellquote,
    "json": _json,
    "b64encode": _b64encode,
    "b64decode": _b64decode,
}
FILTERS = tuple(sorted((*_BUILTIN_FILTERS, *_OWN_FILTERS)))
"""The filters a template may use; any other is an error when the class is parsed."""


def _precheck(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse, before any work, a filter call whose result would break the bounds."""
    budget = _current()
    for value in (*args[1:], *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
            raise _Exceeded(f"filter {name!r} was given a number above {MAX_WIDTH}")
    subject = args[0] if args else None
    size = _size(subject)
    if name == "sum":
        start = args[2] if len(args) > 2 else kwargs.get("start", 0)
        if not isinstance(start, int | float):  # lists or strings: quadratic, in one C call
            raise _Refused("sum adds numbers; its start must be a number")
    if name == "replace" and len(args) >= 3:
        old, new = str(args[1]), str(args[2])
        count = size + 1 if not old else str(subject).count(old)
        budget.allow(size + count * max(0, len(new) - len(old)))
    elif name == "join" and isinstance(subject, list | tuple | str):
        separator = str(args[1]) if len(args) > 1 else str(kwargs.get("d", ""))
        budget.allow(_measure(subject) + len(subject) * len(separator))
    elif name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        lines = str(subject).count("\n") + 1
        budget.allow(size + lines * (len(width) if isinstance(width, str) else int(width)))
    elif name == "wordwrap":
        width = args[1] if len(args) > 1 else kwargs.get("width", 79)
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
        breaks = size // max(1, int(width)) + size // 2 + 1  # words, or pieces of them
        budget.allow(size + breaks * len(str(wrap)))


def _wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    passed = getattr(function, "jinja_pass_arg", None)

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _current().step()
        given = args[1:] if passed is not None else args
        _current().allow(sum(_measure(value) for value in (*given, *kwargs.values())))
        _precheck(name, given, kwargs)
        result = function(*args, **kwargs)
        if isinstance(result, Iterator):  # e.g. reverse() of a list
            result = list(_iterate(result))
        _current().produce(_size(result))
        return result

    if passed is not None:
        bounded.jinja_pass_arg = passed  # type: ignore[attr-defined]
    bounded.__name__ = name
    return bounded


def _environment() -> _Sandbox:
    env = _Sandbox(
        loader=None,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        finalize=_emit,
        optimized=False,  # nothing of a template is evaluated when it is compiled
        auto_reload=False,
        cache_size=0,
    )
    env.globals.clear()
    env.globals["range"] = _bounded_range
    builtin = jinja2.filters.FILTERS
    env.filters = {name: _wrap(name, builtin[name]) for name in _BUILTIN_FILTERS}
    env.filters.update({name: _wrap(name, f) for name, f in _OWN_FILTERS.items()})
    env.filters["__keyferry_iterate"] = _iterate
    env.filters["__keyferry_concat"] = _concat
    return env


_ENV = _environment()


# -- parsing -------------------------------------------------------------------------------


class _Bound(NodeTransformer):
    """Route loops, concatenations and template text through the budget's hooks."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, "__keyferry_iterate", node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter(
            nodes.List(list(node.nodes), lineno=node.lineno), "__keyferry_concat", node.lineno
        )

    def visit_TemplateData(self, node: nodes.TemplateData) -> nodes.Node:
        # Template text, too, passes finalize (and is counted) once it is a Const node.
        return nodes.Const(node.data, lineno=node.lineno)


def _filter(node: nodes.Node, name: str, lineno: int) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=lineno)


@dataclass(frozen=True)
class Parsed:
    """A template object as the dialect read it, before its inputs are linked."""

    label: str
    path: str
    mode: int | None
    id: str
    source: str
    inputs: tuple[tuple[str, int], ...]
    """(output path, line) of every ``values["..."]`` the template reads."""
    inline: bool = True


def parse_object(index: int, item: Mapping[str, Any]) -> Parsed:
    """Read one ``template:`` object: keys, path, mode, and the template compiled and
    checked (syntax, filters, names, what it reads of ``values``)."""
    where = f"objects[{index}]"
    if "backend" in item:
        raise InvalidArgument(
            f"{where}: an object either fetches ('backend') or renders ('template'), not both; "
            "move the template into an object of its own"
        )
    fields = check_keys(item, KEYS, where)
    source = fields["template"]
    if not isinstance(source, str) or not source.strip():
        raise InvalidArgument(f"{where}: 'template' must be non-empty text (use a YAML block, '|')")
    path = get_str(fields, "path", where, required=True)
    label = f"{where} (template: {path})"
    check_path(path, f"{label} path")
    mode = parse_mode(fields["mode"], f"{label} mode") if "mode" in fields else None
    object_id = get_str(fields, "id", label) or path
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidArgument(
            f"{label}: the template is {len(source)} characters, over the limit of "
            f"{MAX_SOURCE_CHARS}; split it into several template objects"
        )
    inputs, inline, compiled = _compile(source, label)
    _COMPILED.keep(source, compiled)
    return Parsed(label, path, mode, object_id, source, inputs, inline)


def _compile(source: str, label: str) -> tuple[tuple[tuple[str, int], ...], bool, jinja2.Template]:
    """Check and compile ``source``: (its inputs with their lines, whether it is
    straight-line, the compiled template)."""
    try:
        tree = _ENV.parse(source)
        inputs, inline = _check(tree, label)
        tree = _Bound().visit(tree)
        code = _ENV.compile(tree, name="template", filename=_FILENAME)
    except jinja2.TemplateSyntaxError as exc:  # also TemplateAssertionError (unknown filter)
        message = (exc.message or "syntax error").rstrip(".")
        hint = ""
        if "No filter named" in message:
            hint = "; available filters: " + ", ".join(f for f in FILTERS if f != "d")
        raise InvalidArgument(f"{label}: line {exc.lineno}: {clip(message, 200)}{hint}") from None
    except (RecursionError, MemoryError, SyntaxError):
        raise InvalidArgument(f"{label}: the template is nested too deeply") from None
    return inputs, inline, _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None))


class _CompiledCache:
    """Compiled templates by source, bounded by their total source characters: compiled
    code is up to ~30 times larger than its source, so plans (bounded by their parameter
    characters in :mod:`provider.plans`) do not hold it. A template pushed out is compiled
    again at its next render."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._chars = 0
        self._entries: OrderedDict[str, jinja2.Template] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, source: str, template: jinja2.Template) -> None:
        with self._lock:
            if source in self._entries:
                return
            self._entries[source] = template
            self._chars += len(source)
            while self._chars > self.max_chars and len(self._entries) > 1:
                dropped, _ = self._entries.popitem(last=False)
                self._chars -= len(dropped)

    def get(self, source: str) -> jinja2.Template:
        with self._lock:
            template = self._entries.get(source)
            if template is not None:
                self._entries.move_to_end(source)
                return template
        *_, template = _compile(source, "template")  # checked when the class was parsed
        self.keep(source, template)
        return template


MAX_COMPILED_CHARS = 1024 * 1024
"""Source characters of the compiled templates kept (about 30 MiB of code at most)."""
_COMPILED = _CompiledCache(MAX_COMPILED_CHARS)


def _check(tree: nodes.Template, label: str) -> tuple[tuple[tuple[str, int], ...], bool]:
    """What the template reads of ``values`` and whether it can render on the event loop;
    refuses what the sandbox does not offer, naming the line."""
    problems: list[str] = []
    inputs: dict[str, int] = {}
    allowed: set[int] = set()
    inline = True
    operations = 0
    for node in tree.find_all(nodes.Node):
        if type(node) in _FORBIDDEN:
            problems.append(f"line {node.lineno}: {_FORBIDDEN[type(node)]}")
        if isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock | nodes.Call):
            inline = False
        if isinstance(node, nodes.Mul | nodes.Pow):  # the operators that multiply sizes
            inline = False
        if isinstance(node, nodes.Filter) and node.name not in _LIGHT:
            inline = False
        if isinstance(node, nodes.Filter | nodes.BinExpr | nodes.Concat | nodes.FilterBlock):
            operations += 1
        if isinstance(node, nodes.Filter) and node.name.startswith("__keyferry"):
            problems.append(f"line {node.lineno}: No filter named {node.name!r}")  # internal
        if isinstance(node, nodes.For) and node.recursive:
            problems.append(f"line {node.lineno}: recursive loops are not available")
        if (
            isinstance(node, nodes.Getitem)
            and _is_values(node.node)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            inputs.setdefault(node.arg.value, node.lineno)
            allowed.add(id(node.node))
        if isinstance(node, nodes.Name) and node.name == "self":
            problems.append(f"line {node.lineno}: 'self' is not available in templates")
    for node in tree.find_all(nodes.Name):
        if node.name == "values" and id(node) not in allowed:
            if node.ctx != "load":
                problems.append(f"line {node.lineno}: 'values' cannot be assigned")
            else:
                problems.append(
                    f'line {node.lineno}: read values only as values["<output path>"] with '
                    "a quoted path; 'values' cannot be iterated, passed on or indexed by a "
                    "variable"
                )
    unknown = sorted(jinja2.meta.find_undeclared_variables(tree) - set(_GLOBALS))
    if unknown:
        problems.append(
            ", ".join(repr(n) for n in unknown)
            + f" {'is' if len(unknown) == 1 else 'are'} not defined; a template sees "
            'values["<output path>"], range() and the names it sets itself'
        )
    if problems:
        raise InvalidArgument(f"{label}: " + "; ".join(dict.fromkeys(problems)))
    return tuple(sorted(inputs.items())), inline and operations <= INLINE_OPERATIONS


def _is_values(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "values" and node.ctx == "load"


def link(
    parsed: Sequence[Parsed], specs: Sequence[ObjectSpec]
) -> tuple[tuple[TemplateSpec, ...], list[KeyferryError]]:
    """Check what each template reads against the outputs of the fetched objects, and
    that every output kept out of the mount (``write: false``) is read by a template:
    (the linked templates, one error per object that is wrong)."""
    readable: dict[str, ObjectSpec] = {o.path: s for s in specs for o in s.outputs}
    rendered = {t.path: t for t in parsed}
    ids = {i: s.label for s in specs for i in s.ids}
    errors: list[KeyferryError] = []
    linked: list[TemplateSpec] = []
    for template in parsed:
        problems: list[str] = []
        for path, line in template.inputs:
            if path in rendered:
                problems.append(
                    f"line {line}: values[{path!r}] is the output of {rendered[path].label}; "
                    "a template reads the fetched objects' outputs only"
                )
            elif path in readable and readable[path].selection is not None:
                problems.append(
                    f"line {line}: values[{path!r}] is the directory of the selection "
                    f"{readable[path].label}; a template reads the files of objects mounted "
                    "by 'name'"
                )
            elif path not in readable:
                problems.append(
                    f"line {line}: values[{path!r}] names no output of this class"
                    f"{did_you_mean(path, readable) if readable else ''}; name an object's "
                    "'path' or an extract's 'path'"
                )
        if template.id in ids:
            problems.append(
                f"id {template.id!r} is also the id of {ids[template.id]}; give the template "
                "its own 'id'"
            )
        ids[template.id] = template.label
        if problems:
            errors.append(InvalidArgument(f"{template.label}: " + "; ".join(problems)))
            continue
        linked.append(
            TemplateSpec(
                label=template.label,
                path=template.path,
                mode=template.mode,
                id=template.id,
                source=template.source,
                inputs=tuple(path for path, _ in template.inputs),
                inline=template.inline,
            )
        )
    read = {path for t in parsed for path, _ in t.inputs}
    for spec in specs:
        for out in spec.outputs:
            if not out.write and out.path not in read:
                errors.append(
                    InvalidArgument(
                        f"{spec.label}: output {out.path!r} has 'write: false' but no template "
                        f"reads values[{out.path!r}]; read it in a template or remove "
                        "'write: false'"
                    )
                )
    return tuple(linked), errors


# -- rendering -----------------------------------------------------------------------------


def render_one(template: TemplateSpec, values: Mapping[str, str]) -> str:
    """The template rendered over ``values`` (its inputs that were found), within every
    bound; errors name the line and the bound or refusal, never a value."""
    token = _budget.set(_Budget())
    try:
        chunks: list[str] = []
        size = 0
        for chunk in _COMPILED.get(template.source).generate({"values": dict(values)}):
            size += len(chunk)
            if size > MAX_OUTPUT_BYTES:  # characters: a lower bound on the bytes
                raise _Exceeded(f"the rendered file is larger than {MAX_OUTPUT_BYTES} bytes")
            chunks.append(chunk)
        return "".join(chunks)
    except Exception as exc:
        raise _explain(template, values, exc) from None
    finally:
        _budget.reset(token)


def _line(exc: BaseException) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"line {line}: " if line is not None else ""


def _explain(template: TemplateSpec, values: Mapping[str, str], exc: Exception) -> KeyferryError:
    """A fixed description of ``exc``: Jinja's and Python's messages can quote values
    (an undefined key that was a value, a conversion's input), so none is passed on."""
    where = f"{template.label}: {_line(exc)}"
    if isinstance(exc, _Exceeded):
        return ResourceExhausted(f"{where}{exc.what}; simplify the template")
    if isinstance(exc, _Refused):
        return InvalidArgument(f"{where}{exc.what}")
    if isinstance(exc, SecurityError):
        return InvalidArgument(
            f"{where}the sandbox refused an attribute or method access; templates read "
            'values["<path>"] and use filters, e.g. {{ values["db/user"] | upper }}'
        )
    if isinstance(exc, jinja2.UndefinedError):
        missing = [p for p in template.inputs if p not in values]
        if missing:
            return InvalidArgument(
                f"{where}used an undefined value; not found (optional objects): "
                + ", ".join(repr(p) for p in missing)
                + '; guard them with {% if values["<path>"] is defined %}'
            )
        return InvalidArgument(
            f"{where}used an undefined value (an index, key or attribute that does not exist)"
        )
    if isinstance(exc, RecursionError):
        return ResourceExhausted(f"{where}the template recursed too deeply")
    if isinstance(exc, MemoryError | OverflowError):
        return ResourceExhausted(f"{where}a value grew too large")
    return InvalidArgument(
        f"{where}rendering failed with {type(exc).__name__} (the message is withheld: it "
        "could quote a value)"
    )


def _inputs(
    template: TemplateSpec, contents: Mapping[str, bytes]
) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    problems: list[str] = []
    for path in template.inputs:
        data = contents.get(path)
        if data is None:
            continue
        try:
            values[path] = data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(
                f"values[{path!r}] is not UTF-8 text; a template reads text (leave the value "
                "encoded, e.g. without 'decode: base64', and decode it where it is used)"
            )
    return values, problems


def render_all(
    plan: Plan,
    files: Sequence[OutputFile],
    versions: Mapping[str, str],
    keyed_digest_of: Callable[[bytes], str],
    default_mode: int,
) -> tuple[list[OutputFile], list[ObjectVersion]]:
    """The files of a Mount with the templates' added and the unwritten inputs removed,
    and each template's version: a keyed HMAC of its source and its inputs' object
    versions (``versions``: object id -> version; an input not found counts as absent)."""
    contents = {f.path: f.contents for f in files}
    version_of: dict[str, str] = {}
    hidden: set[str] = set()
    for spec in plan.objects:
        for out in spec.outputs:
            if not out.write:
                hidden.add(out.path)
            version = versions.get(spec.ids[0]) if spec.ids else None
            if version is not None and out.path in contents:
                version_of[out.path] = version
    out_files = [f for f in files if f.path not in hidden]
    out_versions: list[ObjectVersion] = []
    errors: list[KeyferryError] = []
    for template in plan.templates:
        values, problems = _inputs(template, contents)
        if problems:
            errors.append(InvalidArgument(f"{template.label}: " + "; ".join(problems)))
            continue
        try:
            data = render_one(template, values).encode("utf-8")
            if len(data) > MAX_OUTPUT_BYTES:
                raise ResourceExhausted(
                    f"{template.label}: the rendered file is larger than {MAX_OUTPUT_BYTES} bytes"
                )
        except KeyferryError as exc:
            errors.append(exc)
            continue
        except UnicodeEncodeError:
            errors.append(
                InvalidArgument(f"{template.label}: the rendered text is not valid Unicode")
            )
            continue
        mode = default_mode if template.mode is None else template.mode
        out_files.append(OutputFile(template.path, mode, data, source=template.label))
        out_versions.append(
            ObjectVersion(template.id, _version(template, version_of, keyed_digest_of))
        )
    if errors:
        raise MountFailed(
            errors, summary=f"{len(errors)} of {len(plan.templates)} templates failed"
        )
    return out_files, out_versions


def id_clashes(
    plan: Plan, rendered: Sequence[ObjectVersion], versions: Mapping[str, tuple[str, str]]
) -> list[KeyferryError]:
    """Templates whose id is already an ObjectVersion id of this Mount (``versions``: id ->
    (version, who)). :func:`link` checks the objects' ids when the class is parsed; a
    selection's member ids (``<id>/<name>``) exist only once it is listed."""
    labels = {t.id: t.label for t in plan.templates}
    return [
        InvalidArgument(
            f"{labels[v.id]}: id {v.id!r} is also the ObjectVersion id of "
            f"{versions[v.id][1]}; give the template its own 'id'"
        )
        for v in rendered
        if v.id in versions
    ]


def _version(
    template: TemplateSpec, version_of: Mapping[str, str], keyed_digest_of: Callable[[bytes], str]
) -> str:
    parts = [b"template", template.source.encode("utf-8", "surrogatepass")]
    for path in template.inputs:
        version = version_of.get(path)
        parts += [
            path.encode("utf-8", "surrogatepass"),
            b"\x00absent" if version is None else b"=" + version.encode(),
        ]
    return "hmac-sha256:" + keyed_digest_of(b"".join(digest_part(p) for p in parts))[:32]


def cheap(plan: Plan, files: Sequence[OutputFile]) -> bool:
    """Whether :func:`render_all` may run on the event loop: every template straight-line
    (no loop, macro or call) and the inputs small. Else it goes to a worker thread."""
    if not all(t.inline for t in plan.templates):
        return False
    return sum(len(f.contents) for f in files) <= INLINE_INPUT_BYTES
