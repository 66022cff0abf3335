"""Automatic tagging by what customers write (keyword rules from config).

Many rules are matched in one pass with an Aho-Corasick automaton (pyahocorasick), not a
loop of ``in``. A rule fires when one of its keywords occurs and none of its exclusions do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import ahocorasick

from bot.config import KeywordRule
from bot.context import Context

__all__ = ["KeywordMatcher", "keyword_tagging"]


@dataclass(frozen=True)
class RuleHit:
    """A rule that fired on a text: which tag, from which rule, for how long."""

    rule_id: str
    tag: str
    ttl: timedelta | None


class KeywordMatcher:
    """Matches many keyword rules (with exclusions) against a text in one pass."""

    def __init__(self, rules: Iterable[KeywordRule]) -> None:
        self.rules = list(rules)
        self._automaton = ahocorasick.Automaton()
        entries: dict[str, list[tuple[int, bool]]] = {}
        for index, rule in enumerate(self.rules):
            for word in rule.keywords:
                if word.strip():
                    entries.setdefault(word.strip().lower(), []).append((index, False))
            for word in rule.exclude:
                if word.strip():
                    entries.setdefault(word.strip().lower(), []).append((index, True))
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
        for _end, targets in self._automaton.iter(text.lower()):
            for index, is_exclusion in targets:
                (excluded if is_exclusion else hits).add(index)
        return [
            RuleHit(
                rule_id=f"keyword:{index}",
                tag=self.rules[index].tag,
                ttl=timedelta(days=self.rules[index].ttl_days)
                if self.rules[index].ttl_days
                else None,
            )
            for index in sorted(hits - excluded)
        ]


def keyword_tagging(matcher: KeywordMatcher):
    """A handler that tags the customer for every keyword rule their message fires."""

    def tag_by_keywords(ctx: Context) -> None:
        for hit in matcher.match(ctx.event.text):
            ctx.tag(hit.tag, source=f"rule:{hit.rule_id}", ttl=hit.ttl)

    return tag_by_keywords
