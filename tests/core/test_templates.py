"""Template objects (provider/templates.py): parse-time checks through the native dialect,
the sandbox and its bounds, versions, and errors that never quote a value. End to end
over the socket: tests/core/test_server.py-style tests below and
tests/clouds/aws/test_templates.py (local and AWS values in one file)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyferry_fakes.harness import Server
from provider import native, templates
from provider.cli.main import main as cli_main
from provider.errors import Code, KeyferryError
from provider.model import Mount, OutputFile, Plan, Pod
from provider.pipeline import make_plan
from provider.plans import PlanCache
from tests import REPO

CANARY = "CANARY-template-9f3e1a"


@pytest.fixture(autouse=True)
def no_time_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step and size bounds decide here, never how busy the machine is; the time
    bound has a test of its own on a clock the test moves."""
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 3600.0)


CANARY_JSON = json.dumps({"user": "app", "password": CANARY, "n": 7})

INPUTS = """\
- backend: local
  name: db.json
  write: false
  extract:
    - {path: db/user, jsonKey: user}
    - {path: db/password, jsonKey: password}
- backend: local
  name: flags
  path: flags
"""


def plan_of(template: str, *, inputs: str = INPUTS, **keys: str) -> Plan:
    item = {"template": template, "path": "app.env", **keys}
    text = inputs + "- " + json.dumps(item) + "\n"
    return make_plan(Mount(pod=Pod(namespace="ns", name="p"), parameters={"objects": text}))


def parse_error(template: str, **kwargs: str) -> str:
    with pytest.raises(KeyferryError) as err:
        plan_of(template, **kwargs)
    assert err.value.code is Code.INVALID_ARGUMENT
    return err.value.message


PASSWORD = "{{ values['db/password'] | length }}"
BOTH = "{{ values['db/user'] }}" + PASSWORD
FILES = {"db/user": b"app", "db/password": CANARY.encode(), "flags": b"blue"}
VERSIONS = {"db/user": "v1", "flags": "f1"}  # object id -> version (db.json's id: db/user)


def digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def render(
    plan: Plan,
    files: dict[str, bytes] | None = None,
    versions: dict[str, str] | None = None,
) -> tuple[dict[str, bytes], dict[str, str]]:
    given = [OutputFile(p, 0o644, c, source="t") for p, c in (files or FILES).items()]
    out, got = templates.render_all(plan, given, versions or VERSIONS, digest, 0o644)
    return {f.path: f.contents for f in out}, {v.id: v.version for v in got}


def render_error(template: str) -> KeyferryError:
    with pytest.raises(KeyferryError) as err:
        render(plan_of(template))
    return err.value


# -- what a template does ------------------------------------------------------------------


def test_env_file_from_extracts_with_inputs_kept_out_of_the_mount() -> None:
    plan = plan_of(
        'DB_USER={{ values["db/user"] }}\nDB_PASSWORD={{ values["db/password"] | shellquote }}\n',
        mode="0600",
    )
    (template,) = plan.templates
    assert template.inputs == ("db/password", "db/user")
    assert template.mode == 0o600 and template.id == "app.env"
    files, versions = render(plan)
    assert files["app.env"] == f"DB_USER=app\nDB_PASSWORD={CANARY}\n".encode()
    assert "db/user" not in files and "db/password" not in files  # write: false
    assert files["flags"] == b"blue"  # written as before
    assert set(versions) == {"app.env"} and versions["app.env"].startswith("hmac-sha256:")


def test_filters_quote_for_shell_json_and_base64() -> None:
    plan = plan_of(
        "{{ values['db/user'] | shellquote }} {{ \"it's $HOME\" | shellquote }} "
        "{{ values['db/user'] | json }} {{ 'a\"b\\n' | json }} "
        "{{ values['db/user'] | b64encode }} {{ 'YXBw' | b64decode }} "
        "{{ values['db/password'] | length }} {{ values['flags'] | upper }}",
    )
    files, _ = render(plan)
    assert files["app.env"] == (b'app \'it\'"\'"\'s $HOME\' "app" "a\\"b\\n" YXBw app 22 BLUE')


