"""A fake Telegram Bot API server for tests, on 127.0.0.1 and a free port.

It serves ``/bot<token>/<method>`` like the real one (JSON answers ``{"ok": ..., "result":
...}``), records every call with the time it arrived (from an injectable ``now``), holds
updates for ``getUpdates`` (long polling), and can be told to fail the next calls of a
method (429 with retry_after, 403 Forbidden, ...). Plus builders for update payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import free_port

TOKEN = "123456:TEST-token"
BOT_ID = 999
BOT_USERNAME = "siyu_test_bot"
_RAW_KEYS = frozenset({"text", "name", "secret_token", "url", "callback_query_id"})


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict
    at: float


@dataclass
class FakeBotAPI:
    """The fake server; ``async with FakeBotAPI() as api`` runs it."""

    now: Callable[[], float] = time.monotonic
    calls: list[Call] = field(default_factory=list)
    admins: dict[int, list[int]] = field(default_factory=dict)
    failures: dict[str, list[tuple[int, dict]]] = field(default_factory=lambda: defaultdict(list))
    confirmed: int = 0

    def __post_init__(self) -> None:
        self.port = free_port()
        self._updates: list[dict] = []
        self._ids = itertools.count(1)
        self._message_ids = itertools.count(100)
        self._topic_ids = itertools.count(500)
        self._arrived = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot{{token}}"

    async def __aenter__(self) -> FakeBotAPI:
        app = Starlette(routes=[Route("/bot{token}/{method}", self._endpoint, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("fake Bot API server did not start")
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._arrived.set()
        await self._task

    # -- what a test does ------------------------------------------------------------------

    def push(self, update: dict) -> int:
        """Queue an update for getUpdates; returns its update_id."""
        update.setdefault("update_id", next(self._ids))
        self._updates.append(update)
        self._arrived.set()
        return update["update_id"]

    def fail_next(
        self, method: str, status: int, description: str, *, after: int = 0, **parameters
    ) -> None:
        """Fail a coming call of ``method`` (the one after ``after`` more calls succeed)."""
        body = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        self.failures[method].extend([None] * after)
        self.failures[method].append((status, body))

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def sent(self, chat_id: int | None = None) -> list[Call]:
        """Successful sendMessage calls (to ``chat_id`` if given)."""
        return [
            c
            for c in self.called("sendMessage")
            if c.params.get("_ok") and (chat_id is None or c.params["chat_id"] == chat_id)
        ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [c.params["text"] for c in self.sent(chat_id)]

    async def wait_confirmed(self, update_id: int, timeout: float = 10.0) -> None:
        """Wait until the poller asked for updates after ``update_id`` (it was processed)."""
        deadline = time.monotonic() + timeout
        while self.confirmed <= update_id:
            if time.monotonic() > deadline:
                raise AssertionError(f"update {update_id} was not confirmed in {timeout}s")
            await asyncio.sleep(0.01)

    # -- the server ------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        if request.path_params["token"] != TOKEN:
            return JSONResponse(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, 401
            )
        params = await self._params(request)
        call = Call(method, params, self.now())
        self.calls.append(call)
        if self.failures.get(method) and (failure := self.failures[method].pop(0)):
            status, body = failure
            return JSONResponse(body, status_code=status)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, 404)
        result = await handler(params)
        params["_ok"] = True
        return JSONResponse({"ok": True, "result": result})

    async def _params(self, request: Request) -> dict:
        if request.headers.get("content-type", "").startswith("application/json"):
            return await request.json()
        form = await request.form()
        params = {}
        for key, value in form.items():
            if key in _RAW_KEYS:
                params[key] = value
                continue
            try:
                params[key] = json.loads(value)
            except (TypeError, ValueError):
                params[key] = value
        return params

    async def _m_getMe(self, params: dict) -> dict:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Siyu",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": True,
            "supports_inline_queries": False,
        }

    async def _m_getUpdates(self, params: dict) -> list[dict]:
        offset = params.get("offset") or 0
        self.confirmed = max(self.confirmed, offset)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(params.get("timeout", 0), 0.5))
        return list(self._updates)

    async def _m_sendMessage(self, params: dict) -> dict:
        chat_id = params["chat_id"]
        body = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"},
            "text": params["text"],
        }
        if params.get("message_thread_id"):
            body |= {"message_thread_id": params["message_thread_id"], "is_topic_message": True}
        return body

    async def _m_getChatAdministrators(self, params: dict) -> list[dict]:
        return [
            {"status": "creator", "is_anonymous": False, "user": user(uid, f"Admin{uid}")}
            for uid in self.admins.get(params["chat_id"], [])
        ]

    async def _m_createForumTopic(self, params: dict) -> dict:
        return {
            "message_thread_id": next(self._topic_ids),
            "name": params["name"],
            "icon_color": 7322096,
        }

    async def _m_deleteForumTopic(self, params: dict) -> bool:
        return True

    async def _m_answerCallbackQuery(self, params: dict) -> bool:
        return True

    async def _m_pinChatMessage(self, params: dict) -> bool:
        return True

    async def _m_deleteMessage(self, params: dict) -> bool:
        return True

    async def _m_restrictChatMember(self, params: dict) -> bool:
        return True

    async def _m_banChatMember(self, params: dict) -> bool:
        return True

    async def _m_unbanChatMember(self, params: dict) -> bool:
        return True

    async def _m_setMyCommands(self, params: dict) -> bool:
        return True

    async def _m_deleteWebhook(self, params: dict) -> bool:
        return True

    async def _m_setWebhook(self, params: dict) -> bool:
        return True


# -- update builders ---------------------------------------------------------------------

_msg_ids = itertools.count(1)


def user(uid: int, name: str = "", lang: str = "zh-hans") -> dict:
    return {"id": uid, "is_bot": False, "first_name": name or f"User{uid}", "language_code": lang}


def private_chat(uid: int) -> dict:
    return {"id": uid, "type": "private", "first_name": f"User{uid}"}


def group_chat(chat_id: int, title: str = "品牌会员群") -> dict:
    return {"id": chat_id, "type": "supergroup", "title": title}


def message(chat: dict, sender: dict, text: str, *, reply_to: dict | None = None) -> dict:
    body = {
        "message_id": next(_msg_ids),
        "date": int(time.time()),
        "chat": chat,
        "from": sender,
        "text": text,
    }
    if text.startswith("/"):
        body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    if reply_to is not None:
        body["reply_to_message"] = reply_to
    return {"message": body}


_ADMIN_RIGHTS = (
    "can_be_edited",
    "is_anonymous",
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)


def chat_member(status: str, who: dict) -> dict:
    """A ChatMember payload with the fields its status requires."""
    body = {"status": status, "user": who}
    if status == "administrator":
        body |= dict.fromkeys(_ADMIN_RIGHTS, False)
    elif status == "creator":
        body["is_anonymous"] = False
    elif status == "kicked":
        body["until_date"] = 0
    return body


def topic_message(chat_id: int, thread_id: int, sender: dict, text: str) -> dict:
    """A message in a forum topic of a supergroup (the staff relay group)."""
    update = message(
        {"id": chat_id, "type": "supergroup", "title": "客服中转", "is_forum": True},
        sender,
        text,
    )
    update["message"] |= {"message_thread_id": thread_id, "is_topic_message": True}
    return update


def member_change(chat: dict, who: dict, old: str, new: str, *, field: str = "chat_member") -> dict:
    return {
        field: {
            "chat": chat,
            "from": who,
            "date": int(time.time()),
            "old_chat_member": chat_member(old, who),
            "new_chat_member": chat_member(new, who),
        }
    }


def button_press(chat: dict, sender: dict, data: str) -> dict:
    return {
        "callback_query": {
            "id": f"cq{next(_msg_ids)}",
            "from": sender,
            "chat_instance": "ci",
            "data": data,
            "message": {
                "message_id": next(_msg_ids),
                "date": int(time.time()),
                "chat": chat,
                "from": user(BOT_ID, "Siyu"),
                "text": "choose",
            },
        }
    }


# -- a built Siyu with the Telegram channel against the fake --------------------------------


class FakeTime:
    """Seconds from a FakeClock; sleeping moves the clock instead of waiting."""

    def __init__(self, clock, settle: float = 0.0) -> None:
        self.clock = clock
        self.settle = settle  # real seconds to let granted sends reach the server first

    def now(self) -> float:
        return self.clock.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        target = self.now() + seconds
        await asyncio.sleep(self.settle)
        if self.now() < target:
            self.clock.advance(max(target - self.now(), 1e-6))


class TelegramHarness:
    """Siyu built with only the Telegram channel, pointed at a FakeBotAPI, on fake time."""

    def __init__(
        self,
        config,
        db,
        clock,
        *,
        mode: str = "polling",
        managers=(),
        settle: float = 0.0,
        relay_chat_id: int | None = None,
        relay_staff=(),
    ) -> None:
        from dataclasses import replace

        from bot.adapters.telegram.limits import TelegramRateLimiter
        from bot.app.assembly import build

        self.time = FakeTime(clock, settle)
        self.api = FakeBotAPI(now=self.time.now)
        self.clock = clock
        self.db = db
        cfg = config.replace(
            database=replace(config.database, url=db.url),
            sandbox=replace(config.sandbox, enabled=False),
            roles=replace(config.roles, managers=list(managers)),
            telegram=replace(
                config.telegram,
                token=TOKEN,
                base_url=self.api.base_url,
                mode=mode,
                webhook_secret="s3cret-token",
                poll_timeout=1,
                relay_chat_id=str(relay_chat_id) if relay_chat_id else "",
                relay_staff=list(relay_staff),
            ),
        )
        self.app = build(cfg, db=db, clock=clock)
        self.runtime = self.app.runtime
        self.adapter = self.runtime.adapters["telegram"]
        self.adapter.limiter = TelegramRateLimiter(now=self.time.now, sleep=self.time.sleep)

    async def __aenter__(self) -> TelegramHarness:
        await self.api.__aenter__()
        await self.adapter.start()
        await asyncio.wait_for(self.adapter.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.adapter.stop()
        await self.api.__aexit__(*exc)

    async def push(self, update: dict) -> int:
        """Hand an update to the poller and wait until it was processed."""
        update_id = self.api.push(update)
        await self.api.wait_confirmed(update_id)
        return update_id

    async def deliver(self) -> int:
        total = 0
        while n := await self.runtime.worker.drain_once():
            total += n
        return total

    def profile(self, user_id: int) -> dict | None:
        from storage import repos

        with self.db.sessions() as session:
            found = repos.customer_profile(session, "telegram", str(user_id), self.clock.now())
            return found.as_dict() if found else None
