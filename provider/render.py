"""Turn fetched bytes into file contents: key extraction (JMESPath, JSON and
YAML keys), decoding (base64, hex) and format transforms.

One extraction engine shared by every dialect. Errors name the object, the
output and the expression, never the document's content.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
from functools import lru_cache
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import yaml

from .dialect import TAG_FAILURES
from .errors import InvalidArgument, clip
from .model import Extraction, Fetched, ObjectSpec, OutputFile


@lru_cache(maxsize=512)
def _compiled(expression: str) -> Any:
    return jmespath.compile(expression)


# Bounds on user-supplied JMESPath: an expression is evaluated for every mount, so
# it must not be able to do unbounded work (``[@,@] | [@,@] | ...`` doubles the
# value at every pipe).
MAX_EXPRESSION_CHARS = 1024
MAX_EXPRESSION_NODES = 256
MAX_FANOUT = 1024
_FUNCTIONS = jmespath.functions.Functions().FUNCTION_TABLE


def compile_jmespath(expression: str, where: str) -> Any:
    """Compile and statically check an expression: syntax, known functions, arity,
    and bounded size and fan-out. Nothing is evaluated here."""
    try:
        return _checked(expression)
    except InvalidArgument:  # not cached: checked again to name the object that asked
        return _compile_and_check(expression, where)


@lru_cache(maxsize=512)
def _checked(expression: str) -> Any:
    """An expression that passed every check, compiled: asked again on every Mount."""
    return _compile_and_check(expression, "jmesPath")


def _compile_and_check(expression: str, where: str) -> Any:
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidArgument(
            f"{where}: jmesPath expression is longer than {MAX_EXPRESSION_CHARS} characters"
        )
    try:
        compiled = _compiled(expression)
    except jmespath.exceptions.ParseError as exc:
        hint = ""
        if "-" in expression and '"' not in expression:
            hint = '; quote keys with hyphens, e.g. "my-key"'
        raise InvalidArgument(
            f"{where}: jmesPath {clip(expression, 80)!r} is not a valid expression "
            f"(error at column {getattr(exc, 'lex_position', '?')}){hint}"
        ) from None
    except RecursionError:
        raise InvalidArgument(f"{where}: jmesPath expression is nested too deeply") from None
    _check_ast(compiled.parsed, where, expression)
    return compiled


def _check_ast(root: Any, where: str, expression: str) -> None:
    nodes = 0
    fanout = 1
    stack = [root]
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > MAX_EXPRESSION_NODES:
            raise InvalidArgument(f"{where}: jmesPath expression is too complex")
        kind = node.get("type")
        children = [c for c in node.get("children", []) if isinstance(c, dict)]
        if kind == "function_expression":
            name = node.get("value")
            entry = _FUNCTIONS.get(name)
            if entry is None:
                raise InvalidArgument(
                    f"{where}: jmesPath {clip(expression, 80)!r}: unknown function {name}() "
                    "(see jmespath.org for the built-in functions)"
                )
            signature = entry["signature"]
            variadic = bool(signature) and signature[-1].get("variadic")
            wrong = len(children) < len(signature) if variadic else len(children) != len(signature)
            if wrong:
                raise InvalidArgument(
                    f"{where}: jmesPath {clip(expression, 80)!r}: {name}() takes "
                    f"{'at least ' if variadic else ''}{len(signature)} argument(s), "
                    f"got {len(children)}"
                )
        elif kind in ("multi_select_list", "multi_select_dict"):
            fanout *= max(1, len(children))
            if fanout > MAX_FANOUT:
                raise InvalidArgument(
                    f"{where}: jmesPath expression multiplies its input more than "
                    f"{MAX_FANOUT} times; select the values you need directly"
                )
        stack.extend(children)


# --- YAML documents: the YAML 1.2 core schema, as the official GCP provider reads them ---
#
# Upstream decodes an extracted document with Go's yaml.v3 into map[string]any, so
# `yes`, `on`, `No` and `12:30` are text (YAML 1.1, PyYAML's default, made them booleans
# and a number), timestamps stay their text, and numbers follow Go's integer syntax
# (0x, 0o, 0b, 1.1-style 0777, `_` separators) within 64 bits. Dialect *parameters* are
# not read this way: each dialect keeps the YAML rules of the provider it replaces.

_TAG = "tag:yaml.org,2002:"
_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_BOOL = frozenset(("true", "True", "TRUE", "false", "False", "FALSE"))
_SPECIAL_FLOAT = frozenset(
    sign + dot for sign in ("", "+", "-") for dot in (".inf", ".Inf", ".INF")
) | frozenset((".nan", ".NaN", ".NAN"))
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")


def _go_int(text: str) -> int | None:
    """``text`` (``_`` removed) as Go's ParseInt(s, 0, 64), else ParseUint: None when
    it is not an integer or does not fit."""
    body = text.lstrip("+-")
    if len(body) > 66 or not _GO_INT.fullmatch(text):  # 64 binary digits after "0b"
        return None
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        number = int(body[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    else:
        number = int(body, 8 if body.startswith("0") else 10)
    if text.startswith("-"):
        number = -number
    if -(2**63) <= number < 2**63 or (text[0] != "+" and 0 <= number < 2**64):
        return number
    return None


def _plain_scalar_tag(text: str) -> str:
    """The tag yaml.v3 resolves a plain scalar to (its resolve(), for decoding into any)."""
    if text in _NULL:
        return _TAG + "null"
    if text in _BOOL:
        return _TAG + "bool"
    if text in _SPECIAL_FLOAT:
        return _TAG + "float"
    if text == "<<":
        return _TAG + "merge"
    if text[0] in "+-0123456789.":
        plain = text if text[0] == "." else text.replace("_", "")
        if text[0] != "." and _go_int(plain) is not None:
            return _TAG + "int"
        if _FLOAT.fullmatch(plain) and not math.isinf(float(plain)):
            return _TAG + "float"
    return _TAG + "str"


class Yaml12Loader(yaml.SafeLoader):
    """Safe loading with the resolution above; a key given twice in one mapping is an
    error (as in yaml.v3), aliases and merge keys work as there."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _plain_scalar_tag(value)
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:  # not quoted: keys are the document's content
                    raise yaml.constructor.ConstructorError(
                        None, None, "a key is given twice", key.start_mark
                    )
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)

    def construct_text(self, node: yaml.ScalarNode) -> str:
        return self.construct_scalar(node)

    def construct_go_int(self, node: yaml.ScalarNode) -> int:
        number = _go_int(self.construct_scalar(node).replace("_", ""))
        if number is None:
            raise yaml.constructor.ConstructorError(
                None, None, "an !!int that is not a 64-bit integer", node.start_mark
            )
        return number