def test_loops_macros_and_conditions_work_within_the_bounds() -> None:
    plan = plan_of(
        "{% macro kv(k, v) %}{{ k }}={{ v | json }}{% endmacro %}"
        "{% for k in ['db/user', 'flags'] %}{{ loop.index }}:{{ k }}\n{% endfor %}"
        "{{ kv('USER', values['db/user']) }}\n"
        "{% if values['flags'] == 'blue' %}BLUE{% else %}OTHER{% endif %}\n"
        "{% for i in range(3) %}{{ i }}{% endfor %}{{ values['db/password'] | length }}"
        "{{ ['a', 1] }}{{ values['db/user'] | list | join(',') }}"
    )
    files, _ = render(plan)
    assert files["app.env"] == b"1:db/user\n2:flags\nUSER=\"app\"\nBLUE\n01222['a', 1]a,p,p"


def test_an_optional_input_that_is_missing_can_be_guarded() -> None:
    inputs = INPUTS + "- {backend: local, name: extra, path: extra, optional: true, write: false}\n"
    plan = plan_of(
        "{% if values['extra'] is defined %}X={{ values['extra'] }}{% else %}none{% endif %}"
        "{{ values['db/user'] }}" + PASSWORD,
        inputs=inputs,
    )
    files, _ = render(plan)
    assert files["app.env"] == b"noneapp22"
    files, _ = render(plan, {**FILES, "extra": b"e"})
    assert files["app.env"] == b"X=eapp22"
    unguarded = plan_of("{{ values['extra'] }}{{ values['db/user'] }}" + PASSWORD, inputs=inputs)
    with pytest.raises(KeyferryError) as err:
        render(unguarded)
    assert "'extra'" in err.value.message and "is defined" in err.value.message


def test_an_input_that_is_not_text_is_named() -> None:
    plan = plan_of("{{ values['flags'] }}{{ values['db/user'] }}" + PASSWORD)
    with pytest.raises(KeyferryError) as err:
        render(plan, {**FILES, "flags": b"\xff\xfe"})
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "values['flags'] is not UTF-8 text" in err.value.message


# -- versions ------------------------------------------------------------------------------


def test_version_changes_exactly_when_an_input_or_the_template_does() -> None:
    plan = plan_of("{{ values['db/user'] }}" + PASSWORD)
    _, first = render(plan)
    _, same = render(plan, versions={**VERSIONS, "flags": "f2"})  # flags is not read
    _, again = render(plan, {**FILES, "db/user": b"other"})  # bytes alone: version says
    _, rotated = render(plan, versions={**VERSIONS, "db/user": "v2"})
    _, edited = render(plan_of("{{ values['db/user'] }}!" + PASSWORD))
    assert first == same == again
    assert rotated != first and edited != first


def test_version_of_a_template_over_an_absent_optional_input() -> None:
    inputs = INPUTS + "- {backend: local, name: extra, path: extra, optional: true, write: false}\n"
    plan = plan_of(
        "{{ values['extra'] | default('-') }}{{ values['db/user'] }}" + PASSWORD, inputs=inputs
    )
    _, absent = render(plan)
    _, present = render(plan, {**FILES, "extra": b"e"}, {**VERSIONS, "extra": "e1"})
    assert absent != present


# -- parse-time checks ---------------------------------------------------------------------


def test_unknown_input_is_an_error_with_the_closest_path() -> None:
    message = parse_error("A\n{{ values['db/usr'] }}{{ values['db/user'] }}")
    assert "objects[2] (template: app.env)" in message
    assert "line 2: values['db/usr'] names no output" in message
    assert "did you mean 'db/user'" in message


def test_syntax_error_names_the_line() -> None:
    message = parse_error("A={{ values['db/user'] }}\nB={{ values['db/password'] \n")
    assert "objects[2] (template: app.env): line 2" in message


