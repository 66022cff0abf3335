"""Conversation flows in the console: each flow's steps in order, how many customers stand
at each breakpoint now, how many reached each step or went past it, and the drop-off
between consecutive steps (from the conversations' current state, one grouped query)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bot.conversations.flows import FlowLibrary, load_flows
from bot.core.i18n import t
from bot.web.console import charts, queries
from bot.web.console.common import endpoint, locale_of, manager_of, page, run, runtime_of

__all__ = ["flow_page"]


def library_of(request: Request) -> FlowLibrary:
    """The flows this process runs (loaded once per app)."""
    state = request.app.state
    library = getattr(state, "console_flows", None)
    if library is None:
        runtime = runtime_of(request)
        library = load_flows(runtime.config.conversations.flows_dir or None, runtime.renderer)
        state.console_flows = library
    return library


def flow_rows(library: FlowLibrary, positions: dict[str, dict[str, int]], locale: str) -> list:
    """Per flow: its steps with ``now`` (standing there), ``reached`` (there or past it) and
    ``drop`` (the share of those who reached the step that did not go on to the next)."""
    out = []
    for name, flow in library.flows.items():
        here = positions.get(name, {})
        steps = list(flow.steps)
        standing = [here.get(step, 0) for step in steps]
        reached = [sum(standing[i:]) for i in range(len(steps))]
        rows: list[dict[str, Any]] = []
        for i, step in enumerate(steps):
            nxt = reached[i + 1] if i + 1 < len(steps) else None
            drop = (1 - nxt / reached[i]) if nxt is not None and reached[i] else None
            title = flow.steps[step].title
            rows.append(
                {
                    "id": step,
                    "title": title.get(locale) or title.get("zh-CN") or step,
                    "now": standing[i],
                    "reached": reached[i],
                    "drop": drop,
                }
            )
        out.append(
            {
                "name": name,
                "title": flow.title.get(locale) or flow.title.get("zh-CN") or name,
                "steps": rows,
                "unknown": sum(n for s, n in here.items() if s not in flow.steps),
                "chart": charts.bars(
                    [r["title"] for r in rows],
                    {
                        t("console.flows.now", locale): [r["now"] for r in rows],
                        t("console.flows.reached", locale): [r["reached"] for r in rows],
                    },
                ),
            }
        )
    return out


@endpoint
async def flow_page(request: Request) -> Response:
    user = await manager_of(request)
    runtime = runtime_of(request)

    def load() -> dict:
        with runtime.db.sessions() as session:
            return queries.flow_positions(session)

    positions = await run(request, load)
    flows = flow_rows(library_of(request), positions, locale_of(request, user))
    return page(
        request,
        "console/flows.html",
        user,
        section="flows",
        flows=flows,
        charts={f"chart-flow-{i}": f["chart"] for i, f in enumerate(flows)},
    )
