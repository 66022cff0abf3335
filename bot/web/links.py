"""``GET /r/<token>``: count a tracked link's click, then redirect (302) to its target.

No login (customers open these from their chat); the token itself is the secret. An
unknown or malformed token gets a 404 page that says so, in both languages.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.marketing.links import Click, record_click

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["link_routes"]

log = logging.getLogger(__name__)

TOKEN = re.compile(r"[A-Za-z0-9_-]{16,43}")
NOT_FOUND = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>链接无效 · Link not found</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em">
<h1>链接无效或已失效</h1><p>这个链接不存在，请检查是否完整复制，或回到聊天中重新打开。</p>
<h1>Link not found</h1><p>This link does not exist. Check that it was copied completely,
or open it again from the chat.</p></body></html>
"""


def link_routes(runtime: Runtime) -> list[BaseRoute]:
    """The tracked-link redirect."""

    async def follow(request: Request) -> Response:
        token = request.path_params["token"]
        if not TOKEN.fullmatch(token):
            return HTMLResponse(NOT_FOUND, status_code=404)

        def work() -> Click | None:
            with runtime.db.transaction() as session:
                return record_click(session, token, runtime.clock.now(), runtime.bus)

        click = await runtime.db.run(work)
        if click is None:
            return HTMLResponse(NOT_FOUND, status_code=404)
        return RedirectResponse(
            click.url,
            status_code=302,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    return [Route("/r/{token}", follow, methods=["GET"])]
