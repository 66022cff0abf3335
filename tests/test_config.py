"""Configuration: defaults, validation with precise messages, env overrides, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.app.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "siyu.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults_need_no_file():
    config = load_config(None, environ={})
    assert config.database.url == "sqlite:///var/siyu.db"
    assert config.web.port == 8080
    assert config.sandbox.enabled is None  # on while no real channel is configured
    assert config.roles.managers == []
    assert config.general.locale == "zh-CN"


def test_example_config_is_valid_and_documents_every_section():
    config = load_config(ROOT / "config.example.toml", environ={})
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    for section in (
        "general",
        "database",
        "web",
        "sandbox",
        "delivery",
        "roles",
        "tagging",
        "telegram",
        "logging",
    ):
        assert f"[{section}]" in text or f"[[{section}." in text, section
    assert config.web.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("[web]\nprot = 1\n", "web.prot", "unknown key"),
        ("[web]\nport = 'eighty'\n", "web.port", "expected an integer"),
        ("[web]\nport = 70000\n", "web.port", "out of range"),
        ("[general]\ntimezone = 'Mars/Olympus'\n", "general.timezone", "unknown time zone"),
        ("[general]\nlocale = 'fr'\n", "general.locale", "unsupported locale"),
        (
            "[[tagging.keywords]]\ntag = 'x'\n",
            "tagging.keywords[0].keywords",
            "required key is missing",
        ),
        ("[roles]\nmanagers = ['alice']\n", "roles.managers[0]", "<channel>:<user id>"),
        ("colour = 'red'\n", "colour", "unknown key"),
    ],
)
def test_bad_values_name_file_key_and_problem(tmp_path, body, key, problem):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(path) in str(info.value)


def test_unreadable_toml_is_reported(tmp_path):
    path = write(tmp_path, "[web\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_supplies_secrets_and_scalars(tmp_path):
    path = write(tmp_path, "[web]\nport = 9000\n")
    config = load_config(path, environ={"SIYU_TELEGRAM_TOKEN": "123:abc", "SIYU_WEB_PORT": "9100"})
    assert config.telegram.token == "123:abc"
    assert config.web.port == 9100


def test_bad_environment_value_is_reported():
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"SIYU_WEB_PORT": "abc"})
    assert "SIYU_WEB_PORT" in str(info.value)


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = write(tmp_path, "[general]\ntimezone = 'Nowhere/City'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bot.app.cli", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and "general.timezone" in proc.stderr
    assert "unknown time zone" in proc.stderr
