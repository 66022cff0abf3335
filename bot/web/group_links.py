"""``GET /g/<token>``: count a click on a group post's link, then redirect (302) to it.

A link in a group is opened by anyone in it, so the click is counted per post (plan ×
group × slot), not per person. No login; the token is unguessable. An unknown or
malformed token gets the same bilingual 404 page as tracked links.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.groups.sop import link_clicked
from bot.web.links import NOT_FOUND, TOKEN

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["group_link_routes"]


def group_link_routes(runtime: Runtime) -> list[BaseRoute]:
    """The group-post link redirect."""

    async def follow(request: Request) -> Response:
        token = request.path_params["token"]
        if not TOKEN.fullmatch(token):
            return HTMLResponse(NOT_FOUND, status_code=404)

        def work() -> str | None:
            with runtime.db.transaction() as session:
                return link_clicked(session, token)

        url = await runtime.db.run(work)
        if url is None:
            return HTMLResponse(NOT_FOUND, status_code=404)
        return RedirectResponse(
            url,
            status_code=302,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    return [Route("/g/{token}", follow, methods=["GET"])]
