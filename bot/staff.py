"""Staff accounts for the inbox: argon2-hashed passwords, roles staff and manager."""

from __future__ import annotations

import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.handoff import StaffUser

__all__ = ["ROLES", "StaffError", "authenticate", "create_staff", "list_staff"]

ROLES = ("staff", "manager")
MIN_PASSWORD = 8
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("siyu-no-such-user")


class StaffError(ValueError):
    """A staff account request that cannot be done; the message says why."""


def create_staff(
    session: Session,
    username: str,
    password: str,
    *,
    role: str,
    now: datetime,
    display_name: str = "",
) -> StaffUser:
    """Create a staff account (the password is stored as an argon2id hash only)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{2,64}", username):
        raise StaffError("the name must be 2-64 letters, digits, '_', '.' or '-'")
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(StaffUser.id).where(StaffUser.username == username)) is not None:
        raise StaffError(f"a staff member named {username!r} already exists")
    user = StaffUser(
        username=username,
        display_name=display_name or username,
        role=role,
        password_hash=_hasher.hash(password),
        active=True,
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str, now: datetime) -> StaffUser | None:
    """The active staff member with this name and password, or None."""
    user = session.scalars(select(StaffUser).where(StaffUser.username == username)).one_or_none()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    return user


def list_staff(session: Session) -> list[StaffUser]:
    return list(session.scalars(select(StaffUser).order_by(StaffUser.username)))