def test_unknown_filter_names_the_line_and_the_filters() -> None:
    message = parse_error("\n\n{{ values['db/user'] | pprint }}")
    assert "line 3: No filter named 'pprint'" in message
    assert "shellquote" in message and "b64encode" in message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% include '/etc/passwd' %}", "'include' is not available"),
        ("{% import 'x.j2' as x %}", "'import' is not available"),
        ("{% from 'x.j2' import y %}", "'from ... import' is not available"),
        ("{% extends 'base' %}", "'extends' is not available"),
        ("{% block b %}{% endblock %}", "'block' is not available"),
        ("{% for x in [1] recursive %}{{ loop([]) }}{% endfor %}", "recursive loops"),
        ("{{ self._TemplateReference__context }}", "'self' is not available"),
        ("{{ cycler.__init__.__globals__ }}", "'cycler' is not defined"),
        ("{{ lipsum() }}{{ joiner() }}", "'joiner', 'lipsum' are not defined"),
        ("{{ namespace() }}{{ dict(a=1) }}", "'dict', 'namespace' are not defined"),
        ("{{ values.__class__ }}", "read values only as values["),
        ("{% for k in values %}{{ k }}{% endfor %}", "cannot be iterated"),
        ("{% set k = 'db/user' %}{{ values[k] }}", "indexed by a variable"),
        ("{% set values = 1 %}", "'values' cannot be assigned"),
        ("{{ values['app.env'] }}", "values['app.env'] is the output of objects[2]"),
        ("{{ 'ab' | __keyferry_concat }}", "No filter named '__keyferry_concat'"),
    ],
)
def test_what_the_sandbox_does_not_offer_fails_at_parse_time(template: str, expected: str) -> None:
    message = parse_error(template + "{{ values['db/user'] }}{{ values['db/password'] }}")
    assert expected in message
    assert "objects[2] (template: app.env)" in message


def test_deeply_nested_template_is_an_error_not_a_crash() -> None:
    deep = "{{ " + "(" * 400 + "1" + ")" * 400 + " }}{{ values['db/user'] }}"
    assert "nested too deeply" in parse_error(deep)


def test_too_long_template() -> None:
    message = parse_error("x" * (templates.MAX_SOURCE_CHARS + 1))
    assert "over the limit" in message


def test_object_keys_of_a_template() -> None:
    assert "unknown key 'pth' (did you mean 'path'?)" in parse_error("x", pth="a")
    message = parse_error("x", backend="local")
    assert "either fetches ('backend') or renders ('template')" in message


def test_write_false_must_be_read_by_a_template() -> None:
    message = parse_error("{{ values['db/user'] }}")
    assert "output 'db/password' has 'write: false' but no template reads" in message


def test_template_outputs_clash_with_other_outputs_and_ids() -> None:
    assert "also written by" in parse_error("{{ values['db/user'] }}" + PASSWORD, path="flags")
    message = parse_error("{{ values['db/user'] }}{{ values['db/password'] }}", id="flags")
    assert "id 'flags' is also the id of objects[1]" in message


def test_a_template_does_not_read_another_template() -> None:
    text = INPUTS + (
        "- {template: \"{{ values['db/user'] }}{{ values['db/password'] }}\", path: a}\n"
        "- {template: \"{{ values['a'] }}\", path: b}\n"
    )
    with pytest.raises(KeyferryError) as err:
        native.parse(Mount(pod=Pod(), parameters={"objects": text}))
    assert "values['a'] is the output of objects[2] (template: a)" in err.value.message


def test_write_is_a_boolean() -> None:
    text = "- {backend: local, name: a, write: maybe}\n"
    with pytest.raises(KeyferryError) as err:
        native.parse(Mount(pod=Pod(), parameters={"objects": text}))
    assert "write" in err.value.message


def test_a_parsed_template_is_reused_from_the_plan_cache() -> None:
    cache = PlanCache(make_plan)
    params = {
        "objects": INPUTS + "- {template: \"{{ values['db/user'] }}"
        "{{ values['db/password'] }}\", path: app.env}\n"
    }
    first, cached = cache.get(Mount(pod=Pod(name="a"), parameters=params))
    second, again = cache.get(Mount(pod=Pod(name="b"), parameters=params))
    assert not cached and again and first is second
    assert render(second)[0]["app.env"] == b"app" + CANARY.encode()


