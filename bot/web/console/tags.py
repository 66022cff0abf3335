"""Tags and tagging rules in the console: rules from config (read-only) and from the
database (add, delete — ``bot.customers.rule_syntax``, as ``/rule`` does), customers tagged
by each rule, and customers per tag.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bot.app.services import Services
from bot.core.i18n import t
from bot.customers.rule_syntax import (
    RuleSyntaxError,
    add_rule,
    describe_rule,
    edit_rule,
    parse_rule,
    remove_rule,
    rule_line,
)
from bot.web.console import charts, queries
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
from storage.tag_rules import active_rules

__all__ = ["add_rule_form", "delete_rule", "load_tags", "tag_page"]

HERE = "/console/tags"


def config_rules(config) -> list[dict]:
    """The rules written in the config file, with the ids their tags record as source."""
    tagging = config.tagging
    rows = [
        {
            "id": f"keyword:{i}",
            "kind": "keyword",
            "tag": r.tag,
            "what": ",".join(r.keywords) + (f" exclude={','.join(r.exclude)}" if r.exclude else ""),
        }
        for i, r in enumerate(tagging.keywords)
    ]
    rows += [
        {"id": f"event:{i}", "kind": "event", "tag": r.tag, "what": f"{r.trigger}={r.value}"}
        for i, r in enumerate(tagging.events)
    ]
    rows += [
        {
            "id": f"activity:{i}",
            "kind": "activity",
            "tag": r.tag,
            "what": f"{r.min_messages}/{r.days}d group={r.group} silent={r.silent_days}",
        }
        for i, r in enumerate(tagging.activity)
    ]
    return rows  # fmt: skip


def load_tags(runtime: Services) -> dict:
    """Rules (config and database) with their hits, and customers per tag (the counts scan
    the tag table, so they are reused for a few minutes)."""
    now = runtime.clock.now()
    with runtime.db.sessions() as session:
        counted_at, (hits, tags) = queries.snapshot(
            session,
            "tags",
            now,
            lambda: (queries.tag_rule_hits(session), queries.tag_counts(session, now)),
        )
        db_rules = [
            {"id": r.id, "kind": r.kind, "tag": r.tag, "text": describe_rule(r), "line": rule_line(r),
             "created_by": r.created_by, "hits": hits.get(f"db:{r.id}", 0)}
            for r in active_rules(session)
        ]  # fmt: skip
    rules = [r | {"hits": hits.get(r["id"], 0)} for r in config_rules(runtime.config)]
    return {"config_rules": rules, "db_rules": db_rules, "tags": tags, "counted_at": counted_at}


@endpoint
async def tag_page(request: Request) -> Response:
    user = await manager_of(request)
    data = await run(request, load_tags, runtime_of(request))
    return page(
        request,
        "console/tags.html",
        user,
        section="tags",
        charts={
            "chart-tags": charts.hbars(
                data["tags"][:20], t("console.count", locale_of(request, user))
            )
        },
        **data,
    )


@endpoint
async def add_rule_form(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)

    def store() -> str:
        fields = parse_rule(data.get("rule", ""))
        with runtime.db.transaction() as session:
            row = add_rule(
                session, fields, created_by=f"staff:{user.username}", now=runtime.clock.now()
            )
            return describe_rule(row)

    try:
        text = await run(request, store)
    except RuleSyntaxError as exc:
        return back(request, HERE, str(exc), error=True)
    return back(request, HERE, t("console.tags.added", locale, rule=text))


@endpoint
async def delete_rule(request: Request) -> Response:
    user = await manager_of(request)
    await form_of(request, user)
    locale = locale_of(request, user)
    raw = request.path_params["rule_id"]
    runtime = runtime_of(request)

    def remove() -> bool:
        with runtime.db.transaction() as session:
            return remove_rule(session, int(raw), runtime.clock.now()) is not None

    if not (raw.isdigit() and len(raw) < 19) or not await run(request, remove):
        return back(request, HERE, t("console.tags.no_rule", locale, id=raw[:20]), error=True)
    return back(request, HERE, t("console.tags.deleted", locale, id=raw))


@endpoint
async def edit_rule_form(request: Request) -> Response:
    """Change a database rule in place (the same text as ``/rule add``)."""
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    raw = request.path_params["rule_id"]
    runtime = runtime_of(request)
    if not (raw.isdigit() and len(raw) < 19):
        return back(request, HERE, t("console.tags.no_rule", locale, id=raw[:20]), error=True)

    def store() -> str | None:
        fields = parse_rule(data.get("rule", ""))
        with runtime.db.transaction() as session:
            row = edit_rule(session, int(raw), fields, runtime.clock.now())
            return describe_rule(row) if row is not None else None

    try:
        text = await run(request, store)
    except RuleSyntaxError as exc:
        return back(request, HERE, str(exc), error=True)
    if text is None:
        return back(request, HERE, t("console.tags.no_rule", locale, id=raw), error=True)
    return back(request, HERE, t("console.tags.edited", locale, rule=text))
