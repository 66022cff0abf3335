"""The authorization table, checked against what Siyu really does.

Every command registered on the router (and every command a flow declares) is run through
the sandbox channel by every kind of actor; every route of the built app is called over
HTTP by every kind of caller. What happens must be what bot/core/authz.py says; a command
or route missing from the table fails here.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from bot.app.assembly import build
from bot.app.config import ConfigError, load_config
from bot.conversations.flows import load_flows
from bot.conversations.staff import create_staff
from bot.core import authz
from bot.core.authz import COMMANDS, FLOW_COMMAND, ROUTES, Role, Scope
from bot.core.i18n import t
from storage import repos
from storage.handoff import StaffUser
from storage.segments import SavedSegment
from storage.tag_rules import TagRule
from tests.support import LiveServer, SandboxHarness

PASSWORD = "correct horse 42"
API_KEY = "k-" + "x" * 30
GROUP_A, GROUP_B = "group-1", "group-2"


@pytest.fixture
def h(config, sqlite_db, clock) -> SandboxHarness:
    cfg = config.replace(
        sandbox=replace(config.sandbox, groups=["A 群", "B 群"], group_admins=["group-1:admin_a"]),
        roles=replace(
            config.roles,
            managers=["sandbox:manager"],
            staff_accounts=["sandbox:staff1:alice", "sandbox:boss:mia"],
        ),
        api=replace(config.api, key=API_KEY),
    )
    harness = SandboxHarness(cfg, sqlite_db, clock)
    with sqlite_db.transaction() as s:
        create_staff(s, "alice", PASSWORD, role="staff", now=clock.now())
        create_staff(s, "mia", PASSWORD, role="manager", now=clock.now())
    return harness


async def _members(h: SandboxHarness) -> None:
    await h.say("member_a", "大家好", chat=GROUP_A, name="Amy")
    await h.say("member_b", "大家好", chat=GROUP_B, name="Bea")


# -- chat commands ------------------------------------------------------------------------


def registered_commands(h: SandboxHarness) -> set[str]:
    """Every command name a handler filter of the router names, and every flow command."""
    names: set[str] = set()
    for handler in h.runtime.router.handlers:
        for group in re.findall(r"command\(([^)]*)\)", handler.filter.name):
            names |= {n for n in group.split(",") if n and n != "*"}
    return names


def flow_commands() -> set[str]:
    return {c for flow in load_flows().flows.values() for c in flow.commands}


def test_every_registered_command_is_in_the_table_and_nothing_else_is(h):
    commands = registered_commands(h)
    flows = flow_commands()
    assert flows, "the shipped flows declare commands (e.g. /trip)"
    assert commands - set(COMMANDS) == set(), "commands with no table entry"
    assert set(COMMANDS) - commands - {FLOW_COMMAND} == set(), "table entries with no command"
    assert not flows & set(COMMANDS), "a flow command shadows a table command"


#: (persona, user id, chat, role the table should see)
ACTORS = [
    ("customer", "cust", None, Role.CUSTOMER),
    ("customer in group A", "cust", GROUP_A, Role.CUSTOMER),
    ("admin of A in A, on a member of A", "admin_a", GROUP_A, Role.GROUP_ADMIN),
    ("admin of A in A, on a member of B", "admin_a", GROUP_A, Role.GROUP_ADMIN),
    ("admin of A in group B", "admin_a", GROUP_B, Role.CUSTOMER),
    ("admin of A in private", "admin_a", None, Role.CUSTOMER),
    ("staff", "staff1", None, Role.STAFF),
    ("staff in group A", "staff1", GROUP_A, Role.STAFF),
    ("manager", "manager", None, Role.MANAGER),
    ("manager in group B", "manager", GROUP_B, Role.MANAGER),
    ("inbox manager", "boss", None, Role.MANAGER),
]

#: A harmless use of each command (no arguments that would change much).
USES = {
    "start": "/start",
    "help": "/help",
    "human": "/human",
    "welcome": "/welcome",
    "announce": "/announce",
    "stats": "/stats",
    "whois": "/whois {target}",
    "tag": "/tag 测试 {target}",
    "untag": "/untag 测试 {target}",
    "profile": "/profile {target}",
    "rule": "/rule list",
    "segment": "/segment list",
    "campaign": "/campaign",
    "scenario": "/scenario",
    "redeem": "/redeem",
    "warn": "/warn {target}",
    "mute": "/mute 10 {target}",
    "ban": "/ban {target}",
    "unban": "/unban {target}",
}


def expected(rule: authz.CommandRule, role: Role, chat: str | None, target: str) -> bool:
    """The table's answer, worked out here from its entries."""
    scope = rule.grants.get(role)
    if scope is None:
        return False
    if scope is Scope.OWN_GROUP:
        if chat is None:
            return False
        if rule.targets_member:
            return target == {GROUP_A: "@member_a", GROUP_B: "@member_b"}[chat]
    return True


