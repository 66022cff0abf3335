"""The ``siyu`` command line: run, migrate, customer show."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bot.app import (
    cli_campaigns,
    cli_customers,
    cli_data,
    cli_groups,
    cli_measures,
    cli_purge,
    cli_staff,
)
from bot.app.config import CHANNELS, Config, ConfigError, find_config_path, load_config
from bot.app.roles import Role

__all__ = ["main"]

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (else $SIYU_CONFIG, else ./config.toml if present, else defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="siyu",
        description="Siyu (私域): private-domain operations bot",
        epilog="--config FILE, -v (log INFO lines) and --json (data as JSON) may come "
        "anywhere on the line.",
    )
    parser.add_argument("--config", metavar="FILE", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run", parents=[common], help="migrate, then serve all configured channels"
    )
    run.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=None,
        help="what this process runs (default: [process] role, else all; see docs/deploy.md)",
    )
    sub.add_parser("migrate", parents=[common], help="apply database migrations")
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    customer = sub.add_parser("customer", parents=[common], help="customer records")
    csub = customer.add_subparsers(dest="customer_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", parents=[common], help="a customer's profile")
    show.add_argument("channel", choices=CHANNELS)
    show.add_argument("user_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    merge = csub.add_parser(  # same person on two channels without a shared unionid
        "merge", parents=[common], help="fold customer B into customer A (ids from 'show')"
    )
    merge.add_argument("into_id", type=int, metavar="A")
    merge.add_argument("from_id", type=int, metavar="B")
    cli_customers.add_customer_parsers(csub, common)  # customer set
    cli_data.add_search_parser(csub, common)
    _staff_parser(sub, common)
    cli_data.add_parsers(sub, common)
    cli_customers.add_parsers(sub, common)  # import, segment, rfm, tags
    cli_campaigns.add_parsers(sub, common)  # campaign, report campaign|scenario|...
    cli_measures.add_parsers(sub, common)  # survey send (reports are under "report")
    cli_groups.add_parsers(sub, common)  # groups: sop, faq, mod log
    cli_purge.add_parsers(sub, common)  # purge ([retention])
    return parser


def _staff_parser(sub, common: argparse.ArgumentParser) -> None:
    """``siyu staff add NAME --role staff|manager`` (the staff inbox)."""
    staff = sub.add_parser("staff", parents=[common], help="staff inbox accounts")
    ssub = staff.add_subparsers(dest="staff_command", required=True, metavar="ACTION")
    add = ssub.add_parser(
        "add",
        parents=[common],
        help="create a staff account (password from $SIYU_STAFF_PASSWORD or a prompt)",
    )
    add.add_argument("name")
    add.add_argument("--role", choices=("staff", "manager"), default="staff")
    add.add_argument("--display-name", default="")
    add.add_argument("--locale", choices=("zh-CN", "en"), default="zh-CN", help="inbox language")
    ssub.add_parser("list", parents=[common], help="list staff accounts")
    cli_staff.add_staff_parsers(ssub, common)  # passwd, disable, enable, role


def _configure_logging(config: Config, *, verbose: bool, command: str) -> None:
    """``siyu run`` logs at ``[logging] level``; other commands print only their results
    and warnings (no Alembic/INFO lines) unless ``-v``. Every line is redacted
    (bot/app/logs.py)."""
    from bot.app.logs import configure_logging

    configure_logging(config, level=None if verbose or command == "run" else "WARNING")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(find_config_path(args.config))
    if config.web.password_time_cost or config.web.password_memory_kib:
        from bot.conversations.staff import use_password_cost

        use_password_cost(config.web.password_time_cost, config.web.password_memory_kib)
    return config


#: Options accepted anywhere on the line (before or after the subcommand and its arguments).
ANYWHERE = ("--config", "-v", "--verbose", "--json")


def hoist_options(argv: Sequence[str]) -> tuple[list[str], dict]:
    """Take ``--config FILE`` (or ``--config=FILE``), ``-v`` and ``--json`` out of the line
    wherever they are, so a trailing ``--config prod.toml`` is never taken as part of a
    campaign definition. Returns the rest and the options found."""
    rest: list[str] = []
    found: dict = {"config": None, "verbose": False, "json": False}
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            rest += items[i:]
            break
        if item == "--config":
            if i + 1 >= len(items):
                rest.append(item)  # argparse says the value is missing
                break
            found["config"] = items[i + 1]
            i += 2
            continue
        if item.startswith("--config="):
            found["config"] = item.partition("=")[2]
        elif item in ("-v", "--verbose"):
            found["verbose"] = True
        elif item == "--json":
            found["json"] = True
        else:
            rest.append(item)
        i += 1
    return rest, found


def main(argv: Sequence[str] | None = None) -> int:
    rest, hoisted = hoist_options(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(rest)
    args.config = hoisted["config"] or getattr(args, "config", None)
    args.json = hoisted["json"] or getattr(args, "json", False)
    args.verbose = hoisted["verbose"]
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(config, verbose=args.verbose, command=args.command)
    try:
        return _dispatch(config, args)
    except KeyboardInterrupt:
        print("siyu: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        from bot.app.cli_output import database_problem

        problem = database_problem(exc, config.database.url)
        if problem is None and isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            problem = database_problem(Exception("disk is full"), config.database.url)
        if problem is None or not isinstance(exc, DBAPIError | OSError):
            raise
        print(f"siyu: {problem}", file=sys.stderr)
        return 1


def _dispatch(config: Config, args: argparse.Namespace) -> int:
    handler = {
        "run": cmd_run,
        "migrate": cmd_migrate,
        "check-config": cmd_check,
        "customer": cmd_customer,
        **cli_customers.COMMANDS,
        **cli_campaigns.COMMANDS,
        **cli_measures.COMMANDS,
        **cli_groups.COMMANDS,
        **cli_purge.COMMANDS,
        "staff": cmd_staff,
        "export": cli_data.cmd_export,
    }
    return handler[args.command](config, args)


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from bot.app.exposure import check_exposure

    try:
        check_exposure(config)  # what `siyu run` would refuse (the sandbox exposed)
    except ConfigError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        from bot.app.cli_output import emit_json

        emit_json({"ok": True, "source": str(config.source)})
        return 0
    print(f"configuration OK ({config.source})")
    return 0


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    from storage.db import Database

    db = Database(config.database.url)
    db.migrate()
    print(f"database is up to date ({db.engine.url.render_as_string(hide_password=True)})")
    db.close()
    return 0


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from bot.app.assembly import build, serve

    role = Role(args.role or config.process.role)
    try:
        app = build(config, role=role)
    except ConfigError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if role is not Role.ALL and not app.runtime.db.is_postgres:
        # SQLite is one process by design (a starting worker requeues every claim it finds)
        import os

        from bot.core.i18n import t

        lang = os.environ.get("LANG", "zh-CN")
        print(f"siyu: {t('deploy.run.needs_postgres', lang, role=role)}", file=sys.stderr)
        app.runtime.db.close()
        return EXIT_USAGE
    if role is Role.ALL:
        app.runtime.db.migrate()
    elif not app.runtime.db.at_head():
        # several processes of a split deployment must not race to migrate: one
        # `siyu migrate` runs first (docs/deploy.md)
        import os

        from bot.core.i18n import t

        lang = os.environ.get("LANG", "zh-CN")
        print(f"siyu: {t('deploy.run.not_migrated', lang, role=role)}", file=sys.stderr)
        app.runtime.db.close()
        return EXIT_USAGE
    serve(app)
    app.runtime.db.close()
    return 0


def cmd_customer_merge(config: Config, args: argparse.Namespace) -> int:
    from bot.core.clock import SystemClock
    from storage.db import Database
    from storage.identity_links import MergeError, merge_customers

    db = Database(config.database.url)
    try:
        with db.transaction() as session:
            merge_customers(
                session, args.into_id, args.from_id, reason="manager (CLI)", now=SystemClock().now()
            )
    except MergeError as exc:
        print(f"siyu: cannot merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    print(f"customer #{args.from_id} merged into #{args.into_id}")
    return 0


def cmd_customer(config: Config, args: argparse.Namespace) -> int:
    if args.customer_command == "merge":
        return cmd_customer_merge(config, args)
    if args.customer_command == "set":
        return cli_customers.cmd_customer_set(config, args)
    if args.customer_command == "forget":
        return cli_customers.cmd_customer_forget(config, args)
    if args.customer_command == "search":
        return cli_data.cmd_search(config, args)
    from bot.core.clock import SystemClock
    from storage.db import Database
    from storage.repos import customer_profile

    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            profile = customer_profile(session, args.channel, args.user_id, SystemClock().now())
            if profile is None:
                print(f"siyu: no customer with {args.channel} id {args.user_id!r}", file=sys.stderr)
                return 1
            data = profile.as_dict(reveal_phone=True)  # the operator's own tool
    finally:
        db.close()
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(_format_profile(data))
    return 0


def _format_profile(p: dict) -> str:
    lines = [
        f"Customer #{p['id']}  {p['display_name']}  ({p['locale']}, {p['timezone']})",
        f"  opted out of marketing: {'yes' if p['marketing_opt_out'] else 'no'}",
        f"  last active: {p['last_active_at'] or '-'}",
        *cli_customers.profile_lines(p),  # attributes, value, orders
        "Identities:",
    ]
    for i in p["identities"]:
        flag = f"  UNREACHABLE: {i['unreachable_reason']}" if i["unreachable"] else ""
        lines.append(f"  {i['channel']}:{i['user_id']}  {i['display_name']}{flag}")
    lines.append("Tags:")
    for t in p["tags"] or []:
        expiry = f", expires {t['expires_at']}" if t["expires_at"] else ""
        lines.append(f"  {t['tag']}  (source {t['source']}, since {t['first_seen_at']}{expiry})")
    if not p["tags"]:
        lines.append("  (none)")
    lines.append("Conversations:")
    for c in p["conversations"]:
        lines.append(
            f"  {c['channel']}:{c['chat_id']}  handoff={c['handoff_status']}"
            f"  flow={c['flow'] or '-'} step={c['step'] or '-'}  state={json.dumps(c['state'], ensure_ascii=False)}"
        )
    lines.append("Recent interactions:")
    for i in p["interactions"]:
        err = f"  [error: {i['error']}]" if i["error"] else ""
        lines.append(f"  {i['at']}  {i['kind']:<8} {i['chat_id']}: {i['text']}{err}")
    return "\n".join(lines)


def cmd_staff(config: Config, args: argparse.Namespace) -> int:
    """Create or list inbox accounts; the password never appears on the command line."""
    import getpass
    import os

    from bot.app.cli_output import emit_json
    from bot.conversations.staff import StaffError, create_staff, list_staff
    from bot.core.clock import SystemClock
    from storage.db import Database

    if args.staff_command in cli_staff.ACTIONS:
        return cli_staff.cmd_staff_change(config, args)
    db = Database(config.database.url)
    try:
        db.migrate()
        if args.staff_command == "list":
            with db.sessions() as session:
                users = list_staff(session)
                if args.json:
                    fields = ("username", "role", "display_name", "locale", "active")
                    emit_json([{f: getattr(u, f) for f in fields} for u in users])
                    return 0
                for user in users:
                    state = "" if user.active else "  (inactive)"
                    print(
                        f"{user.username}\t{user.role}\t{user.display_name}\t{user.locale}{state}"
                    )
            return 0
        password = os.environ.get("SIYU_STAFF_PASSWORD")
        if password is None:
            try:
                password = getpass.getpass(f"password for {args.name}: ")
                again = getpass.getpass("again: ")
            except EOFError:
                print("siyu: no password given: type it, or set $SIYU_STAFF_PASSWORD",
                      file=sys.stderr)  # fmt: skip
                return EXIT_USAGE
            if again != password:
                print("siyu: the passwords differ", file=sys.stderr)
                return EXIT_USAGE
        try:
            with db.transaction() as session:
                create_staff(
                    session,
                    args.name,
                    password,
                    role=args.role,
                    display_name=args.display_name,
                    now=SystemClock().now(),
                ).locale = args.locale
        except StaffError as exc:
            print(f"siyu: {exc}", file=sys.stderr)
            return EXIT_USAGE
    finally:
        db.close()
    print(f"staff account {args.name!r} ({args.role}) created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
