"""Turning an outbox message into Telegram requests: HTML escaping, splitting, keyboards.

Messages are sent with ``parse_mode=HTML``: every text is escaped, and the only markup
Siyu adds is a mention link (``tg://user?id=...``) for names listed in
``extra["mentions"]``. Telegram takes at most 4096 characters (UTF-16 code units) per
message, so longer texts are split, preferably at line breaks. Callback data is at most 64
bytes: longer button data is replaced by a short token that the adapter maps back.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Sequence

__all__ = [
    "CALLBACK_TOKEN_PREFIX",
    "MAX_CALLBACK_BYTES",
    "MAX_MESSAGE_UNITS",
    "callback_token",
    "fits_callback",
    "keyboard_rows",
    "render_chunks",
    "split_text",
    "utf16_len",
]

MAX_MESSAGE_UNITS = 4096
MAX_CALLBACK_BYTES = 64
CALLBACK_TOKEN_PREFIX = "~"


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE_UNITS) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, at line breaks or spaces
    where possible; joining the parts gives back the text (minus the separators cut at)."""
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        units = 0
        end = 0
        for i, ch in enumerate(rest):
            units += 2 if ord(ch) > 0xFFFF else 1
            if units > limit:
                end = i
                break
        cut = rest.rfind("\n", 0, end + 1)
        if cut < end // 2:
            cut = rest.rfind(" ", 0, end + 1)
        if cut < end // 2:
            parts.append(rest[:end])
            rest = rest[end:]
        else:
            parts.append(rest[:cut])
            rest = rest[cut + 1 :]
    if rest or not parts:
        parts.append(rest)
    return parts


def _with_mentions(chunk: str, mentions: list[dict]) -> str:
    """Escape a chunk and link the first occurrence of each pending mention found in it."""
    out = html.escape(chunk, quote=False)
    for mention in list(mentions):
        shown = html.escape(str(mention.get("text", "")), quote=False)
        user_id = str(mention.get("user_id", ""))
        if not shown or not user_id.lstrip("-").isdigit() or shown not in out:
            continue
        link = f'<a href="tg://user?id={user_id}">{shown}</a>'
        out = out.replace(shown, link, 1)
        mentions.remove(mention)
    return out


def render_chunks(text: str, mentions: Iterable[dict] = ()) -> list[str]:
    """The HTML texts of the Telegram messages that carry ``text``."""
    pending = [m for m in mentions if isinstance(m, dict)]
    return [_with_mentions(chunk, pending) for chunk in split_text(text)]


def callback_token(data: str) -> str:
    """Short stand-in for button data longer than 64 bytes (deterministic)."""
    digest = hashlib.sha256(data.encode()).digest()
    return CALLBACK_TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:40]


def fits_callback(data: str) -> bool:
    return 0 < len(data.encode()) <= MAX_CALLBACK_BYTES and not data.startswith(
        CALLBACK_TOKEN_PREFIX
    )


def keyboard_rows(buttons: Sequence[tuple[str, str]]) -> list[list[dict]]:
    """Inline keyboard rows (one button per row) from (label, callback data) pairs."""
    return [[{"text": label, "callback_data": data}] for label, data in buttons]