async def test_every_command_as_every_actor_is_allowed_or_refused_by_the_table(h):
    await _members(h)
    # /human hands the private chat to staff (the bot is silent there after it): last
    commands = sorted(registered_commands(h) - {"human"}) + sorted(flow_commands()) + ["human"]
    wrong = []
    for persona, user, chat, role in ACTORS:
        target = "@member_b" if "member of B" in persona else "@member_a"
        for name in commands:
            rule = COMMANDS.get(name) or COMMANDS[FLOW_COMMAND]
            text = USES.get(name, f"/{name}").format(target=target)
            fresh = chat is None and user == "cust"  # a new customer each time
            user_id = f"cust-{uuid.uuid4().hex[:6]}" if fresh else user
            result = await h.say(user_id, text, chat=chat, locale="en")
            refused = any(n.endswith("_refused") for n in result.handlers)
            want = expected(rule, role, chat, target)
            if refused == want or result.errors:
                wrong.append((persona, text, "allowed" if want else "refused", result.handlers))
            if refused:
                await h.deliver()
                reply = (await h.bot_messages(chat or user_id))[-1]
                refusals = {
                    t(key, "en", command=name.lower())
                    for key in (
                        "authz.refused.managers",
                        "authz.refused.group",
                        "authz.refused.member",
                    )
                }
                if reply not in refusals:
                    wrong.append((persona, text, "refusal text", reply))
    assert wrong == [], "\n".join(map(str, wrong))


async def test_an_inbox_account_linked_to_a_chat_identity_gives_its_role(h, clock):
    """``[roles] staff_accounts``: the inbox account's role is the chat role; a deactivated
    account gives nothing."""
    await _members(h)
    result = await h.say("boss", "/profile city 上海 @member_b")
    assert result.handlers == ["customers_profile"]
    with h.db.transaction() as s:
        s.scalars(select(StaffUser).where(StaffUser.username == "mia")).one().active = False
    result = await h.say("boss", "/profile city 北京 @member_b")
    assert result.handlers == ["customers_refused"]
    assert _profile(h, "member_b")["city"] == "上海"


# -- the attacks of a group admin acting as a global manager ---------------------------------


async def test_a_group_admin_cannot_edit_a_stranger_in_another_group(h, clock):
    await _members(h)
    before = _profile(h, "member_b")
    for text in (
        "/profile name 骗子 @member_b",
        "/profile phone 13800000000 @member_b",
        "/tag 黑名单 @member_b",
        "/untag 母婴 @member_b",
        "/whois @member_b",
    ):
        result = await h.say("admin_a", text, chat=GROUP_A, locale="en")
        assert result.handlers == [
            "customers_refused" if "/profile" in text else "manage_refused"
        ], text
    after = _profile(h, "member_b")
    assert after["display_name"] == before["display_name"] == "Bea"
    assert after["phone"] is before["phone"] is None
    assert after["tags"] == []
    await h.deliver()
    replies = await h.bot_messages(GROUP_A)
    assert replies[-1] == t("authz.refused.member", "en", command="whois")
    assert replies[0] == t("authz.refused.managers", "en", command="profile")


async def test_a_group_admin_cannot_add_rules_or_save_segments(h, clock):
    await _members(h)
    for text in (
        "/rule add keyword 投诉 退款,refund",
        "/segment save everyone channel:sandbox",
        '/campaign new refund segment="channel:sandbox" text="点击领取退款"',
        "/redeem ABCD-EFGH-JKLM",
        "/scenario stats",
    ):
        result = await h.say("admin_a", text, chat=GROUP_A, locale="en")
        assert len(result.handlers) == 1 and result.handlers[0].endswith("_refused"), text
    with h.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TagRule)) == 0
        assert s.scalar(select(func.count()).select_from(SavedSegment)) == 0


