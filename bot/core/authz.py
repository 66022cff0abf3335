"""Who may do what, on what: the one authorization table of Siyu.

Every chat command and every HTTP route has one entry here saying which roles may use it
and on what scope. The router resolves the actor's chat role with :func:`chat_role`, the
handler table registers restricted commands through :func:`permits` / :func:`refuse`, and
the web app's :class:`~bot.web.authorization.RouteAuthorization` middleware enforces
:data:`ROUTES`; nothing else decides. ``docs/security.md`` prints this table (a test keeps
the two in step).

Roles in chat: a *customer* (anyone), a *group admin* (an admin of the group on the
platform, only inside that group), *staff* and *manager* (a chat identity named in
``[roles] managers``, or linked to an active inbox account by ``[roles] staff_accounts`` or
``[telegram] relay_staff``: the inbox account's role decides). Over HTTP: *anonymous*, a
*staff* or *manager* inbox session, the *API key*, a *platform* callback (signed; the
adapter checks the signature) and the local *sandbox*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.core.events import ChatType, EventKind
from bot.core.i18n import t

if TYPE_CHECKING:
    from bot.app.config import Config
    from bot.core.context import Context

__all__ = [
    "COMMANDS",
    "FLOW_COMMAND",
    "ROUTES",
    "CommandRule",
    "Decision",
    "Role",
    "RouteRule",
    "Scope",
    "chat_role",
    "command_rule",
    "commands_for",
    "decide",
    "permits",
    "refuse",
    "route_rule",
    "table_markdown",
]


class Role(StrEnum):
    """Who is acting."""

    ANONYMOUS = "anonymous"
    CUSTOMER = "customer"
    GROUP_ADMIN = "group_admin"
    STAFF = "staff"
    MANAGER = "manager"
    API_KEY = "api_key"
    PLATFORM = "platform"
    SANDBOX = "sandbox"


class Scope(StrEnum):
    """On what the role may act."""

    OWN_CONVERSATION = "own conversation"
    OWN_GROUP = "own group and its members"
    ANY = "any customer, any group"
    INBOX = "conversations handed to staff"
    OWN_SESSION = "own session"
    PUBLIC = "nothing personal"
    SIGNED = "the signed payload"
    SANDBOX_DATA = "sandbox personas"


@dataclass(frozen=True)
class CommandRule:
    """A chat command: the roles that may run it, each with its scope.

    ``targets_member``: the command acts on a member (the author of the replied-to message
    or ``@<user id>``); a group admin may only name a member of the group it runs in.
    """

    name: str
    grants: Mapping[Role, Scope]
    summary: str
    targets_member: bool = False


@dataclass(frozen=True)
class RouteRule:
    """An HTTP route (path template and methods): the roles that may call it."""

    path: str
    methods: frozenset[str]
    grants: Mapping[Role, Scope]
    summary: str
    json: bool = field(default=False)


_EVERYONE = {
    Role.CUSTOMER: Scope.OWN_CONVERSATION,
    Role.GROUP_ADMIN: Scope.OWN_CONVERSATION,
    Role.STAFF: Scope.OWN_CONVERSATION,
    Role.MANAGER: Scope.OWN_CONVERSATION,
}
_GROUP = {Role.GROUP_ADMIN: Scope.OWN_GROUP, Role.MANAGER: Scope.ANY}
_MANAGERS = {Role.MANAGER: Scope.ANY}

#: Stands for every command a conversation flow declares (``commands = [...]`` in
#: templates/flows): customers start their own flows.
FLOW_COMMAND = "<flow>"


def _commands(*rules: CommandRule) -> dict[str, CommandRule]:
    return {r.name: r for r in rules}


COMMANDS: dict[str, CommandRule] = _commands(
    CommandRule("start", _EVERYONE, "welcome; deep-link source"),
    CommandRule("help", _EVERYONE, "the commands the reader may use"),
    CommandRule("human", _EVERYONE, "ask for a person (private chat)"),
    CommandRule("invite", _EVERYONE, "your invite code, link and friends invited (private chat)"),
    CommandRule("coupons", _EVERYONE, "your valid coupons with their expiry (private chat)"),
    CommandRule(FLOW_COMMAND, _EVERYONE, "start a conversation flow (private chat)"),
    CommandRule("welcome", _GROUP, "set or show the group's welcome"),
    CommandRule("announce", _GROUP, "post (and pin) an announcement in the group"),
    CommandRule("stats", _GROUP, "the group's 7-day figures"),
    CommandRule(
        "whois",
        {**_GROUP, Role.STAFF: Scope.ANY},
        "a member's tags, tier, last activity",
        targets_member=True,
    ),
    CommandRule("tag", _GROUP, "tag a member", targets_member=True),
    CommandRule("untag", _GROUP, "remove a member's tag", targets_member=True),
    CommandRule("profile", _MANAGERS, "show or edit a customer's profile", targets_member=True),
    CommandRule("sop", _MANAGERS, "scheduled group posts: add, list, show, pause, delete"),
    CommandRule("faq", _MANAGERS, "FAQ answers: add, list, delete"),
    CommandRule("mod", _GROUP, "the group's moderation rules and log"),
    CommandRule("warn", _GROUP, "warn a member (three warnings mute)", targets_member=True),
    CommandRule("mute", _GROUP, "mute a member for some minutes", targets_member=True),
    CommandRule("ban", _GROUP, "remove and ban a member", targets_member=True),
    CommandRule("unban", _GROUP, "lift a member's ban", targets_member=True),
    CommandRule("rule", _MANAGERS, "automatic tagging rules"),
    CommandRule("segment", _MANAGERS, "count, preview, save segments"),
    CommandRule("campaign", _MANAGERS, "campaigns: create, pilot, launch, pause"),
    CommandRule("scenario", _MANAGERS, "scenario funnels"),
    CommandRule("redeem", _MANAGERS, "redeem a coupon code"),
)

_PUBLIC = {Role.ANONYMOUS: Scope.PUBLIC}
_SIGNED = {Role.PLATFORM: Scope.SIGNED}
_SANDBOX = {Role.SANDBOX: Scope.SANDBOX_DATA}
_INBOX = {Role.STAFF: Scope.INBOX, Role.MANAGER: Scope.ANY}
_INBOX_MANAGER = {Role.MANAGER: Scope.ANY}
_API = {Role.API_KEY: Scope.ANY}


def _route(
    path: str, methods: str, grants: Mapping[Role, Scope], summary: str, *, json: bool = False
) -> RouteRule:
    return RouteRule(path, frozenset(methods.split()), grants, summary, json)


ROUTES: tuple[RouteRule, ...] = (
    _route("/healthz", "GET", _PUBLIC, "liveness and database health", json=True),
    _route("/livez", "GET", _PUBLIC, "the process is alive", json=True),
    _route(
        "/readyz",
        "GET",
        _PUBLIC,
        "ready: database migrated and writable, adapters started",
        json=True,
    ),
    _route("/metrics", "GET", _API, "Prometheus metrics (or on [metrics] port, loopback)"),
    _route("/r/{token}", "GET", _PUBLIC, "tracked link redirect (the token is the secret)"),
    _route("/g/{token}", "GET", _PUBLIC, "a group post's tracked link (the token is the secret)"),
    _route("/telegram/webhook", "POST", _SIGNED, "Telegram updates (secret token header)"),
    _route("/wechat/callback", "GET POST", _SIGNED, "WeChat OA callbacks (signature)"),
    _route("/wecom/callback", "GET POST", _SIGNED, "WeCom callbacks (signature)"),
    _route("/", "GET", _SANDBOX, "the sandbox page"),
    _route("/sandbox/api/messages", "POST", _SANDBOX, "send as a sandbox persona", json=True),
    _route("/sandbox/api/chats/{chat_id}/messages", "GET", _SANDBOX, "a sandbox transcript"),
    _route("/sandbox/api/stream", "GET", _SANDBOX, "sandbox live updates"),
    _route(
        "/sandbox/api/profile/{user_id}", "GET", _SANDBOX, "a sandbox persona's profile", json=True
    ),
    _route(
        "/api/customers/{channel}/{user_id}",
        "GET",
        {Role.API_KEY: Scope.ANY, Role.MANAGER: Scope.ANY, Role.SANDBOX: Scope.SANDBOX_DATA},
        "a customer's profile, orders, coupons",
        json=True,
    ),
    _route("/api/customers", "POST", _API, "import customers", json=True),
    _route("/api/orders", "POST", _API, "import orders", json=True),
    _route("/api/coupons/redeem", "POST", _API, "redeem a coupon at a shop", json=True),
    _route("/inbox/login", "GET POST", {Role.ANONYMOUS: Scope.OWN_SESSION}, "log in"),
    _route("/inbox/logout", "POST", {Role.ANONYMOUS: Scope.OWN_SESSION}, "log out"),
    _route("/inbox", "GET", _INBOX, "the staff queue"),
    _route("/inbox/partials/queue", "GET", _INBOX, "the queue, refreshed"),
    _route("/inbox/c/{ticket_id}", "GET", _INBOX, "a handed-off conversation"),
    _route("/inbox/partials/c/{ticket_id}", "GET", _INBOX, "its history, refreshed"),
    _route("/inbox/c/{ticket_id}/{action}", "POST", _INBOX, "claim, reply, note, resolve..."),
    _route("/inbox/stream", "GET", _INBOX, "inbox live updates", json=True),
    _route("/inbox/api/queue", "GET", _INBOX, "the queue as JSON", json=True),
    _route("/inbox/api/tickets/{ticket_id}/claim", "POST", _INBOX, "claim as JSON", json=True),
    _route("/inbox/redeem", "POST", _INBOX, "redeem a code at the counter"),
    _route("/inbox/locale", "POST", _INBOX, "the staff member's language (zh-CN or en)"),
    _route("/console", "GET", _INBOX_MANAGER, "the manager console's dashboard"),
    _route("/console/locale", "POST", _INBOX_MANAGER, "the console's language"),
    _route("/console/static", "GET", _PUBLIC, "the console's scripts and styles (ECharts)"),
    _route("/console/campaigns", "GET", _INBOX_MANAGER, "campaigns and scenarios"),
    _route("/console/campaigns/new", "GET POST", _INBOX_MANAGER, "create a campaign"),
    _route("/console/campaigns/{campaign_id}", "GET", _INBOX_MANAGER, "a campaign's funnel"),
    _route(
        "/console/campaigns/{campaign_id}/data",
        "GET",
        _INBOX_MANAGER,
        "a campaign's live figures",
        json=True,
    ),
    _route("/console/campaigns/{campaign_id}/edit", "GET POST", _INBOX_MANAGER, "edit a draft"),
    _route(
        "/console/campaigns/{campaign_id}/{action}",
        "POST",
        _INBOX_MANAGER,
        "preview, pilot, launch, pause",
    ),
    _route("/console/scenarios/{name}", "GET", _INBOX_MANAGER, "a scenario's funnel per day"),
    _route(
        "/console/api/segment-count", "POST", _INBOX_MANAGER, "a segment's live count", json=True
    ),
    _route("/console/api/campaign-preview", "POST", _INBOX_MANAGER, "a live preview", json=True),
    _route("/console/segments", "GET POST", _INBOX_MANAGER, "saved segments"),
    _route("/console/segments/delete", "POST", _INBOX_MANAGER, "delete a saved segment"),
    _route(
        "/console/segments/{name}/export.csv", "GET", _INBOX_MANAGER, "a segment's members (CSV)"
    ),
    _route("/console/customers", "GET", _INBOX_MANAGER, "customer search"),
    _route("/console/customers/{customer_id}", "GET", _INBOX_MANAGER, "a customer's 360° view"),
    _route(
        "/console/customers/{customer_id}/{action}", "POST", _INBOX_MANAGER, "tag, untag, merge"
    ),
    _route("/console/tags", "GET", _INBOX_MANAGER, "tags and rules"),
    _route("/console/tags/rules", "POST", _INBOX_MANAGER, "add a tagging rule"),
    _route("/console/tags/rules/{rule_id}/edit", "POST", _INBOX_MANAGER, "change a tagging rule"),
    _route("/console/tags/rules/{rule_id}/delete", "POST", _INBOX_MANAGER, "delete a rule"),
    _route("/console/imports", "GET POST", _INBOX_MANAGER, "import customers, orders, tags"),
    _route("/console/imports/{job_id}", "GET", _INBOX_MANAGER, "an import's progress, errors"),
    _route("/console/coupons", "GET", _INBOX_MANAGER, "coupons and redemptions"),
    _route("/console/coupons/redeem", "POST", _INBOX_MANAGER, "redeem a code"),
    _route("/console/flows", "GET", _INBOX_MANAGER, "customers at each flow step"),
    _route("/console/staff", "GET POST", _INBOX_MANAGER, "staff accounts"),
    _route(
        "/console/staff/{username}/{action}",
        "POST",
        _INBOX_MANAGER,
        "reset password, deactivate, change role",
    ),
    _route("/console/measures", "GET", _INBOX_MANAGER, "loyalty, cohorts, AARRR, surveys"),
    _route(
        "/console/groups",
        "GET",
        _INBOX_MANAGER,
        "SOP plans, FAQ entries, groups and their moderation rules, moderation log",
    ),
    _route(
        "/console/groups/{group_id}/moderation",
        "POST",
        _INBOX_MANAGER,
        "change a group's moderation rules",
    ),
    _route("/console/groups/sop", "POST", _INBOX_MANAGER, "create or edit an SOP plan"),
    _route("/console/groups/faq", "POST", _INBOX_MANAGER, "add or edit an FAQ entry"),
    _route(
        "/console/groups/sop/{name}/{action}",
        "POST",
        _INBOX_MANAGER,
        "pause, resume, delete a plan",
    ),
    _route("/console/groups/faq/{entry_id}/delete", "POST", _INBOX_MANAGER, "delete an FAQ entry"),
    _route("/inbox/manager", "GET", _INBOX_MANAGER, "all conversations, audit log"),
    _route("/inbox/manager/flag", "POST", _INBOX_MANAGER, "flag a conversation for staff"),
)

_ROUTES_BY_KEY = {(r.path, m): r for r in ROUTES for m in r.methods}


def route_rule(path: str, method: str) -> RouteRule | None:
    """The rule of the route with this path template, for ``method`` (HEAD counts as GET)."""
    method = "GET" if method == "HEAD" else method
    return _ROUTES_BY_KEY.get((path, method))


def command_rule(command: str | None) -> CommandRule | None:
    return COMMANDS.get((command or "").lower())


def commands_for(role: Role | str) -> list[str]:
    """The commands ``role`` may run somewhere, in table order (for /help)."""
    return [name for name, rule in COMMANDS.items() if name != FLOW_COMMAND and role in rule.grants]


# -- chat roles -------------------------------------------------------------------------


def _linked_accounts(config: Config) -> dict[str, str]:
    """``"<channel>:<user id>"`` → inbox username, from both places that link them."""
    links = {
        f"telegram:{e.split(':', 1)[0]}": e.split(":", 1)[1] for e in config.telegram.relay_staff
    }
    for entry in config.roles.staff_accounts:
        ident, _, username = entry.rpartition(":")
        links[ident] = username
    return links


def chat_role(ctx: Context) -> Role:
    """The actor's role for this event: manager, staff, group admin (in its group) or customer."""
    from storage.handoff import StaffUser

    event, config = ctx.event, ctx.config
    ident = f"{event.ref.channel}:{event.actor.user_id}"
    if ident in config.roles.managers:
        return Role.MANAGER
    username = _linked_accounts(config).get(ident)
    if username:
        role = ctx.session.scalar(
            select(StaffUser.role).where(StaffUser.username == username, StaffUser.active.is_(True))
        )
        if role == "manager":
            return Role.MANAGER
        if role == "staff":
            return Role.STAFF
    if event.actor.is_platform_admin and event.chat_type is ChatType.GROUP:
        return Role.GROUP_ADMIN
    return Role.CUSTOMER


