"""Tagging handlers: every message and event is run through the tagging rules.

The rules and their matching are the tagging engine (bot/customers/tagging.py); these
handlers give the tags it finds to the customer of the event.
"""

from __future__ import annotations

from bot.core.context import Context
from bot.core.events import ChatType
from bot.customers.tagging import (
    ActivitySpec,
    KeywordMatcher,
    TaggingRules,
    activity_hits,
    apply_event_rules,
    event_trigger,
)
from storage.tag_scores import bump_interest

__all__ = ["activity_tagging", "event_tagging", "keyword_tagging"]


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
    if ctx.customer is None:
        return
    for hit in activity_hits(ctx.session, rules, ctx.customer.id, ctx.event, ctx.now):
        ctx.tag(hit.tag, source=f"rule:{hit.rule_id}", ttl=hit.ttl)


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
