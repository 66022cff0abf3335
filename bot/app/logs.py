"""Log set-up for a Siyu process: the format, the level, and secret redaction.

Every configured secret is registered with :mod:`bot.core.redaction` and a
:class:`~bot.core.redaction.RedactingFilter` is put on every root handler, so no log line
of Siyu or of the libraries it uses (httpx, python-telegram-bot, wechatpy, requests,
urllib3, uvicorn) carries a token, an AppSecret or a password.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bot.app.config import Config
from bot.core.logcontext import current_ids
from bot.core.redaction import RedactingFilter, redact, register_secrets

__all__ = ["JsonFormatter", "configure_logging", "install_redaction", "secrets_of"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def secrets_of(config: Config) -> list[str]:
    """Every secret value the configuration holds (empty ones included; they are skipped)."""
    return [
        config.telegram.token,
        config.telegram.webhook_secret,
        _url_password(config.telegram.redis_url),
        _url_password(config.limits.redis_url),
        config.wechat.app_secret,
        config.wechat.token,
        config.wechat.encoding_aes_key,
        config.wecom.secret,
        config.wecom.token,
        config.wecom.encoding_aes_key,
        config.api.key,
        config.handoff.secret_key,
        _url_password(config.database.url),
    ]


def install_redaction(config: Config, root: logging.Logger | None = None) -> None:
    """Register the config's secrets and filter every handler of the root logger."""
    register_secrets(secrets_of(config))
    root = root or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event and outbox ids
    the record is about (:mod:`bot.core.logcontext`, or ``extra=``), and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_ids(),
        }
        for key in ("event_id", "outbox_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:  # already redacted by the filter
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(config: Config, *, level: str | None = None) -> None:
    """The process's logging: one stderr handler at ``level`` (default: the configured
    one) and format (text, or JSON with ``[logging] format = "json"``), redacting."""
    chosen = level or config.logging.level.upper()
    logging.basicConfig(level=chosen, format=LOG_FORMAT, force=True)
    if config.logging.format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    install_redaction(config)
