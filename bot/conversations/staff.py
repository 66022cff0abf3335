"""Staff accounts for the inbox: argon2-hashed passwords, roles staff and manager."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from storage.handoff import LoginFailure, StaffUser

__all__ = [
    "ROLES",
    "StaffError",
    "authenticate",
    "clear_login_failures",
    "create_staff",
    "find_staff",
    "list_staff",
    "login_blocked_until",
    "record_login_failure",
    "revoke_sessions",
    "set_active",
    "set_locale",
    "set_password",
    "set_role",
    "use_password_cost",
]

ROLES = ("staff", "manager")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong
# password (made at first use, at the cost in force).
_dummy_hash: str | None = None


def use_password_cost(time_cost: int | None = None, memory_kib: int | None = None) -> None:
    """Hash new passwords at this argon2id cost ([web] password_time_cost and
    password_memory_kib); None keeps the library's default. Stored hashes verify at their
    own cost and are rehashed at this one on the next login."""
    global _hasher, _dummy_hash
    default = PasswordHasher()
    _hasher = PasswordHasher(
        time_cost=time_cost or default.time_cost,
        memory_cost=memory_kib or default.memory_cost,
        parallelism=default.parallelism,
        hash_len=default.hash_len,
        salt_len=default.salt_len,
    )
    _dummy_hash = None


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
        _hasher.verify(user.password_hash if user else _dummy(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    return user


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("siyu-no-such-user")
    return _dummy_hash


def revoke_sessions(session: Session, staff_id: int) -> None:
    """End every inbox session of this staff member (their cookies stop working)."""
    session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id)
        .values(session_version=StaffUser.session_version + 1)
    )


def list_staff(session: Session) -> list[StaffUser]:
    return list(session.scalars(select(StaffUser).order_by(StaffUser.username)))


# -- login throttling ([handoff] login_max_failures / login_window_minutes) ------------------


def login_blocked_until(
    session: Session,
    username: str,
    client_ip: str,
    now: datetime,
    *,
    max_failures: int,
    window: timedelta,
    max_per_address: int | None = None,
) -> datetime | None:
    """When logins for this name from this address are allowed again, or None if now.

    Blocked while this name *from this address* has ``max_failures`` failures inside
    ``window``, or this address has ``max_per_address`` failures for any names (default
    four times ``max_failures``). A name is never blocked as such: an attacker guessing a
    manager's password from their own addresses does not lock the manager out from theirs.
    It opens again when enough failures are older than the window. On PostgreSQL, attempts
    for one name+address or address are serialized until the caller's transaction ends, so
    parallel guesses from several processes cannot all slip through on the same count.
    """
    name, ip = username[:64], client_ip[:64]
    per_address = max_per_address or 4 * max_failures
    if session.get_bind().dialect.name == "postgresql":
        for key in (f"siyu:login:name-ip:{name}@{ip}", f"siyu:login:ip:{ip}"):
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
            )
    since = now - window
    until: datetime | None = None
    for where, limit in (
        ((LoginFailure.username == name, LoginFailure.client_ip == ip), max_failures),
        ((LoginFailure.client_ip == ip,), per_address),
    ):
        # The limit-th most recent failure: once it leaves the window, fewer remain.
        nth = session.scalars(
            select(LoginFailure.created_at)
            .where(*where, LoginFailure.created_at > since)
            .order_by(LoginFailure.created_at.desc())
            .offset(limit - 1)
            .limit(1)
        ).first()
        if nth is not None and (until is None or nth + window > until):
            until = nth + window
    return until


def record_login_failure(
    session: Session, username: str, client_ip: str, now: datetime, *, window: timedelta
) -> None:
    """Count one failed login, and prune this name's and IP's failures older than the window."""
    session.execute(
        delete(LoginFailure).where(
            or_(LoginFailure.username == username[:64], LoginFailure.client_ip == client_ip[:64]),
            LoginFailure.created_at <= now - window,
        )
    )
    session.add(LoginFailure(username=username[:64], client_ip=client_ip[:64], created_at=now))


def clear_login_failures(session: Session, username: str, client_ip: str | None = None) -> None:
    """Forget the name's failed logins (after it logged in successfully) — only those from
    ``client_ip`` when given, so a login does not reset an attacker's count elsewhere."""
    where = [LoginFailure.username == username[:64]]
    if client_ip is not None:
        where.append(LoginFailure.client_ip == client_ip[:64])
    session.execute(delete(LoginFailure).where(*where))


# -- account changes (console Staff page and ``siyu staff passwd|disable|enable|role``) ------


def find_staff(session: Session, username: str) -> StaffUser:
    """The account named ``username``; raises StaffError when there is none."""
    user = session.scalars(select(StaffUser).where(StaffUser.username == username)).one_or_none()
    if user is None:
        raise StaffError(f"no staff account named {username!r}")
    return user


def _keep_a_manager(session: Session, user: StaffUser) -> None:
    """Refuse to leave no active manager (nobody could manage accounts any more)."""
    others = session.scalar(
        select(func.count())
        .select_from(StaffUser)
        .where(StaffUser.role == "manager", StaffUser.active.is_(True), StaffUser.id != user.id)
    )
    if user.role == "manager" and user.active and not others:
        raise StaffError(f"{user.username!r} is the last active manager")


def set_password(session: Session, username: str, password: str) -> StaffUser:
    """Replace the account's password (argon2id hash only)."""
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise StaffError(f"the password must have at most {MAX_PASSWORD} characters")
    user = find_staff(session, username)
    user.password_hash = _hasher.hash(password)
    return user


def set_active(session: Session, username: str, active: bool) -> StaffUser:
    """Deactivate (the account can no longer log in) or reactivate an account."""
    user = find_staff(session, username)
    if not active:
        _keep_a_manager(session, user)
    user.active = active
    return user


def set_role(session: Session, username: str, role: str) -> StaffUser:
    """Make the account ``staff`` or ``manager``."""
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    user = find_staff(session, username)
    if role != "manager":
        _keep_a_manager(session, user)
    user.role = role
    return user


def set_locale(session: Session, staff_id: int, locale: str) -> None:
    """Remember the language the staff member chose (zh-CN or en)."""
    user = session.get(StaffUser, staff_id)
    if user is not None:
        user.locale = locale
