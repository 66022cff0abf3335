"""The one parser of money amounts that come in from outside.

Every amount a person or a shop sends — an order (CSV or ``POST /api/orders``), a coupon
redemption (``POST /api/coupons/redeem``, the inbox form, ``/redeem CODE 35.00``) — goes
through :func:`parse_amount` before any arithmetic. It looks at the text only (at most
:data:`MAX_TEXT` characters, ASCII digits, one optional point and at most two decimals), so
``1e300000``, ``1e9999999``, ``NaN``, ``Infinity``, ``-1`` or ``10^30`` are refused at once
and never become a huge number: nothing here can hold the event loop.
"""

from __future__ import annotations

import math
import re

from bot.core.i18n import t

__all__ = ["MAX_AMOUNT_CENTS", "MAX_TEXT", "AmountError", "parse_amount"]

#: The largest amount taken: 100,000,000.00 (in cents).
MAX_AMOUNT_CENTS = 100_000_000_00
#: Longer texts are refused before they are looked at.
MAX_TEXT = 24

_PLAIN = re.compile(r"(\d+)(?:\.(\d*))?", re.ASCII)


class AmountError(ValueError):
    """An amount refused, with the catalogue key saying why (``str()`` is the English)."""

    def __init__(self, key: str, raw: object = "") -> None:
        shown = str(raw)
        shown = repr(shown if len(shown) <= MAX_TEXT else shown[:MAX_TEXT] + "…")
        self.key = key
        self.values = {"raw": shown, "limit": f"{MAX_AMOUNT_CENTS // 100}"}
        super().__init__(self.message("en"))

    @property
    def code(self) -> str:
        """The catalogue key of the reason (``amount.<key>``)."""
        return f"amount.{self.key}"

    @property
    def params(self) -> dict[str, str]:
        """The values that fill the reason."""
        return self.values

    def message(self, locale: str | None) -> str:
        """Why the amount was refused, for a reader of ``locale``."""
        return t(f"amount.{self.key}", locale, **self.values)


def parse_amount(raw: object) -> int:
    """The amount in cents: ``"35.00"`` → 3500, ``35`` → 3500, ``35.5`` → 3550.

    Raises :class:`AmountError` for anything that is not a plain decimal number of at most
    two decimals between 0 and :data:`MAX_AMOUNT_CENTS`.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise AmountError("required")
    if isinstance(raw, bool):
        raise AmountError("not_number", raw)
    if isinstance(raw, int):
        if raw < 0:
            raise AmountError("negative", raw)
        if raw > MAX_AMOUNT_CENTS // 100:
            raise AmountError("too_large", raw)
        return raw * 100
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise AmountError("not_number", raw)
        text = repr(raw)  # 35.5 → "35.5"; 1e+300 → refused below as not a plain number
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise AmountError("not_number", type(raw).__name__)
    if len(text) > MAX_TEXT:
        raise AmountError("too_large" if text.isdigit() else "not_number", text)
    negative = text.startswith("-")
    match = _PLAIN.fullmatch(text.removeprefix("-").removeprefix("+"))
    if match is None or (match.group(2) == "" and text.endswith(".")):
        raise AmountError("not_number", text)
    if negative and any(c not in "0." for c in text[1:]):
        raise AmountError("negative", text)
    whole, decimals = match.group(1), (match.group(2) or "").rstrip("0")
    if len(decimals) > 2:
        raise AmountError("decimals", text)
    cents = int(whole) * 100 + int(decimals.ljust(2, "0"))
    if cents > MAX_AMOUNT_CENTS:
        raise AmountError("too_large", text)
    return cents
