"""``siyu staff passwd|disable|enable|role``: change inbox and console accounts from a
terminal, through the same functions as the console's Staff page (bot/conversations/staff.py).

The password is read from ``$SIYU_STAFF_PASSWORD`` or a prompt, never from the command
line. Messages are in the operator's language (``$LANG``: zh → 中文, otherwise English).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from bot.app.config import Config
from bot.core.i18n import t

__all__ = ["ACTIONS", "add_staff_parsers", "cmd_staff_change"]

ACTIONS = ("passwd", "disable", "enable", "role")
EXIT_USAGE = 2


def cli_locale() -> str:
    """The operator's language from the environment (``LC_ALL``, ``LC_MESSAGES``, ``LANG``)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value and value not in ("C", "POSIX") and not value.startswith("C."):
            return "zh-CN" if value.lower().startswith("zh") else "en"
    return "en"


def add_staff_parsers(ssub, common: argparse.ArgumentParser) -> None:
    """The account-changing verbs under ``siyu staff``."""
    passwd = ssub.add_parser(
        "passwd",
        parents=[common],
        help="set a new password (from $SIYU_STAFF_PASSWORD or a prompt)",
    )
    passwd.add_argument("name")
    for verb, text in (("disable", "deactivate an account"), ("enable", "reactivate an account")):
        ssub.add_parser(verb, parents=[common], help=text).add_argument("name")
    role = ssub.add_parser("role", parents=[common], help="make an account staff or manager")
    role.add_argument("name")
    role.add_argument("role", choices=("staff", "manager"))


def cmd_staff_change(config: Config, args: argparse.Namespace) -> int:
    """Run one of :data:`ACTIONS`; a refusal prints why and exits with 2."""
    from bot.conversations import handoff
    from bot.conversations.staff import StaffError, set_active, set_password, set_role
    from bot.core.clock import SystemClock
    from storage.db import Database

    locale = cli_locale()
    action, name = args.staff_command, args.name
    password = ""
    if action == "passwd":
        password = os.environ.get("SIYU_STAFF_PASSWORD") or ""
        if not password:
            password = getpass.getpass(t("console.cli.password_for", locale, name=name))
            if getpass.getpass(t("console.cli.again", locale)) != password:
                print(f"siyu: {t('console.cli.differ', locale)}", file=sys.stderr)
                return EXIT_USAGE
    db = Database(config.database.url)
    try:
        db.migrate()
        with db.transaction() as session:
            if action == "passwd":
                set_password(session, name, password)
            elif action in ("disable", "enable"):
                set_active(session, name, action == "enable")
            else:
                set_role(session, name, args.role)
            handoff.audit(session, "cli", f"staff_{action}", SystemClock().now(), username=name)
    except StaffError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    print(t(f"console.staff.done.{action}", locale, name=name))
    return 0
