"""What Siyu's JSON APIs share: the API key check and reading a bounded JSON body.

Every endpoint answers 404 while ``[api] key`` is empty, 401 for a missing or wrong key
(``Authorization: Bearer <key>`` or ``X-API-Key``), 413 for a body over ``MAX_BODY`` and
400 for a body that is not JSON — always with ``{"error": "..."}`` saying what is wrong.
"""

from __future__ import annotations

import hmac
import json

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["MAX_BODY", "ApiRequestError", "check_api_key", "error_response", "read_json"]

MAX_BODY = 2 * 1024 * 1024


class ApiRequestError(Exception):
    """A request refused before its content is looked at, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def check_api_key(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


async def read_json(request: Request, api_key: str) -> object:
    """The request's JSON body once the key is checked; raises ApiRequestError otherwise."""
    if not api_key:
        raise ApiRequestError(404, "the API is disabled: set [api] key (or SIYU_API_KEY)")
    if not check_api_key(request, api_key):
        raise ApiRequestError(401, "missing or wrong API key (Authorization: Bearer <key>)")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiRequestError(413, f"body larger than {MAX_BODY} bytes; send fewer per call")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiRequestError(400, f"the body is not valid JSON: {exc}") from None
    except ValueError:  # a number of thousands of digits (Python's int limit)
        raise ApiRequestError(400, "the body has a number with too many digits") from None
