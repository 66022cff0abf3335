"""Flow files: the shipped flow loads; bad files fail with the file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.conversations.flows import FlowError, load_flows
from bot.core.templating import Renderer

GOOD = """
name = "mini"
[triggers]
keywords = ["hi"]
[[steps]]
id = "ask"
kind = "integer"
prompt = "trip_party"
min = 1
next = "done"
[[steps]]
id = "done"
kind = "end"
prompt = "flow_resume"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "f.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_shipped_flow_loads_with_its_triggers():
    library = load_flows(None, Renderer())
    flow = library["weekend_trip_inquiry"]
    assert list(flow.steps) == ["destination", "dates", "party_size", "offer", "group_offer"]
    assert library.by_keyword("周末去哪玩呢") is flow
    assert library.by_command("trip") is flow
    assert library.by_button("flow:weekend_trip_inquiry") == (flow, None, None)
    assert flow.steps["party_size"].next_step({"party_size": 6}) == "group_offer"
    assert flow.steps["party_size"].next_step({"party_size": 5}) == "offer"


def test_a_minimal_flow_loads(tmp_path):
    assert list(load_flows(write(tmp_path, GOOD), Renderer()).flows) == ["mini"]


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('next = "done"', 'next = "nowhere"'), "steps[0].next", "unknown step 'nowhere'"),
        (('kind = "integer"', 'kind = "essay"'), "steps[0].kind", "'essay' is not one of"),
        (('prompt = "trip_party"', 'prompt = "no_such"'), "steps[0].prompt", "no message template"),
        (("min = 1", 'min = "one"'), "steps[0].min", "expected int, got str"),
        (('name = "mini"', 'name = "Mini Flow"'), "name", "lowercase"),
        (('id = "done"', 'id = "ask"'), "steps[1].id", "duplicate step id"),
        (("min = 1", 'colour = "red"'), "steps[0].colour", "unknown key"),
    ],
)
def test_bad_flow_files_say_where_and_what(tmp_path, change, key, problem):
    with pytest.raises(FlowError) as info:
        load_flows(write(tmp_path, GOOD.replace(*change)), Renderer())
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(tmp_path / "f.toml") in str(info.value)


def test_invalid_toml_is_reported(tmp_path):
    with pytest.raises(FlowError, match="not valid TOML"):
        load_flows(write(tmp_path, "name = "), Renderer())
