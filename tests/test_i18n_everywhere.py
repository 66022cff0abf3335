"""Every text a person reads exists in zh-CN and en and is not the other language:
every message template renders in both locales, the catalogue has no untranslated text,
and reasons and statuses are shown in words (through the catalogue), never as codes."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from bot.conversations.handoff import REASON_PRIORITY
from bot.core.i18n import LOCALES, catalogue
from bot.core.templating import TEMPLATES_DIR, Renderer
from bot.marketing.policy import MARKETING_PURPOSES
from storage.handoff import OPEN_STATUSES

MESSAGES = TEMPLATES_DIR / "messages"
CJK = re.compile(r"[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]")
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
WORD = re.compile(r"(?<![/\w{@.:-])[A-Za-z]{3,}(?![\w}])")
#: English words a Chinese message may contain: command syntax a person types, product
#: and platform names, units.
ALLOWED_IN_ZH = {
    "new", "preview", "pilot", "launch", "pause", "stats", "list", "segment", "tag",
    "template", "coupon", "holdout", "hours", "pin", "off", "birthday", "UTC", "ABCD",
    "WXYZ", "Telegram", "telegram", "VIP", "Siyu", "RFM", "SLA", "buttons", "claim", "add",
}  # fmt: skip
#: Chinese an English message may contain: example values a manager types as they are
#: (tags, cities, RFM groups), and the slot of a Chinese answer in a usage line.
ALLOWED_IN_EN = {"早餐", "杭州", "重要价值", "中文答案"}
#: Catalogue keys that name a language in that language on purpose (the language switch).
SWITCHES = {"inbox.nav.language", "console.locale_name.zh-CN", "console.locale_name.en"}


class Anything(jinja2.ChainableUndefined):
    """A variable that is whatever a template needs (text, number, list, mapping)."""

    def __float__(self) -> float:
        return 0.0

    def __int__(self) -> int:
        return 0

    def __round__(self, digits=None) -> int:
        return 0

    def __call__(self, *args, **kwargs):
        return self

    def _zero(self, *_args):
        return 0

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _zero
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = _zero
    __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: False


def names() -> list[str]:
    return sorted({p.name.split(".")[0] for p in MESSAGES.glob("*.j2")})


def test_every_message_template_exists_in_both_locales():
    for name in names():
        for locale in LOCALES:
            assert (MESSAGES / f"{name}.{locale}.j2").exists(), f"{name}.{locale}.j2 is missing"


@pytest.mark.parametrize("name", names())
def test_every_message_renders_in_both_locales_in_its_own_language(name):
    """Rendered with every variable present (chainable), each locale reads as itself."""
    renderer = Renderer()
    env = renderer.env.overlay(undefined=Anything)
    for locale in LOCALES:
        source = (MESSAGES / f"{name}.{locale}.j2").read_text(encoding="utf-8")
        env.from_string(source).render()  # it compiles and renders
        literal = JINJA.sub(" ", source)
        if locale == "en":
            foreign = set(CJK.findall(literal)) - set("".join(ALLOWED_IN_EN))
            assert not foreign, f"{name}.en.j2 has Chinese: {sorted(foreign)}"
        else:
            english = {w for w in WORD.findall(literal)} - ALLOWED_IN_ZH
            assert not english, f"{name}.zh-CN.j2 has English words: {sorted(english)}"
            assert CJK.search(literal) or not literal.strip(), f"{name}.zh-CN.j2 is not Chinese"


def test_the_catalogue_has_no_untranslated_text():
    problems = []
    for key, texts in catalogue().texts.items():
        if key in SWITCHES:
            continue
        zh, en = texts.get("zh-CN", ""), texts.get("en", "")
        if set(CJK.findall(en)) - set("".join(ALLOWED_IN_EN)):
            problems.append(f"{key}: the English text has Chinese: {en!r}")
        if not CJK.search(zh) and WORD.search(zh) and zh != en:
            problems.append(f"{key}: the Chinese text is English: {zh!r}")
        if zh == en and WORD.search(zh):
            problems.append(f"{key}: the same English text in both locales: {zh!r}")
    assert problems == []


def test_reasons_statuses_and_actions_have_words_in_both_locales():
    cat = catalogue()
    for reason in REASON_PRIORITY:
        assert f"handoff.reason.{reason}" in cat
    for status in (*OPEN_STATUSES, "released", "resolved"):
        assert f"handoff.status.{status}" in cat
    for state in ("bot", "waiting", "staff"):
        assert f"handoff.state.{state}" in cat
    for action in ("flag", "claim", "reply", "note", "transfer", "coupon", "release",
                   "resolve", "rating", "sla_escalated", "redeem"):  # fmt: skip
        assert f"handoff.action.{action}" in cat
    for reason in ("opt_out", "frequency_cap", "duplicate_content", "coupon_unavailable",
                   "render_error", "no_reachable_channel"):  # fmt: skip
        assert f"campaign.drop.{reason}" in cat
    for purpose in MARKETING_PURPOSES:
        assert f"inbox.purpose.{purpose}" in cat
    assert cat.get("handoff.reason.keyword", "zh-CN") == "关键词"
    assert cat.get("handoff.reason.misunderstood", "en") == "the bot did not understand twice"


def test_inbox_templates_say_nothing_outside_the_catalogue():
    """The inbox pages' visible text all comes from t(...): no literal words in them."""
    for path in sorted((TEMPLATES_DIR / "web" / "inbox").glob("*.html")):
        source = path.read_text(encoding="utf-8")
        body = re.sub(r"<style>.*?</style>|<script>.*?</script>", " ", source, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", JINJA.sub(" ", body))
        words = [
            w
            for w in re.findall(r"[A-Za-z]{3,}|[\u4e00-\u9fff]+", text)
            if w not in {"SLA", "Siyu"}
        ]
        assert words == [], f"{path.name}: literal text {words[:5]}"


def test_the_catalogue_folder_is_the_one_the_app_reads():
    assert Path(catalogue().directory) == TEMPLATES_DIR / "i18n"
