"""The staff inbox: log in, see the queue, claim, answer, note, transfer, release, resolve.

Server-rendered Jinja2 (``templates/web/inbox/``) with live updates over SSE: pages listen
on ``/inbox/stream`` and re-fetch their changing part when the queue or the conversation
changes; one poller per process watches the database for all of them
(bot/web/inbox_live.py). Staff see the queue and conversations; managers also see
``/inbox/manager`` (all conversations, manual flag, ratings, the audit log). Every action
goes through bot/conversations/handoff.py, which writes the audit log.

One module per screen: :mod:`.auth` (sessions, login, CSRF), :mod:`.queue`,
:mod:`.conversation`, :mod:`.actions`, :mod:`.manager`, :mod:`.preferences`; endpoints are
module-level functions reading ``request.app.state.inbox`` (:class:`.common.InboxState`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from bot.conversations.flows import FlowLibrary, load_flows
from bot.web.inbox import actions, auth, conversation, manager, preferences, queue
from bot.web.inbox.auth import inbox_middleware
from bot.web.inbox.common import InboxState, guarded
from bot.web.inbox_live import LiveUpdates

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["InboxState", "inbox_middleware", "inbox_routes", "install_inbox"]


def inbox_routes() -> list[BaseRoute]:
    """The inbox pages, partials, SSE stream and JSON API (state: :func:`install_inbox`)."""
    return [
        Route("/inbox/login", guarded(auth.login_page), methods=["GET"]),
        Route("/inbox/login", guarded(auth.login), methods=["POST"]),
        Route("/inbox/logout", guarded(auth.logout), methods=["POST"]),
        Route("/inbox/locale", guarded(preferences.set_locale), methods=["POST"]),
        Route("/inbox", guarded(queue.queue_page), methods=["GET"]),
        Route("/inbox/partials/queue", guarded(queue.queue_partial), methods=["GET"]),
        Route("/inbox/c/{ticket_id}", guarded(conversation.conversation_page), methods=["GET"]),
        Route(
            "/inbox/partials/c/{ticket_id}",
            guarded(conversation.history_partial),
            methods=["GET"],
        ),
        Route("/inbox/c/{ticket_id}/{action}", guarded(actions.act), methods=["POST"]),
        Route("/inbox/stream", guarded(queue.stream), methods=["GET"]),
        Route("/inbox/api/queue", guarded(queue.api_queue), methods=["GET"]),
        Route("/inbox/api/tickets/{ticket_id}/claim", guarded(actions.api_claim), methods=["POST"]),
        Route("/inbox/redeem", guarded(actions.redeem_code), methods=["POST"]),
        Route("/inbox/manager", guarded(manager.manager_page), methods=["GET"]),
        Route("/inbox/manager/flag", guarded(manager.manager_flag), methods=["POST"]),
    ]


def install_inbox(
    app: Starlette,
    runtime: Runtime,
    *,
    library: FlowLibrary | None = None,
    shutting_down: Callable[[], bool] = lambda: False,
) -> InboxState:
    """Put the inbox's state on ``app.state.inbox`` (flows, canned replies, live updates)."""
    config = runtime.config
    flows = library or load_flows(config.conversations.flows_dir or None, runtime.renderer)
    canned = sorted(
        p.name.removeprefix("canned_").removesuffix(".zh-CN.j2")
        for p in runtime.renderer.directory.glob("canned_*.zh-CN.j2")
    )
    state = InboxState(runtime, flows, canned, LiveUpdates(runtime.db), shutting_down)
    app.state.inbox = state
    return state