# -- the sandbox at render time: escapes, bounds; errors never quote a value ---------------

HOSTILE = [
    ("{{ ''.__class__.__mro__ }}", "sandbox refused"),
    ("{{ values['db/user'].__class__ }}", "sandbox refused"),
    ("{{ values['db/user'].upper() }}", "sandbox refused"),
    ("{{ values['db/user']['format']('{0:>999999999}', 1) }}", "sandbox refused"),
    ("{{ values['db/user']['__class__'] }}", "sandbox refused"),
    ("{{ range.__globals__ }}", "sandbox refused"),
    ("{{ range }}", "cannot be written"),
    ("{% for i in range(10**6) %}{% for j in range(10**6) %}x{% endfor %}{% endfor %}", "range()"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "loop"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "levels deep"),
    (
        "{% macro f(n) %}{% if n < 30 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}"
        "{{ f(0) }}",
        "loop iterations, calls",
    ),
    ("{{ values['db/user'] * 100000000 }}", "characters"),
    ("{% set s = values['db/password'] %}" + "{% set s = s ~ s %}" * 40 + "{{ s }}", "characters"),
    ("{% set s = values['db/password'] %}" + "{% set s = s + s %}" * 40 + "{{ s }}", "characters"),
    (
        "{% set s %}{% for i in range(10000) %}" + "x" * 500 + "{% endfor %}{% endset %}",
        "characters",
    ),
    ("{% for i in range(10000) %}" + "y" * 120 + "{% endfor %}", "larger than"),
    ("{{ values['db/user'] | center(1000000000) }}", "number above"),
    (
        "{{ values['db/user'] | replace('', values['db/password'] * 1000) "
        "| replace('', 'x' * 1000) }}",
        "characters",
    ),
    ("{{ '%999999999s' % values['db/user'] }}", "'%'"),
    # lists share their items: their text is measured before it is built
    ("{% set l = range(20000) | list %}{{ [" + "l, " * 300 + "] }}", "characters"),
    ("{% set l = range(20000) | list %}{{ ([l] * 1000) | json }}", "characters"),
    ("{% set l = range(20000) | list %}{{ [l] * 1000 ~ '' }}", "characters"),
    (
        "{% set l = range(20000) | list %}{% set x %}{% for i in range(19000) %}{{ l }}"
        "{% endfor %}{% endset %}",
        "characters",
    ),
    ("{{ [range] }}", "cannot be written"),
    ("{{ ((values['db/password'] ~ '\\n') * 5000) | indent(1000) }}", "characters"),
    ("{{ (values['db/password'] * 2000) | wordwrap(1, wrapstring='x' * 1000) }}", "characters"),
    # list + list in one C call, quadratic, holding the GIL (the time bound cannot stop it)
    ("{{ ([[1]] * 16000) | sum(start=[]) }}", "sum adds numbers"),
    ("{{ ([[1]] * 16000) | sum(none, []) }}", "sum adds numbers"),
    ("{{ 2 ** 100000 }}", "exponent"),
    (
        "{{ (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * "
        "(10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * "
        "(10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * (10 ** 60) * "
        "(10 ** 60) * (10 ** 60) * (10 ** 60) }}",
        "bits",
    ),
]


@pytest.mark.parametrize(("template", "expected"), HOSTILE)
def test_hostile_templates_stop_with_an_error(template: str, expected: str) -> None:
    err = render_error(template + "{{ values['db/user'] }}{{ values['db/password'] }}")
    assert err.code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED)
    assert expected in err.message
    where = "" if expected == "larger than" else "line 1: "  # counted as it streams out
    assert f"objects[2] (template: app.env): {where}" in err.message


