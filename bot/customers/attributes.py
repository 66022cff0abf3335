"""Profile attributes: validated once, the same way for every way in.

``siyu customer set``, ``POST /api/customers``, ``siyu import customers`` and the managers'
``/profile`` all call :func:`validate_attributes` and then :func:`upsert_profile`.

=========  ==================================================================================
attribute  accepted values
=========  ==================================================================================
name       free text, 1-200 characters (the customer's display name)
phone      5-15 digits; spaces, ``-``, ``()``, ``.`` and a ``+86``/``0086`` prefix are dropped
birthday   ``YYYY-MM-DD`` (not in the future, not before 1900) or ``MM-DD`` without a year
city       free text, 1-64 characters
locale     ``zh-CN`` or ``en``
timezone   an IANA time zone name such as ``Asia/Shanghai`` (``tz`` is accepted as the key)
=========  ==================================================================================

A birthday without a year is stored on year :data:`NO_YEAR` (a leap year, so ``02-29``
exists) and shown as ``MM-DD``; the birthday scenario only looks at month and day.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.app.config import CHANNELS, SUPPORTED_LOCALES
from bot.customers.orders import normalize_phone
from storage.birthdays import NO_YEAR, format_birthday
from storage.db import insert_ignore
from storage.models import Customer, Identity

__all__ = [
    "ATTRIBUTES",
    "NO_YEAR",
    "ProfileConflict",
    "ProfileInputError",
    "UpsertResult",
    "format_birthday",
    "parse_identity",
    "upsert_profile",
    "validate_attributes",
]

ATTRIBUTES = ("name", "phone", "birthday", "city", "locale", "timezone")
ALIASES = {"tz": "timezone", "time_zone": "timezone"}
#: Attributes an empty value clears; locale and time zone always have a value.
CLEARABLE = ("name", "phone", "birthday", "city")
MAX_NAME, MAX_CITY = 200, 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FULL_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH_DAY = re.compile(r"^(?:--)?(\d{2})-(\d{2})$")


class ProfileInputError(ValueError):
    """A bad attribute or identity; the message says which and what is accepted.

    ``str()`` is the English text (API, CLI); with ``key`` (templates/i18n/customer.toml)
    :meth:`text` says it in a chat reader's locale."""

    def __init__(self, message: str, key: str | None = None, **values: object) -> None:
        super().__init__(message)
        self.key, self.values = key, values

    @property
    def code(self) -> str | None:
        """The catalogue key of the problem (an intake's row reason), if it has one."""
        return self.key

    @property
    def params(self) -> dict[str, object]:
        """The values that fill the problem's text."""
        return self.values

    def text(self, locale: str | None) -> str:
        """The problem in the reader's locale (English when no key was given)."""
        from bot.core.i18n import t

        if self.key is None:
            return str(self)
        values = dict(self.values)
        if "attribute" in values:
            values["attribute"] = t(f"customer.attr.{values['attribute']}", locale)
        return t(self.key, locale, **values)


