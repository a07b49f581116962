"""Render docs/configuration-reference.md from the configuration code.

    python -m provider.cli.docgen > docs/configuration-reference.md     (or: make docs)

Settings, types and defaults come from the dataclasses in :mod:`provider.config`; each
setting's text is its field docstring there, else the entry for it in :data:`TEXT`
below. Flags come from the ``keyferry serve`` argument parser and environment variables
from the names :func:`provider.config.load` accepts. ``tests/cli/test_docgen.py`` fails when
the checked-in file differs from this output or when a setting has no text.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import config as kconfig
from . import main as cli

CLASSES: tuple[tuple[type[Any], str], ...] = (
    (kconfig.Config, ""),
    (kconfig.KubeConfig, "kubernetes."),
)

# Text for fields without a docstring in provider/config.py, keyed "Class.field".
TEXT: dict[str, str] = {
    "Config.socket_dir": "Directory where `<name>.sock` is created for each provider name; "
    "the driver dials sockets there.",
    "Config.socket_mode": "File mode of the sockets. The driver runs as root; use `0660` with "
    "a shared group if something else must connect.",
    "Config.grace_seconds": "After SIGTERM or SIGINT, how long in-flight Mounts may finish "
    "before the server stops and removes its sockets.",
    "Config.log_level": "`debug`, `info`, `warning` or `error`; JSON lines on stderr.",
    "Config.kubernetes": "How keyferry reaches the Kubernetes API; the `kubernetes.*` "
    "settings below. File only.",
    "KubeConfig.token_file": "The provider's own service-account token, as kubelet "
    "projects it into the pod.",
    "KubeConfig.ca_file": "CA bundle that verifies the API server.",
    "KubeConfig.cache_seconds": "How long ServiceAccount, pod and node lookups are reused.",
}

BACKEND_DOCS = {
    "aws": "aws.md#server-configuration-backendsaws",
    "gcp": "gcp.md#server-configuration-backendsgcp",
    "azure": "azure.md#server-configuration-backendsazure",
}


def class_node(cls: type[Any]) -> ast.ClassDef:
    """The class's definition, parsed from its source file."""
    source = Path(inspect.getsourcefile(cls) or "").read_text(encoding="utf-8")
    tree = ast.parse(source)
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)


def field_docstrings(cls: type[Any]) -> dict[str, str]:
    """``name -> docstring`` for the fields of a dataclass that have one (the string
    literal right after the annotated assignment, as Sphinx reads them)."""
    out: dict[str, str] = {}
    body = class_node(cls).body
    for stmt, nxt in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return out


def field_types(cls: type[Any]) -> dict[str, str]:
    return {
        s.target.id: ast.unparse(s.annotation)
        for s in class_node(cls).body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }


def describe(cls: type[Any], name: str) -> str:
    """The text for one field: its docstring, else :data:`TEXT`; ``""`` when neither."""
    doc = field_docstrings(cls).get(name)
    return " ".join((doc or TEXT.get(f"{cls.__name__}.{name}", "")).split())


def missing_text() -> list[str]:
    """``Class.field`` of every setting with no text at all."""
    return [
        f"{cls.__name__}.{f.name}"
        for cls, _ in CLASSES
        for f in dataclasses.fields(cls)
        if not describe(cls, f.name)
    ]


def stale_text() -> list[str]:
    """:data:`TEXT` keys for fields that no longer exist or now have a docstring."""
    known = {cls.__name__: cls for cls, _ in CLASSES}
    out = []
    for key in TEXT:
        cls_name, _, name = key.partition(".")
        cls = known.get(cls_name)
        names = {f.name for f in dataclasses.fields(cls)} if cls else set()
        if name not in names or (cls and name in field_docstrings(cls)):
            out.append(key)
    return out


def flags() -> dict[str, str]:
    """Config field -> ``--flag`` of ``keyferry serve``."""
    subparsers = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve: argparse.ArgumentParser = subparsers.choices["serve"]
    return {
        a.dest: a.option_strings[0]
        for a in serve._actions
        if a.option_strings and a.dest in {f.name for f in dataclasses.fields(kconfig.Config)}
    }


def environment() -> set[str]:
    """Config fields that ``KEYFERRY_<NAME>`` sets (see :func:`provider.config.load`)."""
    return set(kconfig._SCALARS) | {"providers"}


def default(cls: type[Any], f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        factory: Any = f.default_factory
        value = factory()
    else:  # pragma: no cover - every setting has a default
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and f.name.endswith("_mode"):
        return f"`{value:04o}`"
    if isinstance(value, Mapping):
        if not value:
            return "`{}`"
        return "`" + ", ".join(f"{k}={v}" for k, v in value.items()) + "`"
    if value == "":
        return "empty"
    return f"`{value}`"


def rows(cls: type[Any], prefix: str) -> Iterator[str]:
    types = field_types(cls)
    flag_of = flags() if cls is kconfig.Config else {}
    env = environment() if cls is kconfig.Config else set()
    for f in dataclasses.fields(cls):
        where = [f"`{flag_of[f.name]}`"] if f.name in flag_of else []
        if f.name in env:
            where.append(f"`{kconfig.ENV_PREFIX}{f.name.upper()}`")
        text = describe(cls, f.name).replace("``", "`").replace("|", "\\|")
        kind = types[f.name].replace("|", "\\|")
        yield (
            f"| `{prefix}{f.name}` | `{kind}` | {default(cls, f)} | "
            f"{', '.join(where) or 'file only'} | {text} |"
        )


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m provider.cli.docgen` (make docs) from provider/config.py;",
        "     tests/cli/test_docgen.py fails when this file and the code differ. Do not edit. -->",
        "",
        "keyferry builds one configuration at start-up from, in increasing precedence:",
        "defaults, the YAML file given with `--config`, environment variables and flags.",
        "Unknown settings stop start-up with an error naming them (exit code 2). A",
        "SecretProviderClass can never set any of these. How to use them:",
        "[configuration.md](configuration.md).",
        "",
    ]
    for cls, prefix in CLASSES:
        title = "Server settings" if not prefix else f"`{prefix.rstrip('.')}`"
        lines += [
            f"## {title}",
            "",
            "| Setting | Type | Default | Flag / environment | Meaning |",
            "|---|---|---|---|---|",
            *rows(cls, prefix),
            "",
        ]
    lines += ["## `backends`", "", "Each backend parses its own section:", ""]
    lines += [
        f"- `backends.{name}`: [{doc.split('#')[0]}]({doc})" for name, doc in BACKEND_DOCS.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