Yaml12Loader.yaml_implicit_resolvers = {}  # resolve() above decides for plain scalars
Yaml12Loader.add_constructor(_TAG + "int", Yaml12Loader.construct_go_int)
# yaml.v3 keeps the text of a timestamp (even with !!timestamp) and of a `<<` value.
Yaml12Loader.add_constructor(_TAG + "timestamp", Yaml12Loader.construct_text)
Yaml12Loader.add_constructor(_TAG + "merge", Yaml12Loader.construct_text)


def _document(content: bytes, kind: str, where: str) -> Any:
    try:
        return _parse(content, kind, where)
    except RecursionError:
        raise InvalidArgument(f"{where}: the value is nested too deeply to parse") from None


def _parse(content: bytes, kind: str, where: str) -> Any:
    try:
        return _parse_document(content, kind, where)
    except (ValueError, OverflowError):  # e.g. Python's integer-digits limit
        raise InvalidArgument(f"{where}: the value could not be parsed as a document") from None


def _parse_document(content: bytes, kind: str, where: str) -> Any:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"{where}: the value is not UTF-8 text, so no key can be extracted"
        ) from None
    if kind == "yaml_key":
        try:
            return yaml.load(text, Loader=Yaml12Loader)  # a SafeLoader
        except (yaml.YAMLError, *TAG_FAILURES):
            raise InvalidArgument(f"{where}: the value is not a valid YAML document") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"{where}: the value is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "key extraction needs a JSON document"
        ) from None


