"""``siyu purge [--dry-run]``: delete rows older than the ``[retention]`` periods."""

from __future__ import annotations

import argparse
import os

from bot.app.config import Config
from bot.core.i18n import t

__all__ = ["COMMANDS", "add_parsers", "cmd_purge"]


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    purge = sub.add_parser(
        "purge", parents=[common], help="delete rows older than the [retention] periods"
    )
    purge.add_argument("--dry-run", action="store_true", help="only count what would go")
    purge.add_argument("--lang", default=None, help="zh-CN or en (default: from $LANG)")


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    from bot.app.purge import purge
    from bot.core.clock import SystemClock
    from storage.db import Database

    lang = args.lang or os.environ.get("LANG", "zh-CN")
    db = Database(config.database.url)
    try:
        results = purge(db, config, SystemClock().now(), dry_run=args.dry_run)
    finally:
        db.close()
    if not results:
        print(t("deploy.purge.nothing", lang))
        return 0
    line = "deploy.purge.dry_line" if args.dry_run else "deploy.purge.line"
    for result in results:
        what = t(f"deploy.purge.{result.kind}", lang)
        cutoff = result.cutoff.strftime("%Y-%m-%d %H:%M UTC")
        print(t(line, lang, what=what, count=result.deleted, cutoff=cutoff))
    return 0


COMMANDS = {"purge": cmd_purge}
