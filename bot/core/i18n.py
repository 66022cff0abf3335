"""The one catalogue of short texts people read: labels, errors, usage lines, statuses.

Longer customer-facing messages are Jinja2 templates (``bot.core.templating``); every
shorter text — inbox and console labels, CLI output, refusals, reasons, statuses — is a key
in ``templates/i18n/*.toml``, one file per area, each key with a ``zh-CN`` and an ``en``
text::

    [inbox.claim]
    zh-CN = "接手"
    en = "Claim"

    [handoff.reason.keyword]
    zh-CN = "关键词：{word}"
    en = "keyword: {word}"

``t("inbox.claim", "en")`` picks the reader's locale (zh-CN first, then en), and fills
``{placeholders}`` from keyword arguments. A key missing from the catalogue is an error at
once (``KeyError``), never a silently English or empty text.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from bot.core.templating import TEMPLATES_DIR

__all__ = ["CATALOGUE_DIR", "LOCALES", "Catalogue", "catalogue", "normalize_locale", "t"]

CATALOGUE_DIR = TEMPLATES_DIR / "i18n"
LOCALES = ("zh-CN", "en")


def normalize_locale(locale: str | None) -> str:
    """``zh``, ``zh_CN``, ``zh-Hans`` → ``zh-CN``; ``en-US`` → ``en``; anything else zh-CN."""
    if not locale:
        return LOCALES[0]
    low = locale.replace("_", "-").lower()
    if low.startswith("en"):
        return "en"
    return "zh-CN"


class Catalogue:
    """Every short text of Siyu in every locale, loaded from one folder of TOML files."""

    def __init__(self, directory: Path = CATALOGUE_DIR) -> None:
        self.directory = directory
        self.texts: dict[str, dict[str, str]] = {}
        for path in sorted(directory.glob("*.toml")):
            with path.open("rb") as fh:
                data = tomllib.load(fh)
            self._flatten(data, "", path)

    def _flatten(self, node: Mapping[str, Any], prefix: str, path: Path) -> None:
        for key, value in node.items():
            if key in LOCALES and isinstance(value, str):
                if prefix in self.texts and key in self.texts[prefix]:
                    raise ValueError(f"{path.name}: {prefix!r} defined twice")
                self.texts.setdefault(prefix, {})[key] = value
            elif isinstance(value, Mapping):
                self._flatten(value, f"{prefix}.{key}" if prefix else key, path)
            else:
                raise ValueError(f"{path.name}: {prefix}.{key}: expected a table or a locale text")

    def __contains__(self, key: str) -> bool:
        return key in self.texts

    def get(self, key: str, locale: str | None, /, **values: object) -> str:
        """The text of ``key`` in ``locale`` (falling back zh-CN, then en), filled in."""
        entry = self.texts[key]
        loc = normalize_locale(locale)
        text = entry.get(loc) or entry.get(LOCALES[0]) or entry[LOCALES[1]]
        return text.format_map(values) if values else text

    def missing(self) -> list[str]:
        """Keys that lack one of the locales (a test keeps this empty)."""
        return sorted(k for k, v in self.texts.items() if any(not v.get(lc) for lc in LOCALES))


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The catalogue of the installed templates folder (loaded once)."""
    return Catalogue()


def t(key: str, locale: str | None, /, **values: object) -> str:
    """Translate ``key`` for a reader of ``locale``: ``t("inbox.claim", staff.locale)``."""
    return catalogue().get(key, locale, **values)
