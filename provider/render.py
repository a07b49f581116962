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
from functools import lru_cache
from typing import Any

import jmespath
import jmespath.exceptions
import yaml

from .errors import InvalidArgument
from .model import Extraction, Fetched, ObjectSpec, OutputFile


@lru_cache(maxsize=512)
def _compiled(expression: str) -> Any:
    return jmespath.compile(expression)


def compile_jmespath(expression: str, where: str) -> Any:
    """Compile, and catch unknown functions and wrong arity before anything is fetched."""
    try:
        compiled = _compiled(expression)
    except jmespath.exceptions.ParseError as exc:
        hint = ""
        if "-" in expression and '"' not in expression:
            hint = '; quote keys with hyphens, e.g. "my-key"'
        raise InvalidArgument(
            f"{where}: jmesPath {expression!r} is not a valid expression "
            f"(error at column {getattr(exc, 'lex_position', '?')}){hint}"
        ) from None
    # jmespath resolves functions only when it evaluates; a dry run on an empty
    # document finds the errors that do not depend on the data.
    try:
        compiled.search({})
    except (jmespath.exceptions.UnknownFunctionError, jmespath.exceptions.ArityError) as exc:
        raise InvalidArgument(
            f"{where}: jmesPath {expression!r}: {_function_problem(exc)}"
        ) from None
    except jmespath.exceptions.JMESPathError:
        pass  # type errors depend on the document; reported at render time
    return compiled


def _function_problem(exc: Exception) -> str:
    if isinstance(exc, jmespath.exceptions.UnknownFunctionError):
        return "unknown function (see jmespath.org for the built-in functions)"
    if isinstance(exc, jmespath.exceptions.ArityError):
        name = getattr(exc, "function_name", "a function")
        return f"wrong number of arguments to {name}()"
    return "invalid expression"


def _document(content: bytes, kind: str, where: str) -> Any:
    try:
        return _parse(content, kind, where)
    except RecursionError:
        raise InvalidArgument(f"{where}: the value is nested too deeply to parse") from None


def _parse(content: bytes, kind: str, where: str) -> Any:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"{where}: the value is not UTF-8 text, so no key can be extracted"
        ) from None
    if kind == "yaml_key":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise InvalidArgument(f"{where}: the value is not a valid YAML document") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"{where}: the value is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "key extraction needs a JSON document"
        ) from None


def extract(content: bytes, extraction: Extraction, where: str) -> bytes:
    """The selected value as bytes; it must be a string (as upstream providers require)."""
    doc = _document(content, extraction.kind, where)
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
        except jmespath.exceptions.JMESPathError as exc:
            raise InvalidArgument(f"{where}: {what}: {_function_problem(exc)}") from None
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
    return value.encode("utf-8")


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
    for out in spec.outputs:
        where = f"{spec.label} -> {out.path}"
        data = out.transform(fetched, out, where) if out.transform else fetched.content
        if out.extract is not None:
            data = extract(data, out.extract, where)
        data = decode(data, out.decode, where)
        mode = default_mode if out.mode is None else out.mode
        files.append(OutputFile(path=out.path, mode=mode, contents=data, source=spec.label))
    return files
