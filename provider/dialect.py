"""Parsing helpers shared by every dialect: YAML lists, key checks, modes, booleans.

Every error is an :class:`InvalidArgument` naming the parameter, the object
and the fix. Messages quote parameter *names* and locators, never values that
could be secret (SecretProviderClass parameters are not secret, but keep the
habit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from .errors import InvalidArgument, KeyferryError, MountFailed, did_you_mean
from .files import DEFAULT_FIX, file_set_problems
from .model import Output, OutputFile

_OCTAL_TEXT = re.compile(r"^(0o|0)?([0-7]{1,4})$")


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if _hashable(key) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            if _hashable(key):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class TextScalarLoader(UniqueKeyLoader):
    """Numbers stay text, so a mode written ``0640``, ``640`` or ``"0640"`` reads as
    octal like chmod, and a version ``3`` is the string ``"3"``."""


TextScalarLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in UniqueKeyLoader.yaml_implicit_resolvers.items()
}


MAX_PARAMETER_BYTES = 256 * 1024
MAX_YAML_DEPTH = 64


_C_LOADERS: dict[type[Any], type[Any]] = {}


def _fast(loader: type[Any], text: str) -> type[Any]:
    """``loader`` with libyaml's parser (``CParser``, as ``yaml.CSafeLoader`` has it)
    in place of PyYAML's pure-Python reader, scanner, parser and composer, about ten
    times faster; construction and scalar resolution stay ``loader``'s own (Python), so
    every rule of the dialect holds. Text libyaml cannot be handed (a lone surrogate,
    which is not UTF-8) and builds of PyYAML without libyaml keep the Python parser,
    which reports such text as YAML errors."""
    if _CParser is None or not issubclass(loader, yaml.SafeLoader):
        return loader
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return loader
    fast = _C_LOADERS.get(loader)
    if fast is None:
        parser = _CParser

        def init(self: Any, stream: str) -> None:  # as yaml.CSafeLoader.__init__
            parser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        def get_single_node(self: Any) -> Any:
            node = parser.get_single_node(self)
            _plain_style(node)
            return node

        fast = type(
            f"C{loader.__name__}",
            (parser, loader),
            {"__init__": init, "get_single_node": get_single_node},
        )
        _C_LOADERS[loader] = fast
    return fast


def _plain_style(root: Any) -> None:
    """libyaml marks a plain scalar with style ``""`` where PyYAML's parser leaves
    ``None`` (constructors that tell ``null`` from ``"null"`` look at it): made the same."""
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.style == "":
                node.style = None
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)


_CParser: type[Any] | None = getattr(yaml.cyaml, "CParser", None) if yaml.__with_libyaml__ else None


def check_yaml_events(parameter: str, text: str, loader: type[Any]) -> None:
    """Refuse aliases (``*name``: an alias bomb expands exponentially wherever a value
    is turned into text) and absurd nesting, before anything is constructed."""
    depth = 0
    for event in yaml.parse(text, Loader=_fast(loader, text)):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise InvalidArgument(
                f"parameter '{parameter}' uses a YAML alias (*{event.anchor}) at line "
                f"{line}; aliases are not allowed in parameters, write the value out"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise InvalidArgument(
                    f"parameter '{parameter}' is nested more than {MAX_YAML_DEPTH} levels deep"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_yaml(parameter: str, text: str, *, loader: type[Any] = UniqueKeyLoader) -> Any:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PARAMETER_BYTES:
        raise InvalidArgument(
            f"parameter '{parameter}' is larger than {MAX_PARAMETER_BYTES // 1024} KiB"
        )
    try:
        check_yaml_events(parameter, text, loader)
        return yaml.load(text, Loader=_fast(loader, text))
    except (RecursionError, ValueError, OverflowError):  # e.g. the integer-digits limit
        raise InvalidArgument(
            f"parameter '{parameter}' holds a value that cannot be read (a number with "
            "thousands of digits or nesting too deep)"
        ) from None
    except yaml.YAMLError as exc:
        raise yaml_error(parameter, exc) from None
    except TAG_FAILURES:
        raise InvalidArgument(
            f"parameter '{parameter}' holds a value its explicit tag cannot take (such as "
            "'!!bool 0b' or an '!!int' without digits); remove the tag or correct the value"
        ) from None


TAG_FAILURES = (KeyError, AttributeError, IndexError, TypeError)
"""How PyYAML's constructors fail on a value an explicit tag forces on them
(``!!bool 0b``: KeyError, ``!!timestamp _``: AttributeError, ``!!int ''``: IndexError,
``!!map [1]``: TypeError)."""


def yaml_error(parameter: str, exc: yaml.YAMLError) -> InvalidArgument:
    """The message for unparsable YAML: where, what, and the usual fix."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return InvalidArgument(
        f"parameter '{parameter}' is not valid YAML{where}: {problem}; "
        "check indentation and quoting (a block scalar '|' keeps the list as text)"
    )


