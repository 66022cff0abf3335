"""Reasons, statuses and audit entries said through the catalogue, never as raw codes."""

from __future__ import annotations

import json

from bot.core.i18n import catalogue, t

__all__ = ["action_label", "audit_detail", "label", "reason_label", "status_label"]


def label(area: str, code: str | None, locale: str) -> str:
    """``t(f"{area}.{code}")``, or the area's ``other`` text for a code it does not know."""
    key = f"{area}.{code}"
    return t(key if key in catalogue() else f"{area}.other", locale)


def reason_label(reason: str, locale: str) -> str:
    """Why a conversation went to staff (``keyword`` → 关键词)."""
    return label("handoff.reason", reason, locale)


def status_label(status: str, locale: str) -> str:
    """A ticket status (``waiting`` → 待接待)."""
    return label("handoff.status", status, locale)


def action_label(action: str, locale: str) -> str:
    """An audit action (``claim`` → 接待)."""
    return label("handoff.action", action, locale)


def audit_detail(detail: dict | None, locale: str) -> list[tuple[str, str]]:
    """An audit entry's details as readable (field, value) pairs; reasons translated,
    text kept as written (never ``\\u60a8`` escapes)."""
    pairs = []
    for key, value in (detail or {}).items():
        if value is None or value == "":
            continue
        if key == "reason" and isinstance(value, str):
            value = reason_label(value, locale)
        elif not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        field = t(f"handoff.field.{key}", locale) if f"handoff.field.{key}" in catalogue() else key
        pairs.append((field, value))
    return pairs