# -- decisions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Allowed, or refused with the catalogue key of the reason."""

    allowed: bool
    reason: str = ""


ALLOW = Decision(True)


def decide(ctx: Context, command: str | None = None) -> Decision:
    """May this event's actor run ``command`` (default: the event's), on its target?"""
    name = (command or ctx.event.command or "").lower()
    rule = COMMANDS.get(name)
    if rule is None:
        return ALLOW  # an unknown command only gets "unknown command"
    role = Role(ctx.role) if ctx.role in Role.__members__.values() else Role.CUSTOMER
    scope = rule.grants.get(role)
    if scope is None:
        return Decision(
            False,
            "authz.refused.group" if Role.GROUP_ADMIN in rule.grants else "authz.refused.managers",
        )
    if scope is Scope.OWN_GROUP:
        if ctx.event.chat_type is not ChatType.GROUP:
            return Decision(False, "authz.refused.group")
        if rule.targets_member and not _target_in_group(ctx):
            return Decision(False, "authz.refused.member")
    return ALLOW


def _target_in_group(ctx: Context) -> bool:
    """The member a command names is in the group it runs in (a replied-to message was
    written there; an ``@<user id>`` must be an active member). No target: nothing to
    check (the command answers with its usage)."""
    from storage import repos
    from storage.models import Group, Membership

    event = ctx.event
    if event.reply_to is not None:
        return True
    if not (event.args and event.args[-1].startswith("@") and len(event.args[-1]) > 1):
        return True
    identity = repos.find_identity(ctx.session, event.ref.channel, event.args[-1][1:])
    if identity is None:
        return False
    return bool(
        ctx.session.scalar(
            select(Membership.customer_id)
            .join(Group, Group.id == Membership.group_id)
            .where(
                Group.channel == event.ref.channel,
                Group.external_id == event.ref.chat_id,
                Membership.customer_id == identity.customer_id,
                Membership.active.is_(True),
            )
        )
    )


