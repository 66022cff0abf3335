"""Parse a manager's campaign definition (command or CLI) into a checked spec.

``NAME segment="tag:早餐 and city:杭州" template=morning_offer coupon=breakfast5
pilot=5% holdout=5% hours=24 at=09:00 buttons="领券=claim;不感兴趣=no"
variants="a:morning_offer,b:weekend_trip" priority=10 weight=2`` — or ``text="{{ customer.name }}…"``
instead of a template. A variant may carry a weight, ``a:morning_offer:3,b:weekend_trip:1``
(default 1): customers are split between variants in proportion to their weights. The
campaign's own ``weight`` (1-10, default 1) is its part of the delivery workers' fair share
while other campaigns send at the same time. ``at`` is each customer's local ``HH:MM`` or an ISO moment.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from bot.app.config import Config
from bot.marketing.campaigns.push import Variant

__all__ = ["CampaignSpec", "SpecError", "parse_share", "parse_spec"]

NAME = re.compile(r"^[\w\-]{1,64}$")
#: The largest campaign weight in the fair share of delivery.
MAX_WEIGHT = 10
KEYS = (
    "segment",
    "template",
    "text",
    "coupon",
    "pilot",
    "holdout",
    "hours",
    "at",
    "buttons",
    "variants",
    "priority",
    "weight",
)


class SpecError(ValueError):
    """A campaign definition that cannot be taken, and why.

    ``str()`` is the English text (CLI, logs); ``key`` (templates/i18n/campaign.toml) and
    its values let :meth:`text` say it in the reader's locale (chat, console)."""

    def __init__(self, message: str, key: str | None = None, **values: object) -> None:
        super().__init__(message)
        self.key, self.values = key, values

    def text(self, locale: str | None) -> str:
        """The problem in the reader's locale (English when no key was given)."""
        from bot.core.i18n import t

        return t(self.key, locale, **self.values) if self.key else str(self)


@dataclass(frozen=True)
class CampaignSpec:
    """A campaign as the manager defined it (validated syntax; storage checks the rest)."""

    name: str
    segment: str
    variants: list[Variant]
    coupon: str | None = None
    pilot_share: float | None = None
    holdout_share: float | None = None
    pilot_hours: float | None = None
    send_at: datetime | None = None
    local_time: time | None = None
    buttons: list[tuple[str, str]] = field(default_factory=list)
    priority: int | None = None
    #: its part of the fair share of delivery among campaigns sending at once (1-10)
    weight: int | None = None


def parse_share(raw: str, key: str) -> float:
    """``5%`` or ``0.05`` → 0.05."""
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise SpecError(
            f"{key}={raw!r} is not a share (use e.g. 5% or 0.05)",
            "campaign.spec.share",
            setting=key,
            raw=raw[:20],
        ) from None
    if not 0 <= value < 1:
        raise SpecError(
            f"{key}={raw!r} must be from 0% to below 100%",
            "campaign.spec.share_range",
            setting=key,
            raw=raw[:20],
        )
    return value


