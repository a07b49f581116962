"""provider.pipeline.make_plan on hostile parameters: input that would make a parser do
exponential work, nest without end or carry a 5000-digit number is INVALID_ARGUMENT, never
a hang, a crash or INTERNAL (every dialect, drop-in and native).

Tests that guard against a hang run the hostile input in a child process with
CPU and memory limits, so a regression fails the test instead of freezing or
exhausting the test runner.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
import yaml

from provider import dialect
from provider.errors import KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan
from tests import REPO

POD = Pod("team-a", "web-0", "11111111-2222-3333-4444-555555555555", "web")

# -- helpers --------------------------------------------------------------------------


def alias_bomb(levels: int, field: str, head: list[str]) -> str:
    """A native ``objects`` list whose last item sets ``field`` to a 10**levels alias bomb.

    The anchors are defined by earlier list items (each an invalid object, so
    the dialect reports them and goes on to the last item)."""
    lines = ["- &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"- &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.extend(head)
    lines.append(f"  {field}: *a{levels - 1}")
    return "\n".join(lines)


LOCAL_HEAD = ["- backend: local", "  name: plain.txt", "  path: out.txt"]
GCP_HEAD = ["- backend: gcp", "  name: projects/p/secrets/s/versions/latest", "  path: out.txt"]
AZURE_HEAD = [
    "- backend: azure",
    "  vault: kv1",
    "  name: db",
    "  tenantID: t",
    "  path: out.txt",
]


def jmespath_bomb(doublings: int) -> str:
    """Each ``[@,@]`` pipe doubles the value; ``to_string`` then serialises 2**n leaves."""
    return " | ".join(["[@,@]"] * doublings) + " | to_string(@)"


_CHILD = """
import json, sys
from provider.errors import KeyferryError
from provider.model import Mount, Pod
from provider.pipeline import make_plan
params, dialect = json.loads(sys.argv[1])
mount = Mount(pod=Pod("team-a", "web-0", "uid", "web"), parameters=params, dialect=dialect)
try:
    make_plan(mount)
    print("RESULT OK")
except KeyferryError as exc:
    print("RESULT " + exc.code.value)
"""


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (10, 12))
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def plan_in_child(params: dict[str, str], dialect: str) -> str:
    """``make_plan`` in a child process limited to 10 CPU seconds and 3 GiB.

    Returns the outcome line, or a description of how the child died: a parser
    that does exponential work is killed (SIGXCPU) or runs out of memory."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([params, dialect])],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=_limits,
        timeout=300,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return line.removeprefix("RESULT ")
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return f"child died (exit {proc.returncode}): {tail[:200]}"


def plan_code(params: dict[str, str], dialect: str) -> str:
    mount = Mount(pod=POD, parameters=params, dialect=dialect)
    try:
        make_plan(mount)
    except KeyferryError as exc:
        return exc.code.value
    except Exception as exc:  # what the server turns into INTERNAL
        return f"uncaught {type(exc).__name__}"
    return "OK"


# -- resource exhaustion: exponential work on the event loop -------------------------


@pytest.mark.parametrize(
    ("dialect", "params"),
    [
        (
            "native",
            {
                "objects": "- backend: local\n  name: plain.txt\n  extract:\n"
                f"  - path: out\n    jmesPath: '{jmespath_bomb(40)}'"
            },
        ),
        (
            "aws",
            {
                "region": "us-east-1",
                "objects": "- objectName: db\n  objectType: secretsmanager\n  jmesPath:\n"
                f"  - path: '{jmespath_bomb(40)}'\n    objectAlias: out",
            },
        ),
    ],
    ids=["native", "aws"],
)
def test_jmespath_expression_with_exponential_output_is_rejected_not_evaluated(
    dialect: str, params: dict[str, str]
) -> None:
    # compile_jmespath "dry-runs" every expression on {} while the dialect parses
    # (on the server's event loop): a 330-character expression doubles 40 times.
    assert plan_in_child(params, dialect) == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("field", "head"),
    [
        ("decode", LOCAL_HEAD),  # native _decoding: str(value)
        ("optional", LOCAL_HEAD),  # common.parse_bool: str(value)
        ("auth", GCP_HEAD),  # gcp.native_ref: f"{raw_auth!r}"
        ("useVMManagedIdentity", AZURE_HEAD),  # azure.native_ref -> parse_bool: str(value)
    ],
    ids=["decode", "optional", "gcp-auth", "azure-useVMManagedIdentity"],
)
def test_yaml_alias_bomb_in_native_objects_is_rejected_without_expanding_it(
    field: str, head: list[str]
) -> None:
    params = {"objects": alias_bomb(9, field, head)}  # 10**9 leaves once str()-ed
    assert plan_in_child(params, "native") == "INVALID_ARGUMENT"


