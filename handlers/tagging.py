"""Automatic tagging by interaction: keyword, event and activity rules.

Rules come from config (``[[tagging.keywords]]``, ``[[tagging.events]]``,
``[[tagging.activity]]``) and from the database (``/rule add``; storage/tag_rules.py).
Every tag a rule gives records the rule as its source (``rule:keyword:0`` for the first
keyword rule in config, ``rule:db:17`` for database rule 17) and its time-to-live. Keyword
and event hits also add the rule's ``weight`` to the customer's decaying interest score for
the tag (storage/tag_scores.py; ``tagscore:`` in segments).

- **Keywords:** many rules are matched in one pass with an Aho-Corasick automaton
  (pyahocorasick), not a loop of ``in``. Text is lower-cased and matched as UTF-8 bytes
  (each byte one latin-1 character: ~4× faster than matching the str, and exact, since
  UTF-8 matches can only start on character boundaries). A rule fires when one of its
  keywords occurs and none of its exclusions do.
- **Events:** ``join`` a group (chat id or title), press a ``button`` (data; ``x*`` is a
  prefix), come from a ``scene`` (WeChat QR scene / WeCom contact-way state in the event's
  raw ``scene``/``state``, or a Telegram ``/start <payload>``); ``coupon`` and ``link``
  are applied by those features through :func:`apply_event_rules`. Value ``*`` = any.
- **Activity:** ≥ N messages within D days in a group gives the tag with a time-to-live of
  ``silent_days``; each qualifying message renews it, so a customer silent that long loses
  it (expired tags are invisible at once and purged by ``scheduler.customer_jobs.purge_expired_tags``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import ahocorasick
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.app.config import Config, KeywordRule
from bot.core.context import Context
from bot.core.events import ChatType, Event, EventKind
from storage import repos
from storage.models import Group, Interaction
from storage.tag_rules import TagRule, active_rules, rules_version
from storage.tag_scores import bump_interest

__all__ = [
    "ActivitySpec",
    "EventSpec",
    "KeywordMatcher",
    "KeywordSpec",
    "RuleHit",
    "TaggingRules",
    "activity_tagging",
    "apply_event_rules",
    "event_tagging",
    "event_trigger",
    "keyword_tagging",
]

#: How often a running process looks for rules changed by another process (seconds).
RELOAD_SECONDS = 10.0


@dataclass(frozen=True)
class RuleHit:
    """A rule that fired: which tag, from which rule, for how long."""

    rule_id: str
    tag: str
    ttl: timedelta | None
    weight: float = 1.0


@dataclass(frozen=True)
class KeywordSpec:
    """A keyword rule with its id (config or database)."""

    rule_id: str
    tag: str
    keywords: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    ttl_days: int = 0
    weight: float = 1.0


@dataclass(frozen=True)
class EventSpec:
    """An event rule with its id."""

    rule_id: str
    tag: str
    trigger: str
    value: str = "*"
    ttl_days: int = 0
    weight: float = 1.0

    def matches(self, trigger: str, value: str) -> bool:
        if trigger != self.trigger:
            return False
        if self.value == "*":
            return True
        if self.value.endswith("*"):
            return value.startswith(self.value[:-1])
        return value == self.value


@dataclass(frozen=True)
class ActivitySpec:
    """An activity rule with its id."""

    rule_id: str
    tag: str
    min_messages: int
    days: int
    group: str = "*"
    silent_days: int = 30


def _ttl(days: int) -> timedelta | None:
    return timedelta(days=days) if days else None


def _bytes_key(text: str) -> str:
    return text.lower().encode("utf-8").decode("latin-1")


class KeywordMatcher:
    """Matches many keyword rules (with exclusions) against a text in one pass."""

    def __init__(self, rules: Iterable[KeywordRule | KeywordSpec]) -> None:
        self.rules: list[KeywordSpec] = [
            r
            if isinstance(r, KeywordSpec)
            else KeywordSpec(
                f"keyword:{i}", r.tag, tuple(r.keywords), tuple(r.exclude), r.ttl_days, r.weight
            )
            for i, r in enumerate(rules)
        ]
        self._automaton = ahocorasick.Automaton()
        entries: dict[str, list[tuple[int, bool]]] = {}
        for index, rule in enumerate(self.rules):
            for words, is_exclusion in ((rule.keywords, False), (rule.exclude, True)):
                for word in words:
                    if word.strip():
                        entries.setdefault(_bytes_key(word.strip()), []).append(
                            (index, is_exclusion)
                        )
        for word, targets in entries.items():
            self._automaton.add_word(word, tuple(targets))
        self._empty = not entries
        if not self._empty:
            self._automaton.make_automaton()

    def match(self, text: str) -> list[RuleHit]:
        """The rules that fire on ``text``, in rule order."""
        if self._empty or not text:
            return []
        hits: set[int] = set()
        excluded: set[int] = set()
        for _end, targets in self._automaton.iter(_bytes_key(text)):
            for index, is_exclusion in targets:
                (excluded if is_exclusion else hits).add(index)
        return [
            RuleHit(
                rule_id=self.rules[i].rule_id,
                tag=self.rules[i].tag,
                ttl=_ttl(self.rules[i].ttl_days),
                weight=self.rules[i].weight,
            )
            for i in sorted(hits - excluded)
        ]


def _from_db(row: TagRule) -> KeywordSpec | EventSpec | ActivitySpec:
    spec, rid = row.spec or {}, f"db:{row.id}"
    if row.kind == "keyword":
        return KeywordSpec(
            rid,
            row.tag,
            tuple(spec.get("keywords", ())),
            tuple(spec.get("exclude", ())),
            row.ttl_days,
            row.weight,
        )
    if row.kind == "event":
        return EventSpec(
            rid, row.tag, spec.get("trigger", ""), spec.get("value", "*"), row.ttl_days, row.weight
        )
    return ActivitySpec(
        rid,
        row.tag,
        int(spec.get("min_messages", 5)),
        int(spec.get("days", 7)),
        spec.get("group", "*"),
        int(spec.get("silent_days", 30)),
    )


class TaggingRules:
    """The rules in force: config rules plus database rules, reloaded when they change.

    A process that changes rules calls :meth:`invalidate`; other processes notice within
    ``RELOAD_SECONDS`` (one cheap version query, not one per message).
    """

    def __init__(self, config: Config, reload_seconds: float = RELOAD_SECONDS) -> None:
        tagging = config.tagging
        self._config_keywords = [
            KeywordSpec(
                f"keyword:{i}", r.tag, tuple(r.keywords), tuple(r.exclude), r.ttl_days, r.weight
            )
            for i, r in enumerate(tagging.keywords)
        ]
        self._config_events = [
            EventSpec(f"event:{i}", r.tag, r.trigger, r.value, r.ttl_days, r.weight)
            for i, r in enumerate(tagging.events)
        ]
        self._config_activity = [
            ActivitySpec(f"activity:{i}", r.tag, r.min_messages, r.days, r.group, r.silent_days)
            for i, r in enumerate(tagging.activity)
        ]
        self.half_life_days = tagging.interest_half_life_days
        self.reload_seconds = reload_seconds
        self._lock = threading.Lock()
        self._version: tuple | None = None
        self._checked = float("-inf")
        self.matcher = KeywordMatcher(self._config_keywords)
        self.events: list[EventSpec] = list(self._config_events)
        self.activity: list[ActivitySpec] = list(self._config_activity)

    def invalidate(self) -> None:
        with self._lock:
            self._checked = float("-inf")
            self._version = None

    def refresh(self, session: Session) -> None:
        """Reload database rules if they changed (checked at most every reload_seconds)."""
        now = time.monotonic()
        if now - self._checked < self.reload_seconds:
            return
        version = rules_version(session)
        with self._lock:
            self._checked = now
            if version == self._version:
                return
            specs = [_from_db(r) for r in active_rules(session)]
            self.matcher = KeywordMatcher(
                self._config_keywords + [s for s in specs if isinstance(s, KeywordSpec)]
            )
            self.events = self._config_events + [s for s in specs if isinstance(s, EventSpec)]
            self.activity = self._config_activity + [
                s for s in specs if isinstance(s, ActivitySpec)
            ]
            self._version = version


def event_trigger(event: Event) -> tuple[str, str] | None:
    """The (trigger, value) an inbound event stands for, if any rule could use it."""
    if event.kind is EventKind.JOIN:
        return "join", event.ref.chat_id
    if event.kind is EventKind.BUTTON and event.button_data:
        return "button", event.button_data
    if event.kind in (EventKind.SUBSCRIBE, EventKind.CONTACT_ADDED):
        scene = event.raw.get("scene") or event.raw.get("state") or ""
        return "scene", str(scene)
    if event.kind is EventKind.COMMAND and event.command == "start" and event.args:
        return "scene", event.args[0]
    return None


def apply_event_rules(
    session: Session,
    rules: TaggingRules,
    customer_id: int,
    trigger: str,
    value: str,
    now: datetime,
    *,
    alias: str = "",
) -> list[str]:
    """Tag a customer for an event (also for coupons redeemed and links opened by other
    features); returns the tags given. ``alias`` is a second value that may match (a
    group's title besides its chat id)."""
    given = []
    for rule in rules.events:
        if rule.matches(trigger, value) or (alias and rule.matches(trigger, alias)):
            repos.add_tag(
                session,
                customer_id,
                rule.tag,
                source=f"rule:{rule.rule_id}",
                now=now,
                ttl=_ttl(rule.ttl_days),
            )
            bump_interest(
                session,
                customer_id,
                rule.tag,
                rule.weight,
                now,
                half_life_days=rules.half_life_days,
            )
            given.append(rule.tag)
    return given


def keyword_tagging(matcher_or_rules: KeywordMatcher | TaggingRules):
    """A handler that tags the customer for every keyword rule their message fires, and
    for activity rules when the message is in a group."""

    def tag_by_keywords(ctx: Context) -> None:
        if isinstance(matcher_or_rules, TaggingRules):
            matcher_or_rules.refresh(ctx.session)
            matcher = matcher_or_rules.matcher
        else:
            matcher = matcher_or_rules
        half_life = (
            matcher_or_rules.half_life_days
            if isinstance(matcher_or_rules, TaggingRules)
            else ctx.config.tagging.interest_half_life_days
        )
        assert ctx.customer is not None  # the customer middleware ran
        for hit in matcher.match(ctx.event.text):
            ctx.tag(hit.tag, source=f"rule:{hit.rule_id}", ttl=hit.ttl)
            bump_interest(
                ctx.session, ctx.customer.id, hit.tag, hit.weight, ctx.now, half_life_days=half_life
            )
        if isinstance(matcher_or_rules, TaggingRules) and ctx.event.chat_type is ChatType.GROUP:
            activity_tagging(ctx, matcher_or_rules.activity)

    return tag_by_keywords


def activity_tagging(ctx: Context, rules: list[ActivitySpec]) -> None:
    """Give activity tags whose message count this group message reaches."""
    event = ctx.event
    if ctx.customer is None or event.kind is not EventKind.MESSAGE:
        return
    for rule in rules:
        if rule.group not in ("*", event.ref.chat_id, event.chat_title):
            continue
        since = ctx.now - timedelta(days=rule.days)
        stmt = select(func.count()).where(
            Interaction.customer_id == ctx.customer.id,
            Interaction.occurred_at >= since,
            Interaction.kind == EventKind.MESSAGE.value,
            Interaction.channel == event.ref.channel,
        )
        if rule.group == "*":
            stmt = stmt.where(
                Interaction.chat_id.in_(
                    select(Group.external_id).where(Group.channel == event.ref.channel)
                )
            )
        else:
            stmt = stmt.where(Interaction.chat_id == event.ref.chat_id)
        if (ctx.session.scalar(stmt) or 0) >= rule.min_messages:
            ctx.tag(rule.tag, source=f"rule:{rule.rule_id}", ttl=timedelta(days=rule.silent_days))


def event_tagging(rules: TaggingRules):
    """A handler that applies event rules (join, button, scene) to an inbound event."""

    def tag_by_event(ctx: Context) -> None:
        found = event_trigger(ctx.event)
        if found is None or ctx.customer is None:
            return
        rules.refresh(ctx.session)
        trigger, value = found
        alias = ctx.event.chat_title if trigger == "join" else ""
        apply_event_rules(ctx.session, rules, ctx.customer.id, trigger, value, ctx.now, alias=alias)

    return tag_by_event
