"""provider.config: defaults, precedence (file < environment < flags) and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provider import config
from provider.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keyferry.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = config.load(env={})
    assert cfg.socket_dir == Path("/var/run/secrets-store-csi-providers")
    assert dict(cfg.providers) == {"keyferry": "native"}
    assert cfg.socket_mode == 0o600
    assert cfg.http_address == "0.0.0.0:8095"
    assert cfg.max_response_bytes == 4 * 1024 * 1024
    assert cfg.max_concurrent_fetches > 0
    assert cfg.mount_timeout_seconds < 120
    assert cfg.local_root is None
    assert cfg.hmac_key_file is None
    assert cfg.kubernetes == config.KubeConfig()
    assert dict(cfg.backends) == {}
    assert cfg.dialect_for("keyferry") == "native"


def test_empty_config_file_gives_defaults(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, ""), env={}) == config.load(env={})


def test_unrelated_environment_is_ignored() -> None:
    cfg = config.load(env={"HOME": "/root", "SOCKET_DIR": "/x", "KEYFERRY": "y"})
    assert cfg == config.load(env={})


# --- precedence ----------------------------------------------------------------------------


def test_file_sets_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "socket_dir: /from/file\nsocket-mode: 0660\nproviders: [keyferry, aws]\n"
        "cache_ttl_seconds: 5\nlocal_root: /srv/secrets\n",
    )
    cfg = config.load(path, env={})
    assert cfg.socket_dir == Path("/from/file")
    assert cfg.socket_mode == 0o660
    assert dict(cfg.providers) == {"keyferry": "native", "aws": "aws"}
    assert cfg.cache_ttl_seconds == 5.0
    assert cfg.local_root == Path("/srv/secrets")


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "socket_dir: /from/file\nlog_level: debug\n")
    cfg = config.load(path, env={"KEYFERRY_SOCKET_DIR": "/from/env"})
    assert cfg.socket_dir == Path("/from/env")
    assert cfg.log_level == "debug"


def test_overrides_win_over_environment_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "socket_dir: /from/file\nmax_concurrent_fetches: 2\n")
    cfg = config.load(
        path,
        env={"KEYFERRY_SOCKET_DIR": "/from/env", "KEYFERRY_MAX_CONCURRENT_FETCHES": "3"},
        overrides={"socket_dir": "/from/flag"},
    )
    assert cfg.socket_dir == Path("/from/flag")
    assert cfg.max_concurrent_fetches == 3


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "socket_dir: /from/file\n")
    cfg = config.load(path, env={}, overrides={"socket_dir": None, "providers": None})
    assert cfg.socket_dir == Path("/from/file")
    assert dict(cfg.providers) == {"keyferry": "native"}


def test_environment_providers() -> None:
    cfg = config.load(env={"KEYFERRY_PROVIDERS": "keyferry,gcp"})
    assert dict(cfg.providers) == {"keyferry": "native", "gcp": "gcp"}


def test_environment_values_are_coerced() -> None:
    cfg = config.load(
        env={
            "KEYFERRY_MAX_RESPONSE_BYTES": "1048576",
            "KEYFERRY_GRACE_SECONDS": "2.5",
            "KEYFERRY_SOCKET_MODE": "0o660",
            "KEYFERRY_HTTP_ADDRESS": "",
        }
    )
    assert cfg.max_response_bytes == 1048576
    assert cfg.grace_seconds == 2.5
    assert cfg.socket_mode == 0o660
    assert cfg.http_address == ""


def test_environment_uses_the_given_mapping_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYFERRY_SOCKET_DIR", "/from/os")
    assert config.load(env={}).socket_dir == config.DEFAULT_SOCKET_DIR
    assert config.load().socket_dir == Path("/from/os")


@pytest.mark.parametrize("text", ["0600", "0660", "0o600", "384"])
def test_socket_mode_written_as_the_help_text_suggests(text: str) -> None:
    # `keyferry serve --socket-mode 0600` (the flag's own help: "e.g. 0600 or 0660") and
    # KEYFERRY_SOCKET_MODE=0600 must work.
    expected = 0o660 if text == "0660" else 0o600
    assert config.load(env={}, overrides={"socket_mode": text}).socket_mode == expected
    assert config.load(env={"KEYFERRY_SOCKET_MODE": text}).socket_mode == expected


def test_empty_socket_dir_is_rejected_or_keeps_a_path() -> None:
    try:
        cfg = config.load(env={"KEYFERRY_SOCKET_DIR": ""})
    except ConfigError:
        return
    assert isinstance(cfg.socket_dir, Path)


def test_empty_optional_paths_mean_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "local_root: /x\nhmac_key_file: /k\n")
    cfg = config.load(path, env={"KEYFERRY_LOCAL_ROOT": "", "KEYFERRY_HMAC_KEY_FILE": ""})
    assert cfg.local_root is None
    assert cfg.hmac_key_file is None


# --- providers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("keyferry", {"keyferry": "native"}),
        ("keyferry,aws", {"keyferry": "native", "aws": "aws"}),
        (" keyferry , aws ,, ", {"keyferry": "native", "aws": "aws"}),
        ("x=aws", {"x": "aws"}),
        ("kf=native,secrets-gcp=gcp", {"kf": "native", "secrets-gcp": "gcp"}),
        ("keyferry=", {"keyferry": "native"}),
        ({"kf": "native", "az": "azure"}, {"kf": "native", "az": "azure"}),
        (["keyferry", "azure", "g=gcp"], {"keyferry": "native", "azure": "azure", "g": "gcp"}),
        ("a" * 30 + "=native", {"a" * 30: "native"}),
        ("Under_score-1=aws", {"Under_score-1": "aws"}),
    ],
)
def test_parse_providers(value: Any, expected: dict[str, str]) -> None:
    assert config.parse_providers(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("keyferry.io=native", "no dots"),
        ("a" * 31 + "=native", "30"),
        ("has space=aws", "must match"),
        ("=aws", "must match"),
        ("sock/et=aws", "must match"),
        ("vault", "unknown dialect"),
        ("x=vault", "unknown dialect"),
        ({"x": "Native"}, "unknown dialect"),
        ("aws,aws", "twice"),
        ("", "at least one"),
        (",,", "at least one"),
        ([], "at least one"),
        (5, "expected a list"),
        (None, "expected a list"),
    ],
)
def test_bad_providers_are_config_errors(value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse_providers(value)
    assert expected in str(err.value)


def test_bad_providers_in_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dialect"):
        config.load(write(tmp_path, "providers: {x: vault}\n"), env={})


def test_bad_providers_in_environment_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no dots"):
        config.load(env={"KEYFERRY_PROVIDERS": "my.provider"})


# --- unknown settings and bad types --------------------------------------------------------


def test_unknown_setting_in_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, "socket_dri: /x\n"), env={})
    assert "socket_dri" in str(err.value)
    assert "keyferry.yaml" in str(err.value)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        config.load(env={}, overrides={"nope": 1})


def test_unknown_kubernetes_setting_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kubernetes\.api_ulr"):
        config.load(write(tmp_path, "kubernetes:\n  api_ulr: https://x\n"), env={})


@pytest.mark.parametrize(
    "text",
    [
        "socket_mode: fast\n",
        "socket_mode: true\n",
        "socket_mode: [1]\n",
        "max_response_bytes: lots\n",
        "max_concurrent_fetches: ''\n",
        "grace_seconds: soon\n",
        "cache_ttl_seconds: [1]\n",
        "socket_dir: 5\n",
        "local_root: {a: b}\n",
        "kubernetes: yes-please\n",
        "kubernetes:\n  insecure: maybe\n",
        "kubernetes:\n  cache_seconds: never\n",
        "backends: [aws]\n",
        "backends:\n  aws: region\n",
    ],
)
def test_bad_types_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        config.load(write(tmp_path, text), env={})


@pytest.mark.parametrize(
    "text",
    [
        "socket_mode: 0o1000\n",
        "socket_mode: -1\n",
        "max_response_bytes: 0\n",
        "max_concurrent_fetches: -3\n",
        "stale_if_error_seconds: -1\n",
        "fail_fast_threshold: -1\n",
        "fail_fast_seconds: -0.5\n",
        "fail_fast_max_seconds: -30\n",
        "cache_ttl_seconds: -1\n",
    ],
)
def test_out_of_range_values_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        config.load(write(tmp_path, text), env={})


def test_file_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        config.load(write(tmp_path, "- a\n- b\n"), env={})


def test_invalid_yaml_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "a: [b\n"), env={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file"):
        config.load(tmp_path / "absent.yaml", env={})


def test_fail_fast_is_on_and_last_known_good_off_by_default() -> None:
    cfg = config.load(env={})
    assert cfg.stale_if_error_seconds == 0
    assert cfg.fail_fast_threshold == 3
    assert 0 < cfg.fail_fast_seconds <= cfg.fail_fast_max_seconds


def test_outage_settings_come_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "stale_if_error_seconds: 300\nfail_fast_threshold: 0\n")
    cfg = config.load(path, env={"KEYFERRY_FAIL_FAST_MAX_SECONDS": "120"})
    assert cfg.stale_if_error_seconds == 300.0
    assert cfg.fail_fast_threshold == 0
    assert cfg.fail_fast_max_seconds == 120.0


# --- nested sections -----------------------------------------------------------------------


def test_kubernetes_section_is_merged_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "kubernetes:\n  api-url: https://k8s:6443\n  insecure: 'yes'\n")
    cfg = config.load(path, env={})
    assert cfg.kubernetes.api_url == "https://k8s:6443"
    assert cfg.kubernetes.insecure is True
    assert cfg.kubernetes.token_file == config.KubeConfig().token_file


def test_backend_sections_merge_across_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "backends:\n  aws:\n    region: eu-west-1\n    sts: a\n")
    cfg = config.load(
        path, env={}, overrides={"backends": {"aws": {"sts": "b"}, "gcp": {"project": "p"}}}
    )
    assert dict(cfg.backends["aws"]) == {"region": "eu-west-1", "sts": "b"}
    assert dict(cfg.backends["gcp"]) == {"project": "p"}


def test_config_is_immutable() -> None:
    cfg = config.load(env={})
    with pytest.raises(AttributeError):
        cfg.socket_mode = 0o777  # type: ignore[misc]