def require_list(parameter: str, value: Any, example: str) -> list[Any]:
    if value is None:
        raise InvalidArgument(
            f"parameter '{parameter}' lists no objects; an empty mount would fail in the "
            f"driver with 'missing object versions'. Add at least one, e.g. {example}"
        )
    if not isinstance(value, list):
        raise InvalidArgument(
            f"parameter '{parameter}' must be a YAML list (items starting with '- '), "
            f"got a {type_name(value)}; e.g. {example}"
        )
    if not value:
        raise InvalidArgument(
            f"parameter '{parameter}' is an empty list; the driver would fail the mount with "
            f"'missing object versions'. Add at least one object, e.g. {example}"
        )
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


def check_keys(
    obj: Mapping[str, Any],
    allowed: Iterable[str],
    where: str,
    *,
    case_insensitive: bool = False,
) -> dict[str, Any]:
    """Reject unknown keys with a did-you-mean; return the mapping keyed canonically."""
    allowed = list(allowed)
    canon = {a.lower(): a for a in allowed} if case_insensitive else {a: a for a in allowed}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidArgument(f"{where}: key {key!r} must be a string")
        name = canon.get(key.lower() if case_insensitive else key)
        if name is None:
            raise InvalidArgument(f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}")
        if name in out:
            raise InvalidArgument(f"{where}: key '{name}' is given twice")
        out[name] = value
    return out


def get_str(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"{where}: '{key}' is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidArgument(
            f"{where}: '{key}' must be a string, got a {type_name(value)}; quote the value"
        )
    text = str(value)
    if required and not text.strip():
        raise InvalidArgument(f"{where}: '{key}' must not be empty")
    return text


def parse_bool(value: Any, where: str) -> bool:
    """Go's strconv.ParseBool set, which the official providers accept."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False", ""):
        return False
    raise InvalidArgument(f'{where}: {text!r} is not a boolean; use "true" or "false"')


def parse_mode(value: Any, where: str) -> int:
    """A file mode from an int (YAML already read ``0600`` as octal) or octal text.

    Only 0..0o777: setuid, setgid and sticky bits are rejected rather than
    silently dropped by the driver.
    """
    if isinstance(value, bool):
        raise InvalidArgument(f"{where}: a file mode must be a number such as 0600, not a boolean")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        m = _OCTAL_TEXT.match(value.strip())
        if not m:
            raise InvalidArgument(
                f'{where}: {value!r} is not an octal file mode; write it like "0640"'
            )
        mode = int(m.group(2), 8)
    else:
        raise InvalidArgument(f'{where}: a file mode must be octal text such as "0640"')
    if not 0 <= mode <= 0o777:
        hint = (
            f" ({value} looks like octal written without a leading zero; write 0{value})"
            if isinstance(value, int)
            and _OCTAL_TEXT.match(str(value))
            and int(str(value), 8) <= 0o777
            else ""
        )
        raise InvalidArgument(
            f"{where}: mode {value!r} is outside 0000..0777{hint}; setuid, setgid and "
            "sticky bits are not allowed"
        )
    return mode


def output_problems(
    outputs: Iterable[tuple[str, Output]], fix: str = DEFAULT_FIX
) -> list[InvalidArgument]:
    """The cross-object checks (two outputs on one path, a file where another output
    needs a directory) over ``(label, output)`` of the objects that did parse, so one
    error lists them together with the per-object problems."""
    return file_set_problems(
        [
            OutputFile(path=o.path, mode=o.mode or 0, contents=b"", source=label)
            for label, o in outputs
        ],
        fix,
    )


def collect(errors: list[KeyferryError], summary: str) -> None:
    """Raise every collected parse error at once."""
    if errors:
        raise MountFailed(errors, summary=summary)
