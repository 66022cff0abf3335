"""Staff accounts in the console: add, reset a password, deactivate / reactivate, change
the role — through bot/conversations/staff.py, as ``siyu staff add|passwd|disable|enable|role``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bot.conversations import handoff
from bot.conversations.staff import (
    ROLES,
    StaffError,
    create_staff,
    list_staff,
    set_active,
    set_password,
    set_role,
)
from bot.core.i18n import t
from bot.web.console.common import (
    back,
    endpoint,
    form_of,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)

__all__ = ["act", "add", "staff_page"]

HERE = "/console/staff"
ACTIONS = ("passwd", "disable", "enable", "role")


@endpoint
async def staff_page(request: Request) -> Response:
    user = await manager_of(request)
    runtime = runtime_of(request)

    def load() -> list:
        with runtime.db.sessions() as session:
            rows = list_staff(session)
            session.expunge_all()
            return rows

    accounts = await run(request, load)
    return page(
        request, "console/staff.html", user, section="staff", accounts=accounts, roles=ROLES
    )


@endpoint
async def add(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    name = data.get("username", "").strip()

    def store() -> None:
        now = runtime.clock.now()
        with runtime.db.transaction() as session:
            create_staff(
                session,
                name,
                data.get("password", ""),
                role=data.get("role", "staff"),
                now=now,
                display_name=data.get("display_name", "").strip()[:200],
            )
            handoff.audit(session, user.username, "staff_add", now, username=name)  # fmt: skip

    try:
        await run(request, store)
    except StaffError as exc:
        return back(request, HERE, str(exc), error=True)
    return back(request, HERE, t("console.staff.added", locale, name=name))


@endpoint
async def act(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    name, action = request.path_params["username"], request.path_params["action"]
    if action not in ACTIONS:
        return Response(status_code=404)

    def change() -> None:
        now = runtime.clock.now()
        with runtime.db.transaction() as session:
            if action == "passwd":
                set_password(session, name, data.get("password", ""))
            elif action in ("disable", "enable"):
                set_active(session, name, action == "enable")
            else:
                set_role(session, name, data.get("role", ""))
            handoff.audit(session, user.username, f"staff_{action}", now, username=name)

    try:
        await run(request, change)
    except StaffError as exc:
        return back(request, HERE, str(exc), error=True)
    return back(request, HERE, t(f"console.staff.done.{action}", locale, name=name))