def test_the_time_bound_stops_a_slow_render(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.5)
    ticks = iter(range(10**6))
    monkeypatch.setattr(templates, "_clock", lambda: next(ticks) * 0.01)  # 10 ms a look
    err = render_error("{% for i in range(200) %}{{ i }}{% endfor %}" + BOTH)
    assert err.code is Code.RESOURCE_EXHAUSTED
    assert "line 1: the template took longer than 0.5s to render" in err.message
    monkeypatch.setattr(templates, "_clock", lambda: 0.0)
    assert render(plan_of("{% for i in range(200) %}{% endfor %}" + BOTH))[0]["app.env"]


LEAKY = [
    # Jinja's own message: "'str object' has no attribute '<the value>'"
    "{{ values['db/user'][values['db/password']] }}",
    "{{ values['db/user'][values['db/password']]() }}",
    "{{ values['db/password'] + 1 }}",
    "{{ values['db/password'] | b64decode }}",
    "{{ values['db/password'] / 2 }}",
    "{{ [values['db/password']] | sum }}",
    "{{ values['db/password'] is divisibleby 3 }}",
    "{{ values['db/password'] | join(values['db/password'] * 10000000) }}",
    "{{ {values['db/password']: 1}[values['db/user']] }}",
    "{{ values['db/password'] | round }}",
]


@pytest.mark.parametrize("template", LEAKY)
def test_render_errors_never_quote_a_value(template: str) -> None:
    err = render_error(template + "{{ values['db/user'] }}")
    assert CANARY not in err.message and CANARY not in str(err)
    assert "line 1" in err.message


# -- through the socket -----------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path, serve: Callable[..., Server]) -> Server:
    root = tmp_path / "root"
    root.mkdir()
    (root / "db.json").write_text(CANARY_JSON)
    (root / "flags").write_text("blue")
    return serve(local_root=root)


def mount_params(template: str) -> dict[str, str]:
    return {"objects": INPUTS + "- " + json.dumps({"template": template, "path": "app.env"})}


GOOD = "U={{ values['db/user'] }}\nP={{ values['db/password'] | shellquote }}\n"


def test_template_over_the_socket_and_serving_after_hostile_ones(local: Server) -> None:
    resp = local.mount("keyferry", mount_params(GOOD))
    files = {f.path: f.contents for f in resp.files}
    assert files == {"flags": b"blue", "app.env": f"U=app\nP={CANARY}\n".encode()}
    ids = {v.id for v in resp.object_version}
    assert ids == {"db/user", "flags", "app.env"}
    messages = []
    for template, _ in HOSTILE[:12]:
        with pytest.raises(grpc.RpcError) as err:
            local.mount("keyferry", mount_params(template + GOOD))
        assert err.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        messages.append(err.value.details() or "")
    for template in LEAKY:
        with pytest.raises(grpc.RpcError) as err:
            local.mount("keyferry", mount_params(template + GOOD))
        messages.append(err.value.details() or "")
    assert messages[0].startswith(
        "1 of 3 objects failed: [1] objects[2] (template: app.env): line 1:"
    )
    again = local.mount("keyferry", mount_params(GOOD))
    assert {v.id: v.version for v in again.object_version} == {
        v.id: v.version for v in resp.object_version
    }
    haystack = "\n".join(messages + local.logs) + local.metrics_text()
    assert CANARY not in haystack


