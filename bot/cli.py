"""The ``siyu`` command line: run, migrate, customer show."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from bot.config import CHANNELS, Config, ConfigError, find_config_path, load_config

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
        prog="siyu", description="Siyu (私域): private-domain operations bot"
    )
    parser.add_argument("--config", metavar="FILE", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="migrate, then serve all configured channels")
    sub.add_parser("migrate", parents=[common], help="apply database migrations")
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    customer = sub.add_parser("customer", parents=[common], help="customer records")
    csub = customer.add_subparsers(dest="customer_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", parents=[common], help="a customer's profile")
    show.add_argument("channel", choices=CHANNELS)
    show.add_argument("user_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _configure_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _load(args: argparse.Namespace) -> Config:
    return load_config(find_config_path(args.config))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(config)
    handler = {
        "run": cmd_run,
        "migrate": cmd_migrate,
        "check-config": cmd_check,
        "customer": cmd_customer,
    }
    return handler[args.command](config, args)


def cmd_check(config: Config, args: argparse.Namespace) -> int:
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
    from bot.app import build, serve

    app = build(config)
    app.runtime.db.migrate()
    serve(app)
    app.runtime.db.close()
    return 0


def cmd_customer(config: Config, args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from storage.db import Database
    from storage.repos import customer_profile

    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            profile = customer_profile(session, args.channel, args.user_id, SystemClock().now())
            if profile is None:
                print(f"siyu: no customer with {args.channel} id {args.user_id!r}", file=sys.stderr)
                return 1
            data = profile.as_dict()
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


if __name__ == "__main__":
    sys.exit(main())
