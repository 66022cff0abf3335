"""The catalogue of short texts: every key exists in zh-CN and en, and lookups choose the
reader's locale."""

from __future__ import annotations

import pytest

from bot.core.i18n import Catalogue, catalogue, normalize_locale, t


def test_every_key_has_both_locales():
    assert catalogue().texts, "the catalogue is empty"
    assert catalogue().missing() == []


def test_lookup_follows_the_readers_locale():
    assert t("common.refused", "zh-CN").startswith("抱歉")
    assert t("common.refused", "en_US").startswith("Sorry")
    assert t("common.refused", None) == t("common.refused", "zh-CN")


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError):
        t("no.such.key", "en")


def test_placeholders_are_filled(tmp_path):
    (tmp_path / "x.toml").write_text('[a.b]\nzh-CN = "你好，{name}"\nen = "Hi {name}"\n')
    cat = Catalogue(tmp_path)
    assert cat.get("a.b", "en", name="Li") == "Hi Li"
    assert cat.get("a.b", "zh", name="李") == "你好，李"


def test_a_key_without_english_is_reported(tmp_path):
    (tmp_path / "x.toml").write_text('[a.b]\nzh-CN = "你好"\n')
    assert Catalogue(tmp_path).missing() == ["a.b"]


@pytest.mark.parametrize("raw,expected", [("zh", "zh-CN"), ("zh_CN", "zh-CN"), ("en-GB", "en")])
def test_locale_names_are_normalized(raw, expected):
    assert normalize_locale(raw) == expected


def test_every_intake_reason_in_the_code_is_in_the_catalogue_in_both_locales():
    """Row rejection reasons (imports, APIs) are catalogue codes said in each locale."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    used = set()
    for path in [*(root / "bot").rglob("*.py")]:
        used |= set(re.findall(r"\"((?:intake|cli\.import)\.[a-z_.]+)\"", path.read_text()))
    used |= {f"intake.order.duplicate_{first}" for first in ("line", "index")}
    assert len(used) > 30, used
    texts = catalogue().texts
    assert sorted(k for k in used if k not in texts) == []
    for key in used:
        assert texts[key]["zh-CN"] != texts[key]["en"], key
        assert set(texts[key]) == {"zh-CN", "en"}, key


def test_a_rejected_row_is_said_in_the_readers_locale():
    from bot.customers.intake import RowError
    from bot.customers.orders import OrderInputError

    kept = RowError.of(4, "o-1", OrderInputError("intake.order.time_future", raw="'2999-01-01'"))
    again = RowError.load(kept.as_dict())
    assert again == kept
    assert again.text("en") == "'time' '2999-01-01' is in the future"
    assert again.text("zh-CN") == "“time”的值 '2999-01-01' 在未来"