async def test_a_group_admin_acts_in_their_own_group_and_on_its_members(h):
    await _members(h)
    result = await h.say("admin_a", "/tag 高意向 @member_a", chat=GROUP_A)
    assert result.handlers == ["manage_tag"]
    assert [x["tag"] for x in _profile(h, "member_a")["tags"]] == ["高意向"]
    # in a group they do not administer they are a customer like any other
    result = await h.say("admin_a", "/tag 高意向 @member_b", chat=GROUP_B)
    assert result.handlers == ["manage_refused"]
    assert _profile(h, "member_b")["tags"] == []


async def test_a_manager_acts_anywhere(h):
    await _members(h)
    result = await h.say("manager", "/profile city 杭州 @member_b")
    assert result.handlers == ["customers_profile"]
    assert _profile(h, "member_b")["city"] == "杭州"


def _profile(h: SandboxHarness, user: str) -> dict:
    with h.db.sessions() as s:
        return repos.customer_profile(s, "sandbox", user, h.runtime.clock.now()).as_dict()


# -- HTTP routes ----------------------------------------------------------------------------


@pytest.fixture
def full(config, sqlite_db, clock):
    """Siyu with every surface on: sandbox, Telegram webhook, WeChat OA, WeCom, the API."""
    nowhere = "http://127.0.0.1:9"
    cfg = config.replace(
        database=replace(config.database, url=sqlite_db.url),
        sandbox=replace(config.sandbox, enabled=True),  # explicitly, on loopback
        api=replace(config.api, key=API_KEY),
        telegram=replace(
            config.telegram,
            token="123:abc",
            base_url=nowhere + "/bot{token}",
            mode="webhook",
            webhook_secret="hook-secret",
        ),
        wechat=replace(
            config.wechat,
            app_id="wx123",
            app_secret="s3cret",
            token="tok",
            encoding_aes_key="a" * 43,
            api_base_url=nowhere,
        ),
        wecom=replace(
            config.wecom,
            corp_id="ww123",
            secret="corp-secret",
            agent_id=1000002,
            token="tok",
            encoding_aes_key="a" * 43,
            api_base_url=nowhere,
        ),
    )
    app = build(cfg, db=sqlite_db, clock=clock)
    app.server = SimpleNamespace(should_exit=True)  # live streams answer once and end
    with sqlite_db.transaction() as s:
        create_staff(s, "alice", PASSWORD, role="staff", now=clock.now())
        create_staff(s, "mia", PASSWORD, role="manager", now=clock.now())
    return app


