"""provider.settings: every settings section reads values by the same rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from provider import config
from provider.clouds.aws import settings as aws_settings
from provider.clouds.azure.settings import parse_settings as azure_settings
from provider.clouds.gcp import settings as gcp_settings
from provider.errors import ConfigError


def kube(raw: Mapping[str, Any]) -> Any:
    return config.load(None, env={}, overrides={"kubernetes": raw}).kubernetes


# section parser, a boolean setting, a positive number, a number that may be 0 ("" if none)
SECTIONS: dict[str, tuple[Callable[[Mapping[str, Any]], Any], str, str, str]] = {
    "aws": (
        lambda raw: aws_settings.parse(raw, env={}),
        "allow_node_identity",
        "read_timeout_seconds",
        "pinned_cache_seconds",
    ),
    "gcp": (gcp_settings.parse, "allow_provider_adc", "auth_timeout_seconds", ""),
    "azure": (azure_settings, "allow_vm_managed_identity", "token_timeout_seconds", "retry_total"),
    "kubernetes": (kube, "insecure", "timeout_seconds", "cache_seconds"),
}


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        ("on", True),
        ("Yes", True),
        ("1", True),
        ("off", False),
        ("NO", False),
        (0, False),
    ],
)
def test_booleans_read_alike(section: str, raw: Any, expected: bool) -> None:
    parse, flag, _, _ = SECTIONS[section]
    assert getattr(parse({flag: raw}), flag) is expected


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize("raw", ["maybe", "", 2, 1.5, None])
def test_a_boolean_that_is_not_one_names_the_setting(section: str, raw: Any) -> None:
    parse, flag, _, _ = SECTIONS[section]
    with pytest.raises(ConfigError, match=flag):
        parse({flag: raw})


@pytest.mark.parametrize("section", SECTIONS)
def test_numbers_read_alike(section: str) -> None:
    parse, _, positive, zero_ok = SECTIONS[section]
    assert getattr(parse({positive: "2.5" if positive != "retry_total" else 2}), positive) > 0
    if zero_ok:
        assert getattr(parse({zero_ok: 0}), zero_ok) == 0
        with pytest.raises(ConfigError, match="negative"):
            parse({zero_ok: -1})
    for bad in (0, -1, True, "soon", float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=positive):
            parse({positive: bad})


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_settings_suggest_the_known_one(section: str) -> None:
    parse, flag, _, _ = SECTIONS[section]
    with pytest.raises(ConfigError, match=rf"unknown setting \(did you mean '{flag}'\?\)"):
        parse({flag[:-1]: True})


def test_whole_numbers_have_no_fraction() -> None:
    assert azure_settings({"retry_total": "4"}).retry_total == 4
    with pytest.raises(ConfigError, match="whole number"):
        azure_settings({"retry_total": 2.5})


def test_text_settings_are_text() -> None:
    assert gcp_settings.parse({"project": "  p1 "}).project == "p1"
    with pytest.raises(ConfigError, match="project"):
        gcp_settings.parse({"project": 12})


def test_a_nested_section_cannot_be_spelt_flat() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        aws_settings.parse({"pod_identity_timeout_seconds": 1}, env={})
    got = aws_settings.parse({"pod_identity": {"timeout-seconds": "2"}}, env={})
    assert got.pod_identity_timeout_seconds == 2.0