def permits(ctx: Context) -> bool:
    """Filter: the event is a command this actor may run on its target."""
    return ctx.event.kind is EventKind.COMMAND and decide(ctx).allowed


def refuse(ctx: Context) -> None:
    """Handler: a short refusal in the reader's language; nothing else happens."""
    decision = decide(ctx)
    ctx.send_text(t(decision.reason or "common.refused", ctx.locale, command=ctx.event.command))


# -- the table as text ------------------------------------------------------------------

_ROLE_ORDER = (
    Role.ANONYMOUS,
    Role.CUSTOMER,
    Role.GROUP_ADMIN,
    Role.STAFF,
    Role.MANAGER,
    Role.API_KEY,
    Role.PLATFORM,
    Role.SANDBOX,
)


def _grants(grants: Mapping[Role, Scope]) -> str:
    return "; ".join(f"{r.value}: {grants[r].value}" for r in _ROLE_ORDER if r in grants)


def table_markdown() -> str:
    """The authorization table as Markdown (docs/security.md embeds it verbatim)."""
    chat_roles = (Role.CUSTOMER, Role.GROUP_ADMIN, Role.STAFF, Role.MANAGER)
    lines = [
        "| command | customer | group admin | staff | manager | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rule in COMMANDS.values():
        shown = rule.name if rule.name == FLOW_COMMAND else f"/{rule.name}"
        cells = " | ".join(rule.grants[r].value if r in rule.grants else "—" for r in chat_roles)
        lines.append(f"| `{shown}` | {cells} | {rule.summary} |")
    lines += ["", "| route | methods | who: scope | what |", "| --- | --- | --- | --- |"]
    for route in ROUTES:
        methods = " ".join(sorted(route.methods))
        lines.append(f"| `{route.path}` | {methods} | {_grants(route.grants)} | {route.summary} |")
    return "\n".join(lines) + "\n"
