"""Bot handlers, and the one place that says in which order they run.

Groups run in ascending order; in each group the first matching handler (highest priority)
runs. Groups marked * also run while staff own the conversation.

=======  ============================================================================
group    handlers (priority)
=======  ============================================================================
0 *      keyword_tagging, event_tagging (tags only, never answer)
1        consent: opt-out/opt-in keywords (退订/TD/stop); ends the dispatch
2 *      group_moderation (members' group messages; a deleted one ends the dispatch),
         group_newcomer (joins: confirm button) — handlers/groups.py
3 *      referral_attribution: an arrival by invite (ref_<code>) is attributed; never answers
5 *      customer_returned: a customer's message cancels pending follow-ups
10       answers: flag_for_staff (200), start/help/welcome_follower (100), managers'
         commands and /campaign /redeem /segment /rule /profile (90), groups: /sop /faq
         /mod /warn /mute /ban /unban (90), rating, group_confirm and sop_button (85),
         campaign_click (80), survey_comment* (75), survey_answer (70), my_coupons (70),
         my_invites (65), flow_start (60), flow_answer (50), group_welcome (50),
         greeting/pleasantry (45), faq_answer (40), flag_vip (-50), unknown_command (-100),
         not_understood (-1000)
15 *     handoff_ack: a customer waiting for staff hears at most once per [handoff]
         ack_minutes that their message arrived (and when to expect an answer)
20 *     relay_mirror: mirror handed-off conversations to the Telegram relay group
=======  ============================================================================
"""

from __future__ import annotations

from bot.app.config import Config
from bot.conversations.relay import relay_enabled
from bot.core import authz
from bot.core import filters as f
from bot.core.events import EventKind
from bot.core.routing import Handler, Router
from bot.customers.tagging import TaggingRules
from handlers import campaigns as c
from handlers import manage
from handlers import scenarios as sc
from handlers.basic import help_command, start, unknown_command
from handlers.conversations import ConversationHandlers
from handlers.customers import CustomerCommands, profile
from handlers.follow_welcome import welcome_follower
from handlers.privately import privately
from handlers.relay import in_handoff, mirror_to_relay
from handlers.tagging import event_tagging, keyword_tagging

__all__ = ["register_handlers"]

TAGGING = 0
CONSENT = 1
MODERATION = 2
ATTRIBUTION = 3
RETURNS = 5
ANSWERS = 10
RELAY = 20
HANDOFF_ACK = 15

#: Who may run a restricted command, on what: the authorization table decides.
PERMITTED = f.Filter(authz.permits, "authz")


def register_handlers(router: Router, config: Config) -> Router:
    """Register Siyu's handlers on ``router`` in their documented order."""
    rules = TaggingRules(config)
    router.add(
        Handler(
            "keyword_tagging",
            keyword_tagging(rules),
            f.kind(EventKind.MESSAGE, EventKind.EDITED),
            group=TAGGING,
            during_handoff=True,
        )
    )
    router.add(  # event rules tag on joins, buttons, scenes and deep-link /start payloads
        Handler(
            "event_tagging",
            event_tagging(rules),
            f.kind(EventKind.JOIN, EventKind.BUTTON, EventKind.SUBSCRIBE, EventKind.CONTACT_ADDED)
            | f.command("start"),
            group=TAGGING,
            during_handoff=True,
        )
    )
    _register_customers(router, rules)
    _register_campaigns(router)
    router.add(Handler("start", start, f.command("start"), group=ANSWERS, priority=100))
    router.add(Handler("help", help_command, f.command("help"), group=ANSWERS, priority=100))
    router.add(  # a new OA follower or WeCom contact is welcomed
        Handler(
            "welcome_follower",
            welcome_follower,
            f.kind(EventKind.SUBSCRIBE, EventKind.CONTACT_ADDED),
            group=ANSWERS,
            priority=100,
        )
    )
    router.add(
        Handler("unknown_command", unknown_command, f.command(), group=ANSWERS, priority=-100)
    )
    _register_manage(router)
    _register_conversations(router, config)
    _register_relay(router, config)
    _register_measures(router)
    _register_groups(router)
    _register_self_service(router)
    _register_handoff_ack(router)
    return router


def _register_measures(router: Router) -> None:
    """Surveys, invites and referral attribution (handlers/measures.py)."""
    from handlers import measures as m

    router.add(
        Handler(
            "referral_attribution",
            m.referral_attribution,
            m.is_arrival,
            group=ATTRIBUTION,
            during_handoff=True,
        )
    )
    router.add(
        Handler(
            "survey_comment",
            m.survey_comment,
            m.comment_pending,
            group=ANSWERS,
            priority=75,
            during_handoff=True,
        )
    )
    for name, callback, filter, priority in (
        ("survey_answer", m.survey_answer, m.is_survey_answer, 70),
        ("my_invites", m.my_invites, m.asks_invites, 65),
    ):
        router.add(Handler(name, callback, filter, group=ANSWERS, priority=priority))


def _register_groups(router: Router) -> None:
    """Running the groups (handlers/groups.py): SOP plans and FAQ for managers; moderation
    for the group's admins and managers; rules on members' messages; FAQ answers."""
    from handlers import groups as g

    _restricted_commands(
        router,
        "groups_",
        {"sop": g.sop_command, "faq": g.faq_command},
        refused="groups_plans_refused",
    )
    _restricted_commands(
        router,
        "groups_",
        {
            "mod": g.mod_command,
            "warn": g.warn_command,
            "mute": g.mute_command,
            "ban": g.ban_command,
            "unban": g.unban_command,
        },
        refused="groups_mod_refused",
    )
    router.add(
        Handler(
            "group_moderation",
            g.moderate,
            g.is_member_message,
            group=MODERATION,
            during_handoff=True,
        )
    )
    router.add(
        Handler(
            "group_newcomer",
            g.newcomer,
            f.kind(EventKind.JOIN) & f.is_group,
            group=MODERATION,
            during_handoff=True,
        )
    )
    router.add(
        Handler("group_confirm", g.confirm_button, g.is_confirm_button, group=ANSWERS, priority=85)
    )
    router.add(Handler("sop_button", g.sop_button, g.is_sop_button, group=ANSWERS, priority=85))
    answers = g.FaqAnswers()
    router.add(
        Handler(
            "faq_answer", answers.answer, f.Filter(answers.asks, "faq"), group=ANSWERS, priority=40
        )
    )