def app_routes(app) -> list[tuple[str, str]]:
    found = []
    for route in app.asgi.routes:
        if isinstance(route, Mount):  # static files: read-only GETs under the mount's path
            found.append((route.path, "GET"))
            continue
        assert isinstance(route, Route), route
        found += [(route.path, m) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


def test_every_route_is_in_the_table_and_nothing_else_is(full):
    routes = set(app_routes(full))
    table = {(r.path, m) for r in ROUTES for m in r.methods}
    assert routes - table == set(), "routes with no table entry"
    assert table - routes == set(), "table entries with no route"


def _log_in(client, who: str) -> None:
    """Give ``client`` (TestClient or httpx.Client) the credentials of ``who``."""
    if who == "api_key":
        client.headers["Authorization"] = f"Bearer {API_KEY}"
    elif who in ("staff", "manager"):
        page = client.get("/inbox/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        name = {"staff": "alice", "manager": "mia"}[who]
        r = client.post("/inbox/login", data={"username": name, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 303


def _client(app, who: str) -> TestClient:
    client = TestClient(app.asgi, follow_redirects=False)
    _log_in(client, who)
    return client


#: What each caller holds over HTTP (any caller may present a platform payload, and while
#: the sandbox is on any caller acts as a sandbox persona).
HOLDS = {
    "anonymous": {Role.ANONYMOUS, Role.PLATFORM, Role.SANDBOX},
    "staff": {Role.ANONYMOUS, Role.PLATFORM, Role.SANDBOX, Role.STAFF},
    "manager": {Role.ANONYMOUS, Role.PLATFORM, Role.SANDBOX, Role.MANAGER},
    "api_key": {Role.ANONYMOUS, Role.PLATFORM, Role.SANDBOX, Role.API_KEY},
}
PARAMS = {"token": "nosuch", "chat_id": "group-1", "user_id": "manager", "ticket_id": "1",
          "action": "claim"}  # fmt: skip


def _cases(path: str) -> list[tuple[str, str]]:
    """(url, channel) — routes about a customer are tried on a sandbox and a real one."""
    url = path
    for key, value in PARAMS.items():
        url = url.replace("{" + key + "}", value)
    if "{channel}" in url:
        return [(url.replace("{channel}", c), c) for c in ("sandbox", "telegram")]
    return [(url, "")]


def _route_matrix(app, client_for) -> list[tuple]:
    """Every route of ``app`` as every caller; what disagrees with the table."""
    wrong = []
    for who, holds in HOLDS.items():
        client = client_for(who)
        for path, method in app_routes(app):
            grants = authz.route_rule(path, method).grants
            for url, channel in _cases(path):
                allowed = any(
                    role in grants and not (role is Role.SANDBOX and channel not in ("", "sandbox"))
                    for role in holds
                )
                # streamed, so a live-update stream that is let through is left at once
                with client.stream(method, url, headers={"Accept-Language": "en"}) as r:
                    refused = r.headers.get("x-siyu-refused") == "authz"
                    status = r.status_code
                if refused == allowed:
                    wrong.append((who, method, url, "allowed" if allowed else "refused", status))
    return wrong


def test_every_route_as_every_caller_is_allowed_or_refused_by_the_table(full):
    """Every surface on (platform callbacks included), in process."""
    wrong = _route_matrix(full, lambda who: _client(full, who))
    assert wrong == [], "\n".join(map(str, wrong))


def test_every_route_over_a_real_socket_is_allowed_or_refused_by_the_table(h):
    """The sandbox, inbox and API routes of a running Siyu, over HTTP on 127.0.0.1."""
    clients = []

    def client_for(who: str) -> httpx.Client:
        client = httpx.Client(base_url=server.url, follow_redirects=False, timeout=10)
        clients.append(client)
        _log_in(client, who)
        return client

    with LiveServer(h.app) as server:
        try:
            wrong = _route_matrix(h.app, client_for)
        finally:
            for client in clients:
                client.close()
    assert wrong == [], "\n".join(map(str, wrong))


def test_refusals_over_http_say_what_is_missing(full):
    anonymous = _client(full, "anonymous")
    r = anonymous.get("/inbox/api/queue", headers={"Accept-Language": "en"})
    assert (r.status_code, r.json()) == (401, {"error": "log in first"})
    r = anonymous.get("/inbox")
    assert (r.status_code, r.headers["location"]) == (303, "/inbox/login")
    r = anonymous.get("/api/customers/telegram/42")
    assert r.status_code == 401 and r.json()["error"] == t("authz.http.api_key", None)
    staff = _client(full, "staff")
    assert staff.get("/inbox/manager").status_code == 403
    assert staff.get("/api/customers/telegram/42").status_code == 401
    manager = _client(full, "manager")
    assert manager.get("/api/customers/telegram/42").status_code == 404  # allowed; no such one


def test_docs_security_shows_the_table_of_the_code():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text("utf-8")
    shown = doc.split("<!-- authz-table:start -->\n", 1)[1].split("<!-- authz-table:end -->")[0]
    assert shown == authz.table_markdown(), (
        "docs/security.md is out of date: paste bot.core.authz.table_markdown() between "
        "the authz-table markers"
    )


async def test_help_lists_what_the_table_lets_each_role_run(h):
    await _members(h)
    for user, chat, role in (
        ("cust", None, Role.CUSTOMER),
        ("admin_a", GROUP_A, Role.GROUP_ADMIN),
        ("staff1", None, Role.STAFF),
        ("manager", None, Role.MANAGER),
    ):
        await h.say(user, "/help", chat=chat, locale="en")
        await h.deliver()
        shown = re.findall(r"^/(\w+)\b", (await h.bot_messages(chat or user))[-1], re.M)
        assert shown == authz.commands_for(role), user


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[roles]\nstaff_accounts = ['telegram:42']\n", "roles.staff_accounts[0]"),
        ("[roles]\nstaff_accounts = ['mars:42:mia']\n", "roles.staff_accounts[0]"),
        ("[sandbox]\ngroup_admins = ['alice']\n", "sandbox.group_admins[0]"),
    ],
)
def test_role_links_in_the_config_are_checked(tmp_path, body, key):
    path = tmp_path / "siyu.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key
