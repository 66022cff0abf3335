"""Keeping secrets out of log lines and stored errors.

One :func:`redact` is applied wherever an error text is stored (outbox ``last_error``,
WeChat delivery rows, an interaction's handler errors, unreachable reasons) and, through
:class:`RedactingFilter` on the root log handlers, to every log line — ours and those of
httpx, python-telegram-bot, wechatpy, requests/urllib3 and uvicorn.

It replaces two kinds of text with ``***``:

* every configured secret value (:func:`register_secrets`; the app registers its Telegram
  token, webhook secret, WeChat AppSecret / token / EncodingAESKey, WeCom secret, API key,
  session key and database passwords at start-up);
* token-like parts of URLs and payloads whatever their value: ``/bot<token>/``,
  ``secret=…``, ``access_token=…``, ``corpsecret=…``, ``token=…``,
  ``"access_token": "…"``, a password
  in ``scheme://user:password@host``, ``Bearer …``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

__all__ = [
    "MASK",
    "RedactingFilter",
    "redact",
    "redact_or_none",
    "register_secrets",
    "registered_count",
]

MASK = "***"

#: Values shorter than this are not registered (replacing them would garble plain text).
MIN_SECRET_LENGTH = 6

#: (a substring the text must contain for the pattern to be worth trying, pattern, replacement)
_PATTERNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # Telegram Bot API URLs: https://api.telegram.org/bot123456:ABC.../getMe
    ("/bot", re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+"), r"\1" + MASK),
    # A bare Telegram bot token anywhere.
    (":", re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}\b"), MASK),
    # Query strings and form bodies: secret=…, access_token=…, corpsecret=…, token=…
    (
        "=",
        re.compile(
            r"(?i)(?<![A-Za-z0-9_])((?:access_token|appsecret|corpsecret|secret|secret_key|"
            r"api_key|apikey|token|password|passwd|provider_access_token|suite_access_token)"
            r"=)[^&\s'\"<>;,]+"
        ),
        r"\1" + MASK,
    ),
    # JSON: "access_token": "…"
    (
        '"',
        re.compile(
            r"(?i)(\"(?:access_token|secret|corpsecret|appsecret|token|password|api_key)\"\s*:\s*\")"
            r"[^\"]*"
        ),
        r"\1" + MASK,
    ),
    # A password inside a URL: postgresql://user:password@host/db, redis://:pw@host
    ("@", re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(@)"), r"\1" + MASK + r"\2"),
    # Authorization headers.
    ("earer", re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | None]) -> None:
    """Add configured secret values to redact from now on (short or empty ones are ignored)."""
    global _secrets, _secret_pattern
    fresh = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    with _lock:
        merged = _secrets | fresh
        if merged == _secrets:
            return
        _secrets = frozenset(merged)
        # Longest first, so a secret that contains another is masked whole.
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def registered_count() -> int:
    """How many secret values are registered (for start-up logging and tests)."""
    return len(_secrets)


def redact(text: object) -> str:
    """``text`` with every registered secret and token-like URL part replaced by ``***``."""
    if text is None:
        return ""
    out = text if isinstance(text, str) else str(text)
    pattern = _secret_pattern
    if pattern is not None:
        out = pattern.sub(MASK, out)
    for needle, regex, replacement in _PATTERNS:
        if needle in out or (needle == "earer" and "EARER" in out):
            out = regex.sub(replacement, out)
    return out


def redact_or_none(text: object) -> str | None:
    """:func:`redact`, keeping None as None (for nullable error columns)."""
    return None if text is None else redact(text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message, exception and stack text.

    Installed on handlers (not loggers) so that records propagated from every library's
    logger pass through it. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
