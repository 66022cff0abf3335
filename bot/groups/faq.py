"""FAQ answers: questions asked a hundred times ("怎么退货", "几点发货") answered once.

An entry has a question, keywords (synonyms; the question itself when none are given),
an answer in zh-CN and en (``| 中文答案 || English answer``) or a message template, and
rules: ``where=`` everywhere | private | groups | here (this chat) | ``<channel>:<chat id>``
list; ``groups=`` mention (answer in a group only when the bot is mentioned or replied
to; the default) | always | off; ``cooldown=`` seconds during which the same answer is not
given again in the same chat. ``/faq add|list|del`` and ``siyu faq ...`` call the functions
here.

In a group a question inside its cool-down is left alone (nothing is said). In 1:1 the
customer gets a short pointer to the answer just given instead of the full text again. A
1:1 message no entry matches goes on as before (not understood twice → staff).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import ahocorasick
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.i18n import normalize_locale
from bot.core.templating import Renderer, TemplateRenderError
from bot.groups.errors import GroupsError, about
from bot.groups.spec import split_definition
from storage.db import insert_ignore
from storage.groups import FaqCooldown, FaqEntry

__all__ = [
    "FaqSpec",
    "Match",
    "add_entry",
    "answer_text",
    "delete_entry",
    "faq_spec",
    "find_match",
    "list_entries",
    "parse_faq",
    "record_answer",
    "update_entry",
]

KEYS = frozenset({"keywords", "where", "groups", "cooldown", "template", "en"})
SCOPES = ("everywhere", "private", "groups")
GROUP_MODES = ("mention", "always", "off")
MAX_QUESTION = 200
MAX_KEYWORDS = 30
MAX_KEYWORD = 50
MAX_ANSWER = 3000
MAX_CHATS = 50
MAX_COOLDOWN = 7 * 24 * 3600


@dataclass(frozen=True)
class FaqSpec:
    """A checked FAQ definition."""

    question: str
    keywords: tuple[str, ...]
    answer_zh: str | None
    answer_en: str | None
    template: str | None
    scope: str
    chats: tuple[str, ...]
    group_mode: str
    cooldown_seconds: int


def parse_faq(
    line: str, renderer: Renderer, config: Config, here: tuple[str, str] | None = None
) -> FaqSpec:
    """Read ``QUESTION key=value ... | 中文答案 || English answer``; ``here`` is the chat
    the command was given in (for ``where=here``)."""
    d = split_definition(line, KEYS)
    if not d.words:
        raise GroupsError("groups.faq.usage")
    zh, _, en = d.text.partition("||")
    return faq_spec(" ".join(d.words), d.options, zh, en, renderer, config, here)


def faq_spec(
    question: str,
    options: dict[str, str],
    answer_zh: str,
    answer_en: str,
    renderer: Renderer,
    config: Config,
    here: tuple[str, str] | None = None,
) -> FaqSpec:
    """Check an entry given as its parts (the console's form; :func:`parse_faq` for a
    line): ``options`` are the ``key=value`` pairs of :data:`KEYS`. A :class:`GroupsError`
    names the field it is about (``question``, ``keywords``, ``answer_zh``, ...)."""
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise GroupsError("groups.error.unknown_key", key=unknown[0], keys=", ".join(sorted(KEYS)))
    question = question.strip()
    with about("question"):
        if not question:
            raise GroupsError("groups.faq.usage")
        if len(question) > MAX_QUESTION:
            raise GroupsError("groups.error.field_too_long", field="question", limit=MAX_QUESTION)
    o = options
    raw_keywords = o.get("keywords") or question
    keywords = tuple(
        dict.fromkeys(
            k.strip().lower() for k in raw_keywords.replace("，", ",").split(",") if k.strip()
        )
    )
    with about("keywords"):
        if len(keywords) > MAX_KEYWORDS or any(len(k) > MAX_KEYWORD for k in keywords):
            raise GroupsError("groups.faq.error.keywords", count=MAX_KEYWORDS, limit=MAX_KEYWORD)
    zh, en = answer_zh.strip() or None, (answer_en.strip() or o.get("en") or None)
    template = o.get("template") or None
    with about("answer_zh"):
        if template is None and not zh and not en:
            raise GroupsError("groups.faq.error.answer")
    with about("template"):
        if template is not None and (zh or en):
            raise GroupsError("groups.faq.error.answer")
    for field_name, answer in (("answer_zh", zh), ("answer_en", en)):
        with about(field_name):
            if answer and len(answer) > MAX_ANSWER:
                raise GroupsError("groups.error.field_too_long", field="answer", limit=MAX_ANSWER)
            try:
                if answer:
                    renderer.render_string(answer, name="…")
            except TemplateRenderError as exc:
                raise GroupsError("groups.faq.error.render", problem=exc.problem) from None
    with about("template"):
        try:
            if template is not None:
                renderer.template_name(template, "zh-CN")
                renderer.render(template, "zh-CN", name="…")
        except TemplateRenderError as exc:
            raise GroupsError("groups.faq.error.render", problem=exc.problem) from None
    with about("where"):
        scope, chats = _where(o.get("where", "everywhere"), here)
    mode = (o.get("groups") or "mention").lower()
    with about("groups"):
        if mode not in GROUP_MODES:
            raise GroupsError("groups.faq.error.mode", value=mode, modes=", ".join(GROUP_MODES))
    cooldown = config.groups.faq_cooldown_seconds
    if "cooldown" in o:
        try:
            cooldown = int(o["cooldown"])
        except ValueError:
            cooldown = -1
        with about("cooldown"):
            if not 0 <= cooldown <= MAX_COOLDOWN:
                raise GroupsError("groups.faq.error.cooldown", limit=MAX_COOLDOWN)
    return FaqSpec(question, keywords, zh, en, template, scope, chats, mode, cooldown)


def _where(value: str, here: tuple[str, str] | None) -> tuple[str, tuple[str, ...]]:
    value = value.strip().lower() if value.strip().lower() in (*SCOPES, "here") else value.strip()
    if value in SCOPES:
        return value, ()
    if value == "here":
        if here is None:
            raise GroupsError("groups.faq.error.here")
        return "chats", (f"{here[0]}:{here[1]}",)
    chats = tuple(
        dict.fromkeys(c.strip() for c in value.replace("，", ",").split(",") if c.strip())
    )
    if not chats or len(chats) > MAX_CHATS or any(":" not in c or len(c) > 150 for c in chats):
        raise GroupsError("groups.faq.error.where", value=value)
    return "chats", chats


def add_entry(
    session: Session, spec: FaqSpec, *, config: Config, now: datetime, created_by: str
) -> FaqEntry:
    count = session.scalar(select(func.count()).select_from(FaqEntry))
    if (count or 0) >= config.groups.max_faq_entries:
        raise GroupsError("groups.faq.error.too_many", limit=config.groups.max_faq_entries)
    entry = FaqEntry(hits=0, enabled=True, created_by=created_by[:128], created_at=now)
    _define(entry, spec)
    session.add(entry)
    session.flush()
    _changed()
    return entry


def _define(entry: FaqEntry, spec: FaqSpec) -> None:
    """Copy a checked definition onto an entry row."""
    entry.question = spec.question
    entry.keywords = list(spec.keywords)
    entry.answer_zh = spec.answer_zh
    entry.answer_en = spec.answer_en
    entry.template = spec.template
    entry.scope = spec.scope
    entry.chats = list(spec.chats)
    entry.group_mode = spec.group_mode
    entry.cooldown_seconds = spec.cooldown_seconds


def update_entry(session: Session, entry_id: int, spec: FaqSpec) -> FaqEntry:
    """Change entry ``entry_id`` to ``spec``, keeping its hits."""
    entry = session.get(FaqEntry, entry_id)
    if entry is None:
        raise GroupsError("groups.faq.error.no_entry", id=entry_id)
    _define(entry, spec)
    session.flush()
    _changed()
    return entry


def list_entries(session: Session) -> list[FaqEntry]:
    return list(session.scalars(select(FaqEntry).order_by(FaqEntry.id)))


def delete_entry(session: Session, entry_id: int) -> FaqEntry:
    entry = session.get(FaqEntry, entry_id)
    if entry is None:
        raise GroupsError("groups.faq.error.no_entry", id=entry_id)
    session.delete(entry)
    session.flush()
    _changed()
    return entry


@dataclass(frozen=True)
class _Rule:
    id: int
    scope: str
    chats: frozenset[str]
    group_mode: str


def _key(text: str) -> str:
    """Lower-cased UTF-8 bytes as a latin-1 str (the automaton's fastest mode for CJK)."""
    return text.lower().encode("utf-8").decode("latin-1")


class _Index:
    """Every enabled entry's keywords in one Aho-Corasick automaton (lower-cased UTF-8
    bytes): one pass over a message finds every keyword in it, whatever the entry count."""

    def __init__(self, entries: list[FaqEntry]) -> None:
        self.rules: dict[int, _Rule] = {}
        words: dict[str, list[tuple[int, int]]] = {}
        for e in entries:
            self.rules[e.id] = _Rule(e.id, e.scope, frozenset(e.chats or ()), e.group_mode)
            for k in e.keywords or ():
                if k.strip():
                    words.setdefault(_key(k.strip()), []).append((e.id, len(k.strip())))  # fmt: skip
        self.automaton = ahocorasick.Automaton()
        for word, targets in words.items():
            self.automaton.add_word(word, tuple(targets))
        self.empty = not words
        if not self.empty:
            self.automaton.make_automaton()

    def hits(self, text: str) -> dict[int, int]:
        """Entry id → length of its longest keyword found in ``text``."""
        found: dict[int, int] = {}
        if self.empty:
            return found
        for _end, targets in self.automaton.iter(_key(text)):
            for entry_id, length in targets:
                if length > found.get(entry_id, 0):
                    found[entry_id] = length
        return found


#: The index per database, rebuilt after CACHE_SECONDS (another process's changes show
#: within that time) or at once after a change in this process.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[int, float, _Index]] = {}
_generation = 0


def _changed() -> None:
    global _generation
    _generation += 1


def _index(session: Session) -> _Index:
    key = str(session.get_bind().engine.url)
    cached = _cache.get(key)
    now = time.monotonic()
    if cached is not None and cached[0] == _generation and now - cached[1] < CACHE_SECONDS:
        return cached[2]
    index = _Index(list(session.scalars(select(FaqEntry).where(FaqEntry.enabled.is_(True)))))
    _cache[key] = (_generation, now, index)
    return index


@dataclass(frozen=True)
class Match:
    """The entry a message asks about, and whether its cool-down in this chat is running."""

    entry_id: int
    cooling: bool


def find_match(
    session: Session,
    *,
    channel: str,
    chat_id: str,
    in_group: bool,
    mentions_bot: bool,
    text: str,
    now: datetime,
) -> Match | None:
    """The FAQ entry this message asks about here, if its rules let it answer here.

    The longest keyword found in the text wins (ties: the oldest entry).
    """
    if not text.strip():
        return None
    index = _index(session)
    chat = f"{channel}:{chat_id}"
    best: tuple[int, int] | None = None
    for entry_id, length in index.hits(text).items():
        rule = index.rules[entry_id]
        if rule.scope == "chats":
            if chat not in rule.chats:
                continue
        elif rule.scope == ("private" if in_group else "groups"):
            continue
        if in_group and (
            rule.group_mode == "off" or (rule.group_mode == "mention" and not mentions_bot)
        ):
            continue
        if best is None or (length, -entry_id) > (best[0], -best[1]):
            best = (length, entry_id)
    if best is None:
        return None
    entry = session.get(FaqEntry, best[1])
    if entry is None:  # deleted by another process since the cache was filled
        return None
    last = session.scalar(
        select(FaqCooldown.answered_at).where(
            FaqCooldown.entry_id == entry.id,
            FaqCooldown.channel == channel,
            FaqCooldown.chat_id == chat_id,
        )
    )
    cooling = last is not None and now < last + timedelta(seconds=entry.cooldown_seconds)
    return Match(entry.id, cooling)


def answer_text(entry: FaqEntry, locale: str | None, renderer: Renderer, name: str) -> str:
    """The answer in the reader's locale (the other one if only that one is written)."""
    loc = normalize_locale(locale)
    if entry.template:
        return renderer.render(entry.template, loc, name=name)
    first, second = (
        (entry.answer_en, entry.answer_zh) if loc == "en" else (entry.answer_zh, entry.answer_en)
    )
    return renderer.render_string(first or second or "", name=name)


def record_answer(
    session: Session, entry: FaqEntry, channel: str, chat_id: str, now: datetime, *, answered: bool
) -> None:
    """Count the hit (every time the question is asked); an answer given (re)starts the
    cool-down in this chat."""
    entry.hits += 1
    entry.last_hit_at = now
    if not answered:
        return
    key = {"entry_id": entry.id, "channel": channel, "chat_id": chat_id}
    if not insert_ignore(session, FaqCooldown, key | {"answered_at": now}, list(key)):
        row = session.get(FaqCooldown, (entry.id, channel, chat_id))
        assert row is not None  # the insert above found it there
        row.answered_at = now