# -- deep nesting and parser errors: INVALID_ARGUMENT, never INTERNAL -----------------

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("dialect", "params"),
    [
        ("native", {"objects": DEEP}),
        ("aws", {"objects": DEEP, "region": "us-east-1"}),
        ("azure", {"objects": DEEP, "keyvaultName": "kv1", "tenantID": "t"}),
        ("gcp", {"secrets": DEEP}),
        (
            "native",
            {
                "objects": "- backend: local\n  name: plain.txt\n  extract:\n"
                "  - path: out\n    jmesPath: '" + "(" * 3000 + "a" + ")" * 3000 + "'"
            },
        ),
        (
            "aws",
            {
                "region": "us-east-1",
                "objects": "- objectName: db\n  objectType: secretsmanager\n"
                "  objectVersion: " + "1" * 5000,
            },
        ),
    ],
    ids=[
        "native-yaml",
        "aws-yaml",
        "azure-yaml",
        "gcp-yaml",
        "native-jmespath-parens",
        "aws-5000-digit-integer",
    ],
)
def test_pathological_parameters_are_invalid_argument_not_uncaught(
    dialect: str, params: dict[str, str]
) -> None:
    assert plan_code(params, dialect) == "INVALID_ARGUMENT"


# -- values an explicit tag cannot take: PyYAML's constructors fail with KeyError etc. ---

TAGGED = ["!!bool 0b", "!!timestamp _", "!!int ''", "!!map [1]"]


@pytest.mark.parametrize("tagged", TAGGED)
@pytest.mark.parametrize(
    ("dialect", "params"),
    [
        ("native", {"objects": "- backend: local\n  name: {value}"}),
        ("aws", {"region": "us-east-1", "objects": "- objectName: {value}"}),
        ("azure", {"keyvaultName": "kv1", "tenantID": "t", "objects": "array:\n- {value}"}),
    ],
    ids=["native", "aws", "azure"],
)
def test_a_value_its_explicit_tag_cannot_take_is_invalid_argument(
    dialect: str, params: dict[str, str], tagged: str
) -> None:
    filled = {k: v.replace("{value}", tagged) for k, v in params.items()}
    assert plan_code(filled, dialect) == "INVALID_ARGUMENT"


# -- libyaml parses parameters; the dialect's own rules still decide -------------------


def test_parameters_are_parsed_by_libyaml_when_pyyaml_has_it() -> None:
    fast = dialect._fast(dialect.TextScalarLoader, "- a")
    assert yaml.__with_libyaml__ and fast.__mro__[1].__name__ == "CParser"
    assert dialect._fast(dialect.TextScalarLoader, "- \ud800") is dialect.TextScalarLoader


HOSTILE_YAML = {
    "duplicate-key": "- {backend: local, backend: aws}",
    "alias": "- &x {backend: local}\n- *x",
    "deep": "[" * 65 + "]" * 65,
    "surrogate": "- backend: \ud800",
    "control-character": "- backend: a\x01b",
    "tagged": "- backend: !!bool 0b",
    "unclosed": "- backend: [local",
}


@pytest.mark.parametrize("text", HOSTILE_YAML.values(), ids=HOSTILE_YAML.keys())
def test_libyaml_refuses_what_the_python_parser_refuses(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def outcome() -> str:
        try:
            dialect.load_yaml("objects", text, loader=dialect.TextScalarLoader)
        except KeyferryError as exc:
            # the same error, up to where the parser says it noticed
            return exc.code.value + " " + exc.message.split(":")[0].split(" at line")[0]
        return "accepted"

    fast = outcome()
    monkeypatch.setattr(dialect, "_fast", lambda loader, text: loader)
    assert fast == outcome() != "accepted"


def test_plain_nulls_read_by_libyaml_look_as_pyyaml_made_them() -> None:
    """libyaml marks plain scalars with style '' (PyYAML: None); constructors that tell a
    plain null from a quoted "null" (the azure dialect's) must see no difference."""
    node = yaml.compose("- ~\n- 'x'", Loader=dialect._fast(yaml.SafeLoader, "x"))
    assert isinstance(node, yaml.SequenceNode)
    assert [n.style for n in node.value] == [None, "'"]
