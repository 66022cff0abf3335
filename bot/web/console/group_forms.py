"""The Groups page's forms: create or edit an SOP plan and an FAQ entry, and change a
group's moderation rules.

The forms call bot/groups/sop.py and bot/groups/faq.py — :func:`~bot.groups.sop.plan_spec`
and :func:`~bot.groups.faq.faq_spec` check the fields (the same checks as ``/sop add`` and
``/faq add``, which read a line into the same parts), then ``create_plan``/``update_plan``
and ``add_entry``/``update_entry`` store them. A refused form is shown again with what was
typed and the error next to its field (the schedule parser's next to "when").

A group's rules go through :func:`bot.groups.moderation.revised` (the bounds ``/mod``
checks) and :func:`~bot.groups.moderation.save_settings`, the functions of ``/mod``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bot.conversations import handoff
from bot.core.i18n import t
from bot.groups import faq, moderation, sop
from bot.groups.errors import GroupsError
from bot.web.console.common import (
    back,
    endpoint,
    form_of,
    int_param,
    locale_of,
    manager_of,
    run,
    runtime_of,
)
from bot.web.console.groups import (
    FAQ_FIELDS,
    HERE,
    MOD_FIELDS,
    PLAN_FIELDS,
    group_view,
    render_groups,
)
from storage.models import Group

__all__ = ["faq_save", "moderation_save", "sop_save"]

#: the plan form's fields that are ``key=value`` options of a ``/sop add`` line
PLAN_OPTIONS = tuple(f for f in PLAN_FIELDS if f not in ("name", "when", "text"))
#: the FAQ form's fields that are ``key=value`` options of a ``/faq add`` line
FAQ_OPTIONS = tuple(f for f in FAQ_FIELDS if f not in ("question", "answer_zh", "answer_en"))


def _options(form: dict[str, str], keys) -> dict[str, str]:
    """The filled-in fields among ``keys``, as ``key=value`` options (an empty field is a
    field not given, as a key left out of a chat command)."""
    return {k: form[k].strip() for k in keys if form.get(k, "").strip()}


def _save_plan(runtime, form: dict[str, str], username: str, locale: str) -> str:
    """Create the plan of the form, or save the plan named in ``editing``."""
    now = runtime.clock.now()
    editing = form.get("editing", "").strip()
    spec = sop.plan_spec(
        form.get("name", "").strip(),
        form.get("when", ""),
        _options(form, PLAN_OPTIONS),
        form.get("text", "").strip(),
        runtime.renderer,
    )
    with runtime.db.transaction() as session:
        if editing:
            plan = sop.update_plan(session, editing, spec, now=now)
            action, done = "sop_edit", t("console.groups.plan_saved", locale, name=plan.name)
        else:
            plan = sop.create_plan(
                session, spec, config=runtime.config, now=now, created_by=username
            )
            groups = len(sop.resolve_groups(session, plan))
            action = "sop_add"
            done = t("groups.sop.created", locale, name=plan.name, when=plan.schedule,
                     groups=groups)  # fmt: skip
        handoff.audit(session, username, action, now, plan=plan.name)
        return done


def _save_entry(runtime, form: dict[str, str], username: str, locale: str) -> str:
    """Add the FAQ entry of the form, or save the entry whose id is in ``editing``."""
    now = runtime.clock.now()
    raw_id = form.get("editing", "").strip()
    spec = faq.faq_spec(
        form.get("question", ""),
        _options(form, FAQ_OPTIONS),
        form.get("answer_zh", ""),
        form.get("answer_en", ""),
        runtime.renderer,
        runtime.config,
    )
    with runtime.db.transaction() as session:
        if raw_id:
            if not raw_id.isdigit() or len(raw_id) > 12:
                raise GroupsError("groups.faq.error.no_entry", id=raw_id[:12])
            entry = faq.update_entry(session, int(raw_id), spec)
            action = "faq_edit"
            done = t("console.groups.faq_saved", locale, id=entry.id, question=entry.question)
        else:
            entry = faq.add_entry(
                session, spec, config=runtime.config, now=now, created_by=username
            )
            action = "faq_add"
            done = t("groups.faq.added", locale, id=entry.id, question=entry.question)
        handoff.audit(session, username, action, now, entry=entry.id)
        return done


async def _submit(request: Request, which: str, fields: tuple[str, ...], save) -> Response:
    """Run ``save`` on the POSTed form; a refusal shows the Groups page again with the form
    as typed and the error at its field."""
    user = await manager_of(request)
    form = await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    try:
        done = await run(request, save, runtime, form, user.username, locale)
    except GroupsError as exc:
        error = {"field": exc.field, "text": exc.text(locale)}
        typed = {k: form.get(k, "") for k in (*fields, "editing")}
        forms = {which: {"values": typed, "error": error}}
        return await render_groups(request, status=400, forms=forms)
    return back(request, HERE, done)


@endpoint
async def sop_save(request: Request) -> Response:
    """Create an SOP plan, or save the one being edited."""
    return await _submit(request, "plan", PLAN_FIELDS, _save_plan)


@endpoint
async def faq_save(request: Request) -> Response:
    """Add an FAQ entry, or save the one being edited."""
    return await _submit(request, "faq", FAQ_FIELDS, _save_entry)


def _save_rules(runtime, group_id: int, form: dict[str, str], username: str) -> str:
    """Store the rules of the form for the group (every field checked as ``/mod`` checks
    it); the group's name for the confirmation."""
    now = runtime.clock.now()
    with runtime.db.transaction() as session:
        group = session.get(Group, group_id)
        if group is None:
            raise GroupsError("groups.mod.error.no_group", id=group_id)
        current = moderation.settings_of(session, group.id)
        changes = {k: form.get(k, "") for k in MOD_FIELDS}
        settings = moderation.revised(current, changes)
        moderation.save_settings(session, group, settings, f"console:{username}", now)
        handoff.audit(
            session,
            username,
            "mod_settings",
            now,
            group=f"{group.channel}:{group.external_id}",
            settings=settings.as_dict(),
        )
        return group.title or group.external_id


@endpoint
async def moderation_save(request: Request) -> Response:
    """Change one group's moderation rules; a refused field is shown at its place with the
    form as typed."""
    user = await manager_of(request)
    form = await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    group_id = int_param(request, "group_id")
    try:
        name = await run(request, _save_rules, runtime, group_id, form, user.username)
    except GroupsError as exc:
        if exc.field is None:  # no such group
            return back(request, HERE, exc.text(locale), error=True)

        def load() -> dict | None:
            with runtime.db.sessions() as session:
                group = session.get(Group, group_id)
                return group_view(group) if group is not None else None

        typed = {k: form.get(k, "") for k in MOD_FIELDS}
        error = {"field": exc.field, "text": exc.text(locale)}
        box = {"values": typed, "error": error, "group": await run(request, load)}
        return await render_groups(request, status=400, forms={"mod": box})
    return back(request, HERE, t("console.groups.rules_saved", locale, name=name))
