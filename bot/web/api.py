"""What Siyu's HTTP endpoints share: the API key, bounded bodies, and refusing odd input.

Every JSON API answers 404 while ``[api] key`` is empty, 401 for a missing or wrong key
(``Authorization: Bearer <key>`` or ``X-API-Key``), 413 for a body over its limit (checked
on ``Content-Length`` before anything is read, then counted while streaming), 415 where
``application/json`` is required, and 400 for a body that is not UTF-8 JSON, nests deeper
than ``MAX_DEPTH``, carries a non-finite or over-long number, a lone surrogate or a NUL
character — always ``{"error": "...", "code": "..."}``: the text in the reader's locale
(``Accept-Language``), the code stable for programs.

:class:`BodyLimitMiddleware` applies the outer bound to every request of the app (forms
and platform callbacks included) and refuses NUL characters in paths and query strings.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.core.i18n import normalize_locale, t

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "ApiRequestError",
    "BodyLimitMiddleware",
    "check_api_key",
    "check_text",
    "error_response",
    "odd_text",
    "parse_json",
    "query_int",
    "read_body",
    "read_json",
    "read_json_body",
    "request_locale",
]

MAX_BODY = 2 * 1024 * 1024
MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 40
#: Bodies larger than this are parsed in a worker thread, never on the event loop.
_PARSE_OFF_LOOP = 64 * 1024


class ApiRequestError(Exception):
    """A request refused before its content is looked at, with the HTTP status to answer."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code)


def error_response(status: int, message: str, code: str = "") -> JSONResponse:
    body = {"error": message, "code": code} if code else {"error": message}
    return JSONResponse(body, status_code=status)


def request_locale(request_or_headers: Request | Mapping[str, str]) -> str:
    """The reader's locale from ``Accept-Language`` (zh-CN when absent)."""
    headers = getattr(request_or_headers, "headers", request_or_headers)
    first = headers.get("accept-language", "").split(",")[0].split(";")[0].strip()
    return normalize_locale(first or None)


def _refuse(status: int, key: str, locale: str, **values: object) -> ApiRequestError:
    return ApiRequestError(status, t(f"websec.{key}", locale, **values), key)


def check_api_key(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    ``Content-Length`` is checked before reading; a body without one (chunked) is counted
    while it streams in and dropped at the first byte over the limit.
    """
    locale = request_locale(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 15:
            raise _refuse(400, "bad_content_length", locale)
        if int(declared) > limit:
            raise _refuse(413, "body_too_large", locale, limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _refuse(413, "body_too_large", locale, limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _BadNumber(text)
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 2 * MAX_NUMBER_DIGITS:
        raise _BadNumber(text)
    return value


def _no_constant(text: str) -> float:
    raise _BadNumber(text)


class _BadNumber(ValueError):
    pass


def odd_text(value: str) -> str | None:
    """``"nul"`` or ``"surrogate"`` when a string cannot be stored as text, else None."""
    if "\x00" in value:
        return "nul"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "surrogate"
    return None


def check_text(value: str, name: str, locale: str) -> str:
    """``value`` if it can be stored (no NUL, no lone surrogate); else a 400 naming ``name``."""
    problem = odd_text(value)
    if problem:
        raise _refuse(400, f"text_{problem}", locale, name=name)
    return value


def _check_tree(data: object, locale: str) -> None:
    """Depth at most MAX_DEPTH; every key and string storable (walked without recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, "body", locale)
        elif isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise _refuse(400, "json_too_deep", locale, limit=MAX_DEPTH)
            if isinstance(node, dict):
                for key, value in node.items():
                    check_text(key, "body", locale)
                    stack.append((value, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in node)


def parse_json(body: bytes, locale: str = "zh-CN") -> object:
    """Parse and check a JSON body (see the module docstring); raises ApiRequestError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(400, "not_utf8", locale) from None
    try:
        data = json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except RecursionError:
        raise _refuse(400, "json_too_deep", locale, limit=MAX_DEPTH) from None
    except _BadNumber as exc:
        raise _refuse(400, "bad_number", locale, number=str(exc)[:24]) from None
    except json.JSONDecodeError as exc:
        raise _refuse(400, "not_json", locale, detail=f"{exc.msg} (char {exc.pos})") from None
    except ValueError:  # e.g. Python's limit on int digits
        raise _refuse(400, "bad_number", locale, number="?") from None
    _check_tree(data, locale)
    return data


async def read_json_body(
    request: Request, *, limit: int = MAX_BODY, require_json_type: bool = False
) -> object:
    """The request's checked JSON body: 415, 413 or 400 (ApiRequestError) otherwise."""
    locale = request_locale(request)
    if require_json_type:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise _refuse(415, "json_only", locale)
    body = await read_body(request, limit)
    if len(body) > _PARSE_OFF_LOOP:
        return await asyncio.to_thread(parse_json, body, locale)
    return parse_json(body, locale)


async def read_json(request: Request, api_key: str, *, limit: int = MAX_BODY) -> object:
    """The request's JSON body once the key is checked; raises ApiRequestError otherwise."""
    locale = request_locale(request)
    if not api_key:
        raise _refuse(404, "api_disabled", locale)
    if not check_api_key(request, api_key):
        raise _refuse(401, "api_key", locale)
    return await read_json_body(request, limit=limit)


def query_int(request: Request, name: str, default: int, *, low: int = 0, high: int = 2**53) -> int:
    """An integer query parameter within ``low..high``; a clear 400 for anything else."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    locale = request_locale(request)
    text = raw.strip()
    if len(text) > 20 or not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        raise _refuse(400, "bad_integer", locale, name=name, low=low, high=high)
    return int(text)


class BodyLimitMiddleware:
    """Bound every request of the app before its body is read, and refuse NUL in URLs.

    A ``Content-Length`` over ``limit`` is answered 413 at once; a body that grows past it
    while streaming ends the request with 413 (if no answer was started yet). A path or
    query string with a NUL character (``%00``) or a lone surrogate is answered 400.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        locale = request_locale(headers)
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            await error_response(400, t("websec.url_nul", locale), "url_nul")(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 15):
            refused = error_response(
                400, t("websec.bad_content_length", locale), "bad_content_length"
            )
            await refused(scope, receive, send)
            return
        if declared is not None and int(declared) > self.limit:
            too_large = t("websec.body_too_large", locale, limit=self.limit)
            await error_response(413, too_large, "body_too_large")(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            if not started:
                too_large = t("websec.body_too_large", locale, limit=self.limit)
                await error_response(413, too_large, "body_too_large")(scope, receive, send)


class _TooLarge(Exception):
    pass