def parse_spec(text: str, config: Config) -> CampaignSpec:
    """Parse ``NAME key=value ...``; raises SpecError with what to fix."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise SpecError(
            f"cannot read the definition: {exc}", "campaign.spec.quotes", problem=str(exc)
        ) from None
    if not words:
        raise SpecError(
            'give a campaign name first, e.g. spring_sale segment="tag:早餐"',
            "campaign.spec.name_first",
        )
    name, *rest = words
    if "=" in name or not NAME.match(name):
        raise SpecError(
            f"{name!r} is not a campaign name (letters, digits, _ and -, up to 64)",
            "campaign.spec.bad_name",
            name=name[:64],
        )
    values: dict[str, str] = {}
    for word in rest:
        key, sep, value = word.partition("=")
        if not sep:
            raise SpecError(
                f"{word!r} must be key=value (keys: {', '.join(KEYS)})",
                "campaign.spec.key_value",
                word=word[:40],
                keys=", ".join(KEYS),
            )
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1, cutoff=0.5)
            raise SpecError(
                f"unknown key {key!r} (keys: {', '.join(KEYS)})",
                "campaign.spec.unknown_key_suggest" if close else "campaign.spec.unknown_key",
                setting=key[:40],
                keys=", ".join(KEYS),
                suggestion=close[0] if close else "",
            )
        values[key] = value
    segment = values.get("segment", "").strip()
    if not segment:
        raise SpecError(
            'segment= is required, e.g. segment="tag:早餐" (everyone: opt_out:no)',
            "campaign.spec.segment_required",
        )
    variants = _variants(values)
    spec = CampaignSpec(name=name, segment=segment, variants=variants)
    extra: dict = {}
    if values.get("coupon"):
        extra["coupon"] = values["coupon"]
    if "pilot" in values:
        extra["pilot_share"] = parse_share(values["pilot"], "pilot")
    if "holdout" in values:
        extra["holdout_share"] = parse_share(values["holdout"], "holdout")
    if "hours" in values:
        try:
            extra["pilot_hours"] = float(values["hours"])
        except ValueError:
            raise SpecError(
                f"hours={values['hours']!r} is not a number",
                "campaign.spec.hours",
                raw=values["hours"][:20],
            ) from None
        if extra["pilot_hours"] <= 0:
            raise SpecError("hours must be more than 0", "campaign.spec.hours_positive")
    if "priority" in values:
        try:
            extra["priority"] = int(values["priority"])
        except ValueError:
            raise SpecError(
                f"priority={values['priority']!r} is not a whole number",
                "campaign.spec.priority",
                raw=values["priority"][:20],
            ) from None
    if "weight" in values:
        raw = values["weight"].strip()
        if not re.fullmatch(r"[0-9]{1,2}", raw) or not 1 <= int(raw) <= MAX_WEIGHT:
            raise SpecError(
                f"weight={raw[:20]!r} must be a whole number from 1 to {MAX_WEIGHT}",
                "campaign.spec.weight",
                raw=raw[:20],
                most=MAX_WEIGHT,
            )
        extra["weight"] = int(raw)
    if "at" in values:
        extra.update(_timing(values["at"], config))
    if "buttons" in values:
        extra["buttons"] = _buttons(values["buttons"])
    return CampaignSpec(**(spec.__dict__ | extra))


def _variants(values: dict[str, str]) -> list[Variant]:
    if "variants" in values:
        if "template" in values or "text" in values:
            raise SpecError(
                "give variants= or template=/text=, not both", "campaign.spec.variants_and_content"
            )
        variants = []
        for item in values["variants"].split(","):
            vname, sep, rest = item.strip().partition(":")
            template, _, weight_text = rest.partition(":")
            if not sep or not NAME.match(vname) or len(vname) > 32 or not template.strip():
                raise SpecError(
                    f"variant {item!r} must be '<name>:<template>[:<weight>]'",
                    "campaign.spec.variant",
                    item=item[:60],
                )
            try:
                weight = float(weight_text) if weight_text.strip() else 1.0
            except ValueError:
                weight = -1.0
            if not 0 < weight < float("inf"):
                raise SpecError(
                    f"variant {item!r}: the weight must be a positive number",
                    "campaign.spec.variant_weight",
                    item=item[:60],
                )
            variants.append(Variant(vname, template=template.strip(), weight=weight))
        if len({v.name for v in variants}) != len(variants):
            raise SpecError("variant names must differ", "campaign.spec.variant_names")
        return variants
    if values.get("template") and values.get("text"):
        raise SpecError("give template= or text=, not both", "campaign.spec.template_and_text")
    if values.get("template"):
        return [Variant("main", template=values["template"])]
    if values.get("text"):
        return [Variant("main", text=values["text"])]
    raise SpecError(
        'give the content: template=<name> or text="..." (or variants=)', "campaign.spec.content"
    )


def _timing(raw: str, config: Config) -> dict:
    if re.fullmatch(r"\d{1,2}:\d{2}", raw):
        try:
            return {"local_time": time.fromisoformat(raw.zfill(5))}
        except ValueError:
            raise SpecError(
                f"at={raw!r} is not a time of day", "campaign.spec.at_time", raw=raw[:40]
            ) from None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise SpecError(
            f"at={raw!r} must be a local time (09:00) or a moment (2026-03-07T09:00+08:00)",
            "campaign.spec.at",
            raw=raw[:40],
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(config.general.timezone))
    return {"send_at": moment}


def _buttons(raw: str) -> list[tuple[str, str]]:
    buttons = []
    for item in raw.split(";"):
        label, sep, action = item.partition("=")
        if not sep or not label.strip() or not re.fullmatch(r"[\w\-]{1,24}", action.strip()):
            raise SpecError(
                f"button {item!r} must be '<label>=<action>' (action: a short word)",
                "campaign.spec.button",
                item=item[:60],
            )
        buttons.append((label.strip(), action.strip()))
    return buttons
