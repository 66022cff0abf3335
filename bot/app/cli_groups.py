"""``siyu sop ...``, ``siyu faq ...`` and ``siyu mod log``: running the groups from the shell.

They take the same definitions as the chat commands and call the same functions
(bot/groups/): ``siyu sop add morning daily 07:30 to=all "text=早上好"`` is ``/sop add
morning daily 07:30 to=all | 早上好``; ``siyu faq add 怎么退货 keywords=退货,退换 --answer
"收到商品 7 天内可退 || Returns within 7 days"``. Output is in the brand's locale
(``[general] locale``); errors go to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from zoneinfo import ZoneInfo

from bot.app.config import CHANNELS, Config

__all__ = ["COMMANDS", "add_parsers"]

SOP_ACTIONS = ("add", "list", "show", "pause", "resume", "del", "tag")
FAQ_ACTIONS = ("add", "list", "del")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    sop = sub.add_parser("sop", parents=[common], help="scheduled group posts (SOP plans)")
    ssub = sop.add_subparsers(dest="sop_command", required=True, metavar="ACTION")
    add = ssub.add_parser("add", parents=[common], help="NAME WHEN... to=... text=...|template=...")
    add.add_argument("definition", nargs="+", help="as /sop add: NAME WHEN key=value ...")
    ssub.add_parser("list", parents=[common], help="all plans")
    show = ssub.add_parser("show", parents=[common], help="a plan's delivery and clicks per group")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    for action in ("pause", "resume", "del"):
        ssub.add_parser(action, parents=[common], help=f"{action} a plan").add_argument("name")
    tag = ssub.add_parser("tag", parents=[common], help="tag a group (for to=tag:...)")
    tag.add_argument("channel", choices=CHANNELS)
    tag.add_argument("chat_id")
    tag.add_argument("tag")
    tag.add_argument("--remove", action="store_true", help="take the tag off")

    faq = sub.add_parser("faq", parents=[common], help="FAQ answers")
    fsub = faq.add_subparsers(dest="faq_command", required=True, metavar="ACTION")
    fadd = fsub.add_parser("add", parents=[common], help="QUESTION key=value ... --answer TEXT")
    fadd.add_argument("definition", nargs="+", help="as /faq add: QUESTION key=value ...")
    fadd.add_argument("--answer", default="", help="the answer: 中文 || English")
    fsub.add_parser("list", parents=[common], help="all entries with their hits")
    fdel = fsub.add_parser("del", parents=[common], help="delete an entry by id")
    fdel.add_argument("id", type=int)

    mod = sub.add_parser("mod", parents=[common], help="group moderation")
    msub = mod.add_subparsers(dest="mod_command", required=True, metavar="ACTION")
    log = msub.add_parser("log", parents=[common], help="recent moderation actions")
    log.add_argument("--group", default="", help="CHANNEL:CHAT_ID (default: all groups)")
    log.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")


def _services(config: Config):
    from bot.app.services import Services
    from bot.core.clock import SystemClock
    from bot.core.templating import Renderer
    from storage.db import Database

    return Services(Database(config.database.url), config, Renderer(), SystemClock())


def _fail(exc, locale: str) -> int:
    print(f"siyu: {exc.text(locale)}", file=sys.stderr)
    return 1


def cmd_sop(config: Config, args: argparse.Namespace) -> int:
    from bot.core.i18n import t
    from bot.groups import sop
    from bot.groups.errors import GroupsError

    services = _services(config)
    locale = config.general.locale
    now = services.clock.now()
    action = args.sop_command
    try:
        with services.db.transaction() as session:
            if action == "add":
                line = " ".join(shlex.quote(w) for w in args.definition)
                spec = sop.parse_plan(line, services.renderer)
                plan = sop.create_plan(session, spec, config=config, now=now, created_by="cli")
                groups = len(sop.resolve_groups(session, plan))
                print(t("groups.sop.created", locale, name=plan.name, when=plan.schedule, groups=groups))  # fmt: skip
            elif action == "list":
                plans = sop.list_plans(session)
                if not plans:
                    print(t("groups.cli.no_plans", locale))
                    return 0
                print(t("groups.cli.plan_header", locale))
                for p in plans:
                    print("\t".join(_plan_fields(p, config, now, locale)))
            elif action == "show":
                found = sop.find_plan(session, args.name)
                if found is None:
                    raise GroupsError("groups.sop.error.no_plan", name=args.name)
                report = sop.plan_report(session, found)
                if args.json:
                    print(json.dumps({"plan": found.name, "groups": report}, ensure_ascii=False))
                    return 0
                print("\t".join(_plan_fields(found, config, now, locale)))
                print(t("groups.cli.report_header", locale))
                for g in report:
                    status = ", ".join(f"{k} {v}" for k, v in sorted(g["status"].items()))
                    print(f"{g['group']}\t{g['title']}\t{g['posts']}\t{status}\t{g['button_clicks']}\t{g['link_clicks']}")  # fmt: skip
            elif action in ("pause", "resume"):
                plan = sop.set_status(
                    session, args.name, "paused" if action == "pause" else "active", now
                )
                print(t(f"groups.sop.{action}d", locale, name=plan.name))
            elif action == "del":
                sop.delete_plan(session, args.name)
                print(t("groups.sop.deleted", locale, name=args.name))
            elif action == "tag":
                sop.tag_group(session, args.channel, args.chat_id, args.tag, remove=args.remove, now=now)  # fmt: skip
                key = "groups.sop.untagged" if args.remove else "groups.sop.tagged"
                print(f"{args.channel}:{args.chat_id}: " + t(key, locale, tag=args.tag))
    except GroupsError as exc:
        return _fail(exc, locale)
    return 0


def _plan_fields(plan, config: Config, now, locale: str) -> list[str]:
    from bot.core.i18n import t
    from bot.groups.schedule import parse_schedule

    zone = ZoneInfo(config.general.timezone)
    nxt = parse_schedule(plan.schedule).next_after(now, zone) if plan.status == "active" else None
    return [
        plan.name,
        plan.schedule,
        ",".join(plan.targets),
        t(f"groups.sop.status.{plan.status}", locale),
        nxt.astimezone(zone).strftime("%Y-%m-%d %H:%M") if nxt else "-",
    ]


def cmd_faq(config: Config, args: argparse.Namespace) -> int:
    from bot.core.i18n import t
    from bot.groups import faq
    from bot.groups.errors import GroupsError

    services = _services(config)
    locale = config.general.locale
    now = services.clock.now()
    try:
        with services.db.transaction() as session:
            if args.faq_command == "add":
                line = " ".join(shlex.quote(w) for w in args.definition)
                if args.answer:
                    line += " | " + args.answer
                spec = faq.parse_faq(line, services.renderer, config)
                entry = faq.add_entry(session, spec, config=config, now=now, created_by="cli")
                print(t("groups.faq.added", locale, id=entry.id, question=entry.question))
            elif args.faq_command == "list":
                entries = faq.list_entries(session)
                if not entries:
                    print(t("groups.cli.no_faq", locale))
                    return 0
                print(t("groups.cli.faq_header", locale))
                for e in entries:
                    where = ",".join(e.chats) if e.scope == "chats" else e.scope
                    print(f"{e.id}\t{e.question}\t{','.join(e.keywords)}\t{where}\t{e.group_mode}\t{e.cooldown_seconds}\t{e.hits}")  # fmt: skip
            else:
                entry = faq.delete_entry(session, args.id)
                print(t("groups.faq.deleted", locale, id=args.id, question=entry.question))
    except GroupsError as exc:
        return _fail(exc, locale)
    return 0


def cmd_mod(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from bot.core.i18n import t
    from bot.groups.moderation import recent_actions
    from storage.models import Group

    locale = config.general.locale
    if not 1 <= args.limit <= 1000:
        print("siyu: " + t("groups.mod.error.number", locale, what="--limit", low=1, high=1000), file=sys.stderr)  # fmt: skip
        return 1
    services = _services(config)
    zone = ZoneInfo(config.general.timezone)
    with services.db.sessions() as session:
        group_id = None
        if args.group:
            channel, _, chat = args.group.partition(":")
            group_id = session.scalar(
                select(Group.id).where(Group.channel == channel, Group.external_id == chat)
            )
            if group_id is None:
                print("siyu: " + t("groups.sop.error.no_group", locale, group=args.group), file=sys.stderr)  # fmt: skip
                return 1
        rows = recent_actions(session, group_id, limit=args.limit)
        if not rows:
            print(t("groups.cli.no_actions", locale))
            return 0
        print(t("groups.cli.log_header", locale))
        for action, group, status in rows:
            print(
                "\t".join(
                    [
                        action.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                        f"{group.channel}:{group.external_id}",
                        f"{action.user_name or '-'} ({action.user_id})",
                        t(f"groups.mod.action.{action.action}", locale),
                        t(f"groups.mod.reason.{action.reason}", locale),
                        action.detail or "-",
                        action.actor,
                        status or "-",
                    ]
                )
            )
    return 0


COMMANDS = {"sop": cmd_sop, "faq": cmd_faq, "mod": cmd_mod}