def test_parse_errors_over_the_socket_are_invalid_argument(local: Server) -> None:
    with pytest.raises(grpc.RpcError) as err:
        local.mount("keyferry", mount_params("{{ values['db/usr'] }}{{ values['db/password'] }}"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "did you mean 'db/user'" in (err.value.details() or "")


def test_compiled_templates_are_bounded_and_compiled_again_when_pushed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = templates._CompiledCache(max_chars=100)
    monkeypatch.setattr(templates, "_COMPILED", cache)
    first = plan_of("A={{ values['db/user'] }}" + PASSWORD)
    second = plan_of("B={{ values['db/user'] }}" + PASSWORD + "x" * 60)
    assert list(cache._entries) == [second.templates[0].source]  # the first was pushed out
    assert render(first)[0]["app.env"] == b"A=app22"
    assert render(second)[0]["app.env"] == b"B=app22" + b"x" * 60
    assert list(cache._entries) == [second.templates[0].source]


def test_keyferry_validate_reports_the_template_object_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = REPO / "examples" / "aws" / "template.yaml"
    assert cli_main(["validate", str(example)]) == 0
    assert "ok (2 objects, 1 templates, dialect native)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    text = example.read_text()
    bad.write_text(text.replace('values["api-url"] | shellquote', 'values["api-url"] | shelquote'))
    assert cli_main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "objects[2] (template: app.env): line 4: No filter named 'shelquote'" in err
    bad.write_text(text.replace('values["api-url"]', 'values["api_url"]'))
    assert cli_main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert (
        "line 4: values['api_url'] names no output of this class (did you mean 'api-url'?)" in err
    )


@pytest.mark.parametrize(
    ("dialect", "params"),
    [
        ("aws", {"objects": "- {objectName: a, objectType: secretsmanager, template: x}"}),
        ("gcp", {"secrets": "- {resourceName: projects/p/secrets/s/versions/1, template: x}"}),
        (
            "azure",
            {
                "keyvaultName": "kv-one",
                "tenantID": "t",
                "objects": "array:\n  - |\n    objectName: a\n    objectType: secret\n"
                "    template: x\n",
            },
        ),
    ],
)
def test_drop_in_dialects_have_no_templates(dialect: str, params: dict[str, str]) -> None:
    with pytest.raises(KeyferryError) as err:
        make_plan(Mount(pod=Pod(), parameters=params, dialect=dialect))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "unknown key 'template'" in err.value.message


TOKENS = [
    *("{{ ", " }}", "{% ", " %}", "{# ", " #}", "{%- ", " -%}", "\n", " ", "x", "'", '"'),
    *("values['db/user']", "values['db/password']", "values", "values[", "]", "(", ")"),
    *("for i in ", "endfor", "if ", "else", "endif", "set s = ", "macro m(a)", "endmacro"),
    *("m(", "range(", "99999", "0", "-1", "2", "*", "**", "~", "+", "%", "/", "//", ","),
    *(
        "| upper",
        "| json",
        "| shellquote",
        "| b64decode",
        "| int",
        "| join(",
        "| replace(",
        "| indent(",
        "| nosuch",
        "loop.index",
        "s",
        "[",
        "{",
        "}",
        "'a'",
        ".__class__",
        "raw",
        "endraw",
        "filter upper",
        "endfilter",
        "call m(1)",
        "endcall",
        "caller()",
    ),
]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_any_template_parses_renders_or_fails_with_a_clear_error(tokens: list[str]) -> None:
    source = "".join(tokens) + "{{ values['db/user'] }}{{ values['db/password'] }}"
    try:
        plan = plan_of(source)
    except KeyferryError as err:
        assert err.code is Code.INVALID_ARGUMENT
        return
    try:
        files, versions = render(plan)
    except KeyferryError as err:
        assert err.code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED)
        assert CANARY not in err.message
        return
    assert len(files["app.env"]) <= templates.MAX_OUTPUT_BYTES and set(versions) == {"app.env"}


@pytest.mark.parametrize(
    ("template", "inline"),
    [
        ("A={{ values['db/user'] | shellquote }}\nB={{ values['db/password'] | json }}\n", True),
        ("{% if values['db/user'] %}{{ values['db/password'] | upper }}{% endif %}", True),
        ("{% for c in 'ab' %}{% endfor %}", False),  # loops: a worker thread
        ("{% macro m() %}{% endmacro %}", False),
        ("{{ values['db/user'] * 2 }}", False),  # sizes multiplied
        ("{{ values['db/user'] | list | join(',') }}", False),  # a list of every character
        ("{{ values['db/user'] | upper }}" * 17, False),  # more than 16 operations
    ],
)
def test_only_cheap_templates_render_on_the_event_loop(template: str, inline: bool) -> None:
    plan = plan_of(template + BOTH)
    assert plan.templates[0].inline is inline
    small = [OutputFile(p, 0o644, c, source="t") for p, c in FILES.items()]
    large = [OutputFile("flags", 0o644, b"x" * (templates.INLINE_INPUT_BYTES + 1), source="t")]
    assert templates.cheap(plan, small) is inline
    assert templates.cheap(plan, large) is False


def test_a_secretsync_may_sync_a_template_but_not_an_unwritten_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spc = (REPO / "examples" / "aws" / "template.yaml").read_text()
    spc = spc.replace("name: app-env\n", "name: app-env\n  namespace: team-a\n", 1)

    def secretsync(source: str) -> str:
        return (
            "---\napiVersion: secret-sync.x-k8s.io/v1alpha1\nkind: SecretSync\n"
            "metadata: {name: app-secret, namespace: team-a}\n"
            "spec:\n  serviceAccountName: web\n  secretProviderClassName: app-env\n"
            "  secretObject:\n    type: Opaque\n    data:\n"
            f"      - {{sourcePath: {source}, targetKey: k}}\n"
        )

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(spc + secretsync("app.env"))
    bad.write_text(spc + secretsync("api-url"))
    assert cli_main(["validate", str(good)]) == 0
    assert "(SecretSync app-secret): ok (1 keys from app-env)" in capsys.readouterr().out
    assert cli_main(["validate", str(bad)]) == 1
    assert "sourcePath 'api-url' is not a file of SecretProviderClass app-env" in (
        capsys.readouterr().err
    )


def test_a_selection_is_not_a_template_input() -> None:
    selection = "- {backend: local, select: {directory: conf}, path: conf}\n"
    message = parse_error("{{ values['conf'] }}" + BOTH, inputs=INPUTS + selection)
    assert "values['conf'] is the directory of the selection objects[2]" in message
    text = selection.replace("path: conf}", "path: conf, write: false}")
    with pytest.raises(KeyferryError) as err:
        native.parse(Mount(pod=Pod(), parameters={"objects": text}))
    assert "'write' does not apply to 'select'" in err.value.message


def test_jinja2_is_loaded_only_by_a_class_that_has_a_template() -> None:
    """A node whose classes have no template never pays Jinja2's import (about 50 ms of
    start-up and several MiB): the server, the pipeline and the native dialect load it on
    the first template object. In a fresh interpreter: this one has loaded it already."""
    script = """
import sys
from provider import cli, native, pipeline, server  # noqa: F401  (what `keyferry serve` loads)
from provider.model import Mount, Pod
from provider.cli import main  # noqa: F401

def parse(objects):
    return native.parse(Mount(pod=Pod("ns", "p", "u", "sa"), parameters={"objects": objects}))

parse("- {backend: local, name: a.txt, path: a}")
print("before", "jinja2" in sys.modules)
parse("- {backend: local, name: a.txt, path: a, write: false}\\n"
      "- template: '{{ values[\\"a\\"] }}'\\n  path: b")
print("after", "jinja2" in sys.modules)
"""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["before False", "after True"], out


def test_a_template_id_equal_to_a_selected_member_id_fails_naming_both(
    local: Server, tmp_path: Path
) -> None:
    # A selection's member ids (<id>/<name>) are known only once it is listed, so the
    # parse-time id check cannot see them; the Mount must, never drop one of the two.
    (tmp_path / "root" / "conf").mkdir()
    (tmp_path / "root" / "conf" / "a").write_text("x")
    params = mount_params(GOOD)
    params["objects"] += (
        "\n- {backend: local, select: {directory: conf}, path: conf}\n"
        "- {template: 'T', path: t, id: conf/a}\n"
    )
    with pytest.raises(grpc.RpcError) as err:
        local.mount("keyferry", params)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert "objects[4] (template: t): id 'conf/a' is also the ObjectVersion id of" in details
    assert "objects[3] (local: select conf)" in details


def test_a_class_of_templates_only_says_what_a_template_needs() -> None:
    mount = Mount(pod=Pod(), parameters={"objects": "- {template: 'static', path: a}"})
    with pytest.raises(KeyferryError) as err:
        make_plan(mount)
    assert err.value.code is Code.INVALID_ARGUMENT
    assert "template objects only" in err.value.message
    assert "add the objects it reads" in err.value.message