class ProfileConflict(ValueError):
    """The identity and the phone belong to two different customers; ``code`` and
    ``params`` name the problem in the catalogue (``str()`` is the English)."""

    def __init__(self, message: str, code: str, **params: object) -> None:
        super().__init__(message)
        self.code, self.params = code, params


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did: the customer, whether it is new, and the attributes changed
    (``identity`` among them when the identity was linked to a customer found by phone)."""

    customer_id: int
    created: bool
    changed: tuple[str, ...]
    matched_by: str  # "identity", "phone" or "new"


def parse_identity(raw: str) -> tuple[str, str]:
    """``sandbox:alice`` → ``("sandbox", "alice")``."""
    channel, sep, user = raw.strip().partition(":")
    if not sep or channel not in CHANNELS or not user.strip() or len(user) > 128:
        raise ProfileInputError(
            f"'customer' {raw!r} must be '<channel>:<user id>' (channels: {', '.join(CHANNELS)})",
            "intake.row.customer_format",
            raw=repr(raw),
            channels=", ".join(CHANNELS),
        )
    return channel, user.strip()


def parse_birthday(raw: str, today: date) -> date:
    """``1990-05-17`` or ``05-17`` (stored on year NO_YEAR)."""
    text = raw.strip()
    full, short = _FULL_DATE.match(text), _MONTH_DAY.match(text)
    if not full and not short:
        raise ProfileInputError(
            f"'birthday' {raw!r} must be YYYY-MM-DD or MM-DD",
            "customer.error.birthday_format",
            raw=raw,
        )
    try:
        if full:
            value = date(int(full[1]), int(full[2]), int(full[3]))
        else:
            assert short is not None  # one of the two matched
            value = date(NO_YEAR, int(short[1]), int(short[2]))
    except ValueError:
        raise ProfileInputError(
            f"'birthday' {raw!r} is not a real date", "customer.error.birthday_unreal", raw=raw
        ) from None
    if full and value > today:
        raise ProfileInputError(
            f"'birthday' {raw!r} is in the future", "customer.error.birthday_future", raw=raw
        )
    if full and value.year < 1900:
        raise ProfileInputError(
            f"'birthday' {raw!r} is before 1900", "customer.error.birthday_old", raw=raw
        )
    return value


def _text(key: str, raw: str, limit: int) -> str:
    text = raw.strip()
    if len(text) > limit:
        raise ProfileInputError(
            f"'{key}' is longer than {limit} characters",
            "customer.error.too_long",
            attribute=key,
            limit=limit,
        )
    if _CONTROL.search(text):
        raise ProfileInputError(
            f"'{key}' contains control characters", "customer.error.control", attribute=key
        )
    return text


def _one(key: str, raw: str, today: date) -> object:
    if key == "name":
        return _text(key, raw, MAX_NAME)
    if key == "city":
        return _text(key, raw, MAX_CITY)
    if key == "phone":
        phone = normalize_phone(raw)
        if phone is None:
            raise ProfileInputError(
                f"'phone' {raw!r} is not a phone number (5-15 digits, optional +86)",
                "customer.error.phone",
                raw=raw,
            )
        return phone
    if key == "birthday":
        return parse_birthday(raw, today)
    if key == "locale":
        for known in SUPPORTED_LOCALES:
            if raw.strip().lower() == known.lower():
                return known
        raise ProfileInputError(
            f"'locale' {raw!r} is not supported (one of {', '.join(SUPPORTED_LOCALES)})",
            "customer.error.locale",
            raw=raw,
            known=", ".join(SUPPORTED_LOCALES),
        )
    try:  # timezone
        return str(ZoneInfo(raw.strip()))
    except (ZoneInfoNotFoundError, ValueError):
        raise ProfileInputError(
            f"'timezone' {raw!r} is not an IANA time zone (e.g. Asia/Shanghai, Europe/London)",
            "customer.error.timezone",
            raw=raw,
        ) from None


def validate_attributes(
    raw: Mapping[str, object], *, today: date, empty_clears: bool = True
) -> dict[str, object]:
    """Check attributes given as text; returns attribute → value (None: clear it).

    An empty value (``""`` or JSON ``null``) clears a clearable attribute when
    ``empty_clears`` (CLI, API, chat); otherwise (a CSV cell) it leaves it unchanged.
    Raises :class:`ProfileInputError` for the first bad one.
    """
    out: dict[str, object] = {}
    for given, value in raw.items():
        key = ALIASES.get(given, given)
        if key not in ATTRIBUTES:
            close = difflib.get_close_matches(str(given), [*ATTRIBUTES, *ALIASES], n=1)
            raise ProfileInputError(
                f"unknown attribute {given!r} (known: {', '.join(ATTRIBUTES)})",
                "customer.error.unknown_attribute",
                given=str(given)[:40],
                known=", ".join(ATTRIBUTES),
                hint=ALIASES.get(close[0], close[0]) if close else "",
            )
        if key in out:
            raise ProfileInputError(
                f"'{key}' is given twice", "customer.error.twice", attribute=key
            )
        if isinstance(value, int) and not isinstance(value, bool) and key == "phone":
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise ProfileInputError(
                f"'{key}' must be text, got {type(value).__name__}",
                "intake.row.not_text",
                field=key,
            )
        if value is None or not value.strip():
            if not empty_clears:
                continue
            if key not in CLEARABLE:
                raise ProfileInputError(
                    f"'{key}' cannot be empty", "customer.error.empty", attribute=key
                )
            out[key] = "" if key == "name" else None
            continue
        out[key] = _one(key, value, today)
    return out


def _customer_by_phone(session: Session, phone: str) -> Customer | None:
    """The customer with this phone (the oldest, as orders are matched)."""
    return session.scalars(
        select(Customer).where(Customer.phone == phone).order_by(Customer.id).limit(1)
    ).first()


def _apply(customer: Customer, attrs: Mapping[str, object]) -> tuple[str, ...]:
    changed = []
    for key, value in attrs.items():
        column = "display_name" if key == "name" else key
        if getattr(customer, column) != value:
            setattr(customer, column, value)
            changed.append(key)
    return tuple(changed)


def _link_identity(session: Session, customer: Customer, identity: tuple[str, str], now) -> None:
    channel, user = identity
    inserted = insert_ignore(
        session,
        Identity,
        {
            "customer_id": customer.id,
            "channel": channel,
            "external_id": user,
            "display_name": customer.display_name,
            "unreachable": False,
            "created_at": now,
        },
        ["channel", "external_id"],
    )
    if not inserted:
        raise ProfileConflict(
            f"identity {channel}:{user} was created meanwhile; retry",
            "intake.customer.race",
            identity=f"{channel}:{user}",
        )


def upsert_profile(
    session: Session,
    *,
    identity: tuple[str, str] | None,
    attrs: Mapping[str, object],
    now: datetime,
    default_locale: str,
    default_timezone: str,
    create: bool = True,
) -> UpsertResult:
    """Find the customer by identity (else by the phone in ``attrs``), or create them, and
    set the attributes. Nothing is written when it raises.

    Raises :class:`ProfileConflict` when the identity's customer and the phone's customer
    differ, and LookupError when ``create`` is false and nobody matches.
    """
    phone = attrs.get("phone")
    if identity is None and not phone:
        raise ProfileInputError(
            "give 'customer' (<channel>:<user id>) or 'phone'", "intake.row.who_required"
        )
    customer, matched_by = None, "new"
    if identity is not None:
        row = session.scalars(
            select(Identity).where(
                Identity.channel == identity[0], Identity.external_id == identity[1]
            )
        ).one_or_none()
        if row is not None:
            customer, matched_by = session.get(Customer, row.customer_id), "identity"
    by_phone = _customer_by_phone(session, str(phone)) if phone else None
    if customer is not None and by_phone is not None and by_phone.id != customer.id:
        raise ProfileConflict(
            f"phone {phone} belongs to customer #{by_phone.id}, "
            f"{':'.join(identity or ())} to customer #{customer.id} "
            f"(merge them first: siyu customer merge {by_phone.id} {customer.id})",
            "intake.customer.conflict",
            phone=phone,
            phone_customer=by_phone.id,
            identity=":".join(identity or ()),
            customer=customer.id,
        )
    if customer is None and by_phone is not None:
        if identity is not None and not create:
            raise LookupError(f"no customer with {identity[0]} id {identity[1]!r}")
        customer, matched_by = by_phone, "phone"
    if customer is None and not create:
        who = f"{identity[0]} id {identity[1]!r}" if identity else f"phone {phone}"
        raise LookupError(f"no customer with {who}")
    with session.begin_nested():  # a row that fails here leaves nothing behind
        created = customer is None
        if customer is None:
            customer = Customer(
                display_name="",
                locale=str(attrs.get("locale") or default_locale),
                timezone=str(attrs.get("timezone") or default_timezone),
                marketing_opt_out=False,
                created_at=now,
            )
            session.add(customer)
            session.flush()
        changed = _apply(customer, attrs)
        if identity is not None and matched_by != "identity":
            _link_identity(session, customer, identity, now)
            if not created:
                changed = (*changed, "identity")
        session.flush()
    return UpsertResult(customer.id, created, changed, matched_by)
