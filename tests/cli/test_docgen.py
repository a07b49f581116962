"""docs/configuration-reference.md is generated from provider/config.py and cannot drift."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from provider import config as kconfig
from provider.cli import docgen
from provider.cli.main import _load_config, parser
from tests import REPO

REFERENCE = REPO / "docs" / "configuration-reference.md"
SAMPLES: dict[str, str] = {
    "socket_dir": "/run/kf",
    "providers": "keyferry,aws",
    "socket_mode": "0660",
    "http_address": "127.0.0.1:9999",
    "grace_seconds": "7",
    "mount_timeout_seconds": "33",
    "max_response_bytes": "1234",
    "max_concurrent_fetches": "3",
    "max_concurrent_mounts": "9",
    "cache_ttl_seconds": "5",
    "max_selected_objects": "20",
    "stale_if_error_seconds": "300",
    "fail_fast_threshold": "5",
    "fail_fast_seconds": "2",
    "fail_fast_max_seconds": "60",
    "local_root": "/srv/secrets",
    "hmac_key_file": "/etc/kf/hmac",
    "log_level": "debug",
}


def test_the_checked_in_reference_is_what_the_code_renders() -> None:
    assert REFERENCE.read_text() == docgen.render(), (
        "docs/configuration-reference.md is stale: run `make docs`"
    )


def test_every_setting_has_text_and_no_text_is_left_over() -> None:
    assert docgen.missing_text() == []
    assert docgen.stale_text() == []


def reference_rows() -> dict[str, list[str]]:
    rows = {}
    for line in REFERENCE.read_text().splitlines():
        m = re.match(r"^\| `([a-z_.]+)` \| .*? \| .*? \| (.*?) \| .* \|$", line)
        if m:
            rows[m[1]] = re.findall(r"`([^`]+)`", m[2])
    return rows


def test_every_documented_flag_and_variable_really_sets_the_setting() -> None:
    rows = reference_rows()
    assert set(rows) >= {f.name for f in dataclasses.fields(kconfig.Config)}
    default = kconfig.Config()
    for name, where in rows.items():
        for item in where:
            if item.startswith("--"):
                args = parser().parse_args(["serve", item, SAMPLES[name]])
                value = getattr(_load_config(args), name)
            else:
                assert item == f"KEYFERRY_{name.upper()}"
                value = getattr(kconfig.load(env={item: SAMPLES[name]}), name)
            assert value != getattr(default, name), f"{item} does not set {name}"
    # And a setting documented as file-only is not read from the environment.
    for name, where in rows.items():
        if not where and "." not in name and name in SAMPLES:
            env = {f"KEYFERRY_{name.upper()}": SAMPLES[name]}
            assert getattr(kconfig.load(env=env), name) == getattr(default, name)


@dataclasses.dataclass
class _Undocumented:
    documented: int = 1
    """Has a docstring."""
    bare: int = 2


def test_a_setting_without_text_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    classes: tuple[tuple[type[Any], str], ...] = (*docgen.CLASSES, (_Undocumented, "x."))
    monkeypatch.setattr(docgen, "CLASSES", classes)
    assert docgen.missing_text() == ["_Undocumented.bare"]
    monkeypatch.setitem(docgen.TEXT, "_Undocumented.documented", "duplicate")
    assert "_Undocumented.documented" in docgen.stale_text()
