"""The customer engine's config sections are checked across keys, with precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app.config import ConfigError, load_config


def _load(tmp_path: Path, text: str):
    path = tmp_path / "siyu.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            "[lifecycle]\ndormant_days = 180\nchurned_days = 180\n",
            "lifecycle.churned_days",
            "must be greater than dormant_days (180), got 180",
        ),
        (
            '[[tiers.levels]]\nname = "金卡"\nmin_spend = 5000\n'
            '[[tiers.levels]]\nname = "银卡"\nmin_spend = 1000\n',
            "tiers.levels[1].min_spend",
            "tiers go from lowest to highest: 1000 must be greater than levels[0].min_spend (5000)",
        ),
        (
            '[[tiers.levels]]\nname = "银卡"\nmin_spend = 1000\n'
            '[[tiers.levels]]\nname = "银卡"\nmin_spend = 2000\n',
            "tiers.levels[1].name",
            "'银卡' is already the name of levels[0]",
        ),
        (
            '[[tiers.levels]]\nname = "none"\nmin_spend = 1000\n',
            "tiers.levels[0].name",
            "'none' is reserved (tier:none means no tier)",
        ),
        (
            '[[rfm.groups]]\nname = "A"\nr = "high"\n[[rfm.groups]]\nname = "A"\nr = "low"\n',
            "rfm.groups[1].name",
            "'A' is already the name of groups[0]",
        ),
        (
            '[[rfm.groups]]\nname = "all"\n[[rfm.groups]]\nname = "vip"\nr = "high"\n',
            "rfm.groups[1]",
            "'vip' can never match: groups[0] ('all', r=any f=any m=any) is tried first "
            "and covers it",
        ),
        (
            '[[rfm.groups]]\nname = "' + "x" * 33 + '"\n',
            "rfm.groups[0].name",
            "must be 1-32 characters",
        ),
        (
            '[[rfm.groups]]\nname = "A"\nr = "medium"\n',
            "rfm.groups[0].r",
            "must be 'high', 'low' or 'any'",
        ),
        (
            '[[tagging.keywords]]\ntag = "t"\nkeywords = ["k"]\nweight = -1\n',
            "tagging.keywords[0].weight",
            "must be greater than 0 and at most 1000, got -1.0",
        ),
        (
            "[tagging]\ninterest_half_life_days = -3\n",
            "tagging.interest_half_life_days",
            "must be >= 0, got -3.0",
        ),
    ],
)
def test_bad_customer_settings_name_the_key_and_the_problem(tmp_path, text, key, problem):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key
    assert info.value.problem.startswith(problem)


def test_sensible_customer_settings_load(tmp_path):
    config = _load(
        tmp_path,
        "[lifecycle]\ndormant_days = 60\nchurned_days = 120\n"
        '[[tiers.levels]]\nname = "会员"\nmin_spend = 100\n'
        '[[tiers.levels]]\nname = "VIP"\nmin_spend = 3000\n'
        '[[rfm.groups]]\nname = "vip"\nr = "high"\nm = "high"\n'
        '[[rfm.groups]]\nname = "rest"\n',
    )
    assert (config.lifecycle.churned_days, [t.name for t in config.tiers.levels]) == (
        120,
        ["会员", "VIP"],
    )
    assert [g.name for g in config.rfm.groups] == ["vip", "rest"]
