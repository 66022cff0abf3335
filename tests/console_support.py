"""Helpers for the manager console tests: a served Siyu with a manager and a staff account,
and a logged-in HTTP client."""

from __future__ import annotations

import re
from dataclasses import replace

import httpx

from bot.app.assembly import build
from bot.conversations.staff import create_staff
from bot.core.clock import Clock, SystemClock
from storage.db import Database

MANAGER = ("maria", "manager-pass-1")
STAFF = ("sam", "staff-pass-123")


def build_console(config, db: Database, clock: Clock | None = None, *, scheduler: bool = False):
    """A built app on ``db`` with the accounts maria (manager) and sam (staff)."""
    config = config.replace(database=replace(config.database, url=db.url))
    if scheduler:
        config = config.replace(
            scenarios=replace(config.scenarios, scheduler=True, tick_seconds=0.5, definitions=[])
        )
    clock = clock or SystemClock()
    with db.transaction() as s:
        create_staff(s, MANAGER[0], MANAGER[1], role="manager", now=clock.now())
        create_staff(s, STAFF[0], STAFF[1], role="staff", now=clock.now())
    return build(config, db=db, clock=clock)


def login(base: str, who: tuple[str, str]) -> httpx.Client:
    """An HTTP client logged in to the inbox as ``who``; ``client.csrf`` is its token."""
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    page = client.get("/inbox/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/inbox/login", data={"username": who[0], "password": who[1], "csrf": token}
    )
    assert answer.status_code == 303, answer.text
    client.csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/inbox").text).group(1)
    return client