def extract(
    content: bytes, extraction: Extraction, where: str, parsed: dict[str, Any] | None = None
) -> bytes:
    """The selected value as bytes; it must be a string (as upstream providers require).
    ``parsed`` keeps the document read from ``content`` for the next extraction of the
    same content (JSON and JMESPath share one; nothing here changes a document)."""
    kind = "yaml" if extraction.kind == "yaml_key" else "json"
    if parsed is not None and kind in parsed:
        doc = parsed[kind]
    else:
        doc = _document(content, extraction.kind, where)
        if parsed is not None:
            parsed[kind] = doc
    expr = extraction.expression
    if extraction.kind == "jmespath":
        what = f"jmesPath {expr!r}"
        try:
            value = compile_jmespath(expr, where).search(doc)
        except jmespath.exceptions.JMESPathTypeError as exc:
            # jmespath's own message quotes the offending value: never pass it on.
            fn = getattr(exc, "function_name", "a function")
            raise InvalidArgument(
                f"{where}: {what}: {fn}() was given a value of the wrong type"
            ) from None
        except jmespath.exceptions.JMESPathError:
            raise InvalidArgument(f"{where}: {what} could not be evaluated") from None
        except RecursionError:
            raise InvalidArgument(f"{where}: the value is nested too deeply") from None
    else:
        if not isinstance(doc, dict):
            raise InvalidArgument(
                f"{where}: the value is a {type(doc).__name__}, not a mapping; "
                f"cannot take key {expr!r}"
            )
        if expr not in doc:
            # Suggest the closest key only: the document's keys are its content.
            close = difflib.get_close_matches(expr, [str(k) for k in doc], n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgument(f"{where}: key {expr!r} not found in the document{hint}")
        value = doc[expr]
        what = f"key {expr!r}"
    if value is None:
        raise InvalidArgument(f"{where}: {what} matched nothing")
    if not isinstance(value, str):
        raise InvalidArgument(
            f"{where}: {what} selects a {type(value).__name__}, not a string; select a "
            "string value (e.g. a leaf key)"
        )
    if extraction.kind != "yaml_key":
        # Go's encoding/json reads a lone UTF-16 surrogate escape as U+FFFD.
        value = _SURROGATE.sub("\ufffd", value)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{where}: {what} selects text that is not valid Unicode") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def decode(content: bytes, decoding: str | None, where: str) -> bytes:
    if decoding in (None, "utf-8"):
        return content
    text = b"".join(content.split())  # line-wrapped base64/hex, as Go's decoders accept
    try:
        if decoding == "base64":
            return base64.b64decode(text, validate=True)
        if decoding == "hex":
            return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{where}: the value is not valid {decoding}") from None
    raise InvalidArgument(f"{where}: unknown decoding {decoding!r}")


def render(spec: ObjectSpec, fetched: Fetched, default_mode: int) -> list[OutputFile]:
    files: list[OutputFile] = []
    parsed: dict[str, Any] = {}  # the fetched document, read once for all its outputs
    for out in spec.outputs:
        where = f"{spec.label} -> {out.path}"
        data = out.transform(fetched, out, where) if out.transform else fetched.content
        if out.extract is not None:
            data = extract(data, out.extract, where, None if out.transform else parsed)
        data = decode(data, out.decode, where)
        mode = default_mode if out.mode is None else out.mode
        files.append(OutputFile(path=out.path, mode=mode, contents=data, source=spec.label))
    return files
