"""Tracked links: ``{{ track(url) }}`` in a campaign template → ``<base>/r/<token>``.

Each rendered message gets its own tokens (:mod:`secrets`, 128 bits: not guessable),
stored in ``tracked_links`` bound to that message's outbox row (its idempotency key and
the link's position), so the click tells Siyu who opened what from which campaign,
variant and arm. A click (:func:`record_click`) counts the link, records an interaction
and publishes :class:`bot.core.signals.LinkClicked` (campaigns record the funnel's
``clicked``, tagging gives the ``link`` event-rule tags); the web route
(bot/web/links.py) then redirects to the target.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

import jinja2
from jinja2 import meta
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.signals import Bus, LinkClicked
from storage import repos
from storage.db import insert_ignore
from storage.links import TrackedLink
from storage.models import OutboxMessage

__all__ = [
    "Click",
    "LinkTracker",
    "base_url",
    "check_target",
    "insert_links",
    "preview_track",
    "record_click",
    "uses_track",
]

log = logging.getLogger(__name__)

TOKEN_BYTES = 16  # 22 URL-safe characters
MAX_URL = 2000


def base_url(config: Config) -> str:
    """Where ``/r/<token>`` is served: ``[links] base_url``, else the web server."""
    return config.links.base_url or f"http://{config.web.host}:{config.web.port}"


def check_target(url: object) -> str:
    """A link target must be an absolute http(s) URL; else the template fails (a preview
    shows the error, a send drops only that customer with ``render_error``)."""
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise jinja2.TemplateRuntimeError(f"track(): {url!r} is not an http(s) URL")
    if len(url) > MAX_URL or any(ch.isspace() for ch in url):
        raise jinja2.TemplateRuntimeError(
            f"track(): the URL must be at most {MAX_URL} characters, without spaces"
        )
    return url


def preview_track(url: object) -> str:
    """``track`` in previews and other renders: checks the URL, shows it untracked."""
    return check_target(url)


def uses_track(env: jinja2.Environment, source: str) -> bool:
    """Whether a template calls ``track`` (only those pay for tokens and link rows)."""
    try:
        return "track" in meta.find_undeclared_variables(env.parse(source))
    except jinja2.TemplateSyntaxError:
        return False


class LinkTracker:
    """``track`` for one message: the same URL twice in it gives the same token."""

    __slots__ = ("base", "tokens")

    def __init__(self, base: str) -> None:
        self.base = base
        self.tokens: dict[str, str] = {}

    def __call__(self, url: object) -> str:
        target = check_target(url)
        token = self.tokens.get(target)
        if token is None:
            token = self.tokens[target] = secrets.token_urlsafe(TOKEN_BYTES)
        return f"{self.base}/r/{token}"

    def rows(
        self,
        outbox_key: str,
        customer_id: int,
        campaign_id: int | None,
        variant: str,
        now: datetime,
    ) -> list[dict]:
        return [
            {
                "token": token,
                "outbox_key": outbox_key,
                "seq": seq,
                "url": url,
                "customer_id": customer_id,
                "campaign_id": campaign_id,
                "variant": variant[:32],
                "clicks": 0,
                "created_at": now,
            }
            for seq, (url, token) in enumerate(self.tokens.items())
        ]


def insert_links(session: Session, rows: list[dict]) -> int:
    """Store link rows; a message rendered again (a re-run) keeps its first tokens."""
    return insert_ignore(session, TrackedLink, rows, ["outbox_key", "seq"]) if rows else 0


@dataclass(frozen=True)
class Click:
    """A recorded click: where to go, and whose click it was."""

    url: str
    customer_id: int
    campaign_id: int | None


def record_click(session: Session, token: str, now: datetime, bus: Bus) -> Click | None:
    """Count a click on ``token`` and publish :class:`LinkClicked` on ``bus`` (campaigns
    count it in their funnel, the ``link`` event rules tag the customer); None for an
    unknown token (or one whose message was never queued)."""
    found = session.execute(
        select(TrackedLink, OutboxMessage.channel, OutboxMessage.chat_id)
        .join(OutboxMessage, OutboxMessage.idempotency_key == TrackedLink.outbox_key)
        .where(TrackedLink.token == token)
    ).one_or_none()
    if found is None:
        return None
    link, channel, chat_id = found
    clicks = session.execute(
        update(TrackedLink)
        .where(TrackedLink.id == link.id)
        .values(
            clicks=TrackedLink.clicks + 1,
            last_clicked_at=now,
            first_clicked_at=func.coalesce(TrackedLink.first_clicked_at, now),
        )
        .returning(TrackedLink.clicks)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    repos.record_interaction(
        session,
        link.customer_id,
        event_id=f"link-{link.id}-{clicks}"[:32],
        channel=channel,
        chat_id=chat_id,
        kind="link_click",
        text=link.url,
        payload={"campaign_id": link.campaign_id, "variant": link.variant, "seq": link.seq},
        now=now,
    )
    bus.publish(session, LinkClicked(link.customer_id, link.url, link.campaign_id, link.seq, now))
    return Click(link.url, link.customer_id, link.campaign_id)