def _restricted_commands(router: Router, prefix: str, callbacks: dict, *, refused: str) -> None:
    """Commands of the authorization table (bot/core/authz.py; ANSWERS, priority 90): an
    actor it permits runs the command, anyone else gets a short refusal and nothing happens."""
    for name, callback in callbacks.items():
        router.add(
            Handler(
                f"{prefix}{name}",
                callback,
                f.command(name) & PERMITTED,
                group=ANSWERS,
                priority=90,
            )
        )
    router.add(
        Handler(
            refused,
            authz.refuse,
            f.command(*callbacks) & ~PERMITTED,
            group=ANSWERS,
            priority=90,
        )
    )


def _register_relay(router: Router, config: Config) -> None:
    """The staff relay mirror (handlers/relay.py): only when [telegram] relay_chat_id is set."""
    if relay_enabled(config):
        router.add(
            Handler("relay_mirror", mirror_to_relay, in_handoff, group=RELAY, during_handoff=True)
        )


def _register_campaigns(router: Router) -> None:
    """Campaigns (handlers/campaigns.py): opt-out/in runs right after tagging and ends the
    dispatch, so nothing else answers 退订/TD/stop; campaign and /redeem commands; clicks."""
    router.add(Handler("consent", c.consent, c.is_consent, group=CONSENT, block=True))

    _restricted_commands(
        router,
        "",
        {
            "campaign": privately(c.campaign_command),
            "redeem": c.redeem_command,
            "scenario": sc.scenario_command,
        },
        refused="campaign_refused",
    )
    router.add(
        Handler("campaign_click", c.tracked_button, c.is_tracked_button, group=ANSWERS, priority=80)
    )
    router.add(
        Handler(
            "scenario_click", sc.scenario_button, sc.is_scenario_button, group=ANSWERS, priority=80
        )
    )


def _register_customers(router: Router, rules: TaggingRules) -> None:
    """Managers' /segment, /rule and /profile commands (handlers/customers.py)."""
    commands = CustomerCommands(rules)
    _restricted_commands(
        router,
        "customers_",
        {
            "segment": privately(commands.segment),
            "rule": commands.rule,
            "profile": privately(profile),
        },
        refused="customers_refused",
    )


def _register_manage(router: Router) -> None:
    """Group commands: a group's admins in their group and on its members, and managers."""
    callbacks = {
        "welcome": manage.welcome,
        "announce": manage.announce,
        "stats": manage.stats,
        "whois": privately(manage.whois),
        "tag": manage.tag_member,
        "untag": manage.untag_member,
    }
    _restricted_commands(router, "manage_", callbacks, refused="manage_refused")
    router.add(
        Handler(
            "group_welcome",
            manage.group_welcome,
            f.kind(EventKind.JOIN) & f.is_group,
            group=ANSWERS,
            priority=50,
        )
    )


def _register_conversations(router: Router, config: Config) -> None:
    """Flows, breakpoints and flagging for staff (their order: handlers/conversations.py)."""
    conv = ConversationHandlers(config, router.renderer)
    router.add(
        Handler(
            "customer_returned",
            conv.customer_returned,
            conv.returned,
            group=RETURNS,
            during_handoff=True,
        )
    )
    for name, callback, filter, priority in (
        ("flag_for_staff", conv.flag_for_staff, conv.wants_staff, 200),
        ("flow_start", conv.flow_start, conv.starts_flow, 60),
        ("flow_answer", conv.flow_answer, conv.answers_flow, 50),
        ("flag_vip", conv.flag_vip, conv.vip_text, -50),
        # Last of ANSWERS: private free text nothing above answered (consent blocks before).
        ("not_understood", conv.not_understood, conv.unanswered_text, -1000),
    ):
        router.add(Handler(name, callback, filter, group=ANSWERS, priority=priority))


def _register_self_service(router: Router) -> None:
    """Greeting, "my coupons", thanks and okays, the 1–5 rating (handlers/self_service.py).
    Greeting and thanks come right after the flows' answers (a customer back in a flow gets
    the breakpoint recap) and before flag_vip and not_understood, so outside a flow "你好"
    and "谢谢" are never a misunderstanding and a VIP's thanks opens no ticket."""
    from handlers import self_service as ss

    for name, callback, filter, priority in (
        ("rating", ss.rating, ss.is_rating, 85),
        ("my_coupons", ss.my_coupons, ss.is_my_coupons, 70),
        ("greeting", ss.greeting, ss.is_greeting, 45),
        ("pleasantry", ss.pleasantry, ss.is_pleasantry, 45),
    ):
        router.add(Handler(name, callback, filter, group=ANSWERS, priority=priority))


def _register_handoff_ack(router: Router) -> None:
    """A customer waiting for staff gets a short acknowledgement (handlers/handoff_waiting.py)."""
    from handlers.handoff_waiting import handoff_ack, waiting_for_staff

    router.add(
        Handler(
            "handoff_ack", handoff_ack, waiting_for_staff, group=HANDOFF_ACK, during_handoff=True
        )
    )
