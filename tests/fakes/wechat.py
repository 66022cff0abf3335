"""The WeChat side of the wire, for tests: callbacks built as WeChat builds them, and a fake
WeChat/WeCom API server on 127.0.0.1.

:class:`CallbackSigner` follows the public spec (消息加解密说明) using ``cryptography``
directly — not wechatpy — so the adapters' use of wechatpy is checked against an
independent implementation (and the test suite cross-checks the two). :class:`FakeWechatApi`
answers the API calls Siyu makes, records them, and can be told to fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse
from xml.etree import ElementTree

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeChat's PKCS#7 variant pads to 32 bytes


def random_aes_key() -> str:
    """A 43-character EncodingAESKey."""
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def xml_of(fields: dict[str, object]) -> str:
    """``<xml>`` with CDATA strings and bare integers, as WeChat writes callbacks."""
    parts = []
    for name, value in fields.items():
        if isinstance(value, int):
            parts.append(f"<{name}>{value}</{name}>")
        elif isinstance(value, list):
            items = "".join(f"<Item>{cdata(str(v))}</Item>" for v in value)
            parts.append(f"<{name}>{items}</{name}>")
        else:
            parts.append(f"<{name}>{cdata(str(value))}</{name}>")
    return "<xml>" + "".join(parts) + "</xml>"


OA_APP_ID = "wx0123456789abcdef"


def oa_config(config, db_url: str, api: FakeWechatApi, **wechat):
    """``config`` with an Official Account on ``db_url`` whose API is the fake ``api``:
    AppID OA_APP_ID, Token "callback-token", a fresh EncodingAESKey (``wechat`` overrides
    any [wechat] key, e.g. ``encoding_aes_key=""`` for plaintext mode)."""
    settings = {
        "app_id": OA_APP_ID,
        "app_secret": "s3cret",
        "token": "callback-token",
        "encoding_aes_key": random_aes_key(),
        "api_base_url": api.base_url,
    }
    return _with_channel(config, db_url, "wechat", settings | wechat)


def _with_channel(config, db_url: str, section: str, settings: dict):
    from dataclasses import replace

    return config.replace(
        database=replace(config.database, url=db_url),
        **{section: replace(getattr(config, section), **settings)},
    )


WECOM_CORP_ID = "ww0123456789abcdef"


def wecom_config(config, db_url: str, api: FakeWechatApi, **wecom):
    """``config`` with a WeCom app on ``db_url`` whose API is the fake ``api``: CorpID
    WECOM_CORP_ID, agent 1000002, Token "wecom-token", a fresh EncodingAESKey (``wecom``
    overrides any [wecom] key)."""
    settings = {
        "corp_id": WECOM_CORP_ID,
        "secret": "corp-secret",
        "agent_id": 1000002,
        "token": "wecom-token",
        "encoding_aes_key": random_aes_key(),
        "api_base_url": api.base_url,
    }
    return _with_channel(config, db_url, "wecom", settings | wecom)


@dataclass
class CallbackSigner:
    """Signs and encrypts callbacks for one account (OA AppID or WeCom CorpID)."""

    token: str
    aes_key: str
    receiver_id: str
    now: callable = time.time

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.aes_key + "=")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, xml: str, receiver_id: str | None = None) -> str:
        body = xml.encode()
        rid = (receiver_id if receiver_id is not None else self.receiver_id).encode()
        plain = os.urandom(16) + struct.pack(">I", len(body)) + body + rid
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(plain) + enc.finalize()).decode()

    def decrypt(self, encrypt: str) -> tuple[str, str]:
        dec = self._cipher().decryptor()
        plain = dec.update(base64.b64decode(encrypt)) + dec.finalize()
        plain = plain[: -plain[-1]]
        (length,) = struct.unpack(">I", plain[16:20])
        return plain[20 : 20 + length].decode(), plain[20 + length :].decode()

    def stamp(self) -> tuple[str, str]:
        return str(int(self.now())), os.urandom(6).hex()

    # -- Official Account ----------------------------------------------------------------

    def oa_verify_query(self, echostr: str = "echo-123") -> str:
        ts, nonce = self.stamp()
        sig = signature(self.token, ts, nonce)
        return urlencode({"signature": sig, "timestamp": ts, "nonce": nonce, "echostr": echostr})

    def oa_callback(
        self, fields: dict, *, aes: bool = True, receiver_id: str | None = None
    ) -> tuple[str, bytes]:
        """(query string, body) of a POST as WeChat sends it, in safe mode or plaintext."""
        ts, nonce = self.stamp()
        xml = xml_of(fields)
        query = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if not aes:
            return urlencode(query), xml.encode()
        encrypt = self.encrypt(xml, receiver_id)
        query |= {
            "openid": str(fields.get("FromUserName", "")),
            "encrypt_type": "aes",
            "msg_signature": signature(self.token, ts, nonce, encrypt),
        }
        body = xml_of({"ToUserName": fields.get("ToUserName", ""), "Encrypt": encrypt})
        return urlencode(query), body.encode()

    def open_reply(self, body: str) -> dict[str, str]:
        """Check a safe-mode passive reply's MsgSignature, decrypt it, return its fields."""
        outer = {e.tag: e.text or "" for e in ElementTree.fromstring(body)}
        expected = signature(self.token, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"])
        assert outer["MsgSignature"] == expected, "passive reply signature does not verify"
        xml, rid = self.decrypt(outer["Encrypt"])
        assert rid == self.receiver_id, f"passive reply is for {rid!r}"
        return {e.tag: e.text or "" for e in ElementTree.fromstring(xml)}

    # -- WeCom ---------------------------------------------------------------------------

    def wecom_verify_query(self, echo: str = "wecom-echo-42") -> str:
        ts, nonce = self.stamp()
        echostr = self.encrypt(echo)
        sig = signature(self.token, ts, nonce, echostr)
        return urlencode(
            {"msg_signature": sig, "timestamp": ts, "nonce": nonce, "echostr": echostr}
        )

    def wecom_callback(self, fields: dict, *, receiver_id: str | None = None) -> tuple[str, bytes]:
        ts, nonce = self.stamp()
        encrypt = self.encrypt(xml_of(fields), receiver_id)
        query = {
            "msg_signature": signature(self.token, ts, nonce, encrypt),
            "timestamp": ts,
            "nonce": nonce,
        }
        body = xml_of({"ToUserName": self.receiver_id, "AgentID": "1000002", "Encrypt": encrypt})
        return urlencode(query), body.encode()


@dataclass
class Call:
    """One API request the fake server received."""

    path: str
    params: dict[str, str]
    body: dict

    @property
    def endpoint(self) -> str:
        return self.path.removeprefix("/cgi-bin/")


@dataclass
class FakeWechatApi:
    """A fake api.weixin.qq.com / qyapi.weixin.qq.com on 127.0.0.1 (start it, point clients
    at ``base_url``). Tokens are ``tok-1``, ``tok-2``, ...; other answers are scripted."""

    port: int
    calls: list[Call] = field(default_factory=list)
    token_fetches: int = 0
    failures: dict[str, list[dict]] = field(default_factory=dict)
    unionids: dict[str, str] = field(default_factory=dict)
    #: msgid → status of every target (an int), or target → status (a dict)
    mass_status: dict[str, int | dict[str, int]] = field(default_factory=dict)
    mass_tasks: dict[str, dict] = field(default_factory=dict)
    revoked_tokens: set[str] = field(default_factory=set)
    token_delay: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/"

    def fail_next(
        self, endpoint: str, errcode: int, errmsg: str = "scripted", times: int = 1
    ) -> None:
        with self._lock:
            self.failures.setdefault(endpoint, []).extend(
                [{"errcode": errcode, "errmsg": errmsg}] * times
            )

    def calls_to(self, endpoint: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.endpoint == endpoint]

    def _answer(self, method: str, raw_path: str, body: bytes) -> dict:
        url = urlparse(raw_path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            data = json.loads(body.decode() or "{}") if body else {}
        except ValueError:
            data = {"_raw": body.decode(errors="replace")}
        endpoint = url.path.removeprefix("/cgi-bin/")
        if endpoint in ("token", "gettoken"):
            time.sleep(self.token_delay)
            with self._lock:
                self.token_fetches += 1
                self.calls.append(Call(url.path, params, data))
                return {"access_token": f"tok-{self.token_fetches}", "expires_in": 7200}
        with self._lock:
            self.calls.append(Call(url.path, params, data))
            if params.get("access_token") in self.revoked_tokens or not params.get("access_token"):
                return {"errcode": 40001, "errmsg": "invalid credential"}
            queued = self.failures.get(endpoint)
            if queued:
                return queued.pop(0)
        n = len(self.calls)
        if endpoint == "user/info":
            openid = params.get("openid", "")
            out = {"subscribe": 1, "openid": openid, "nickname": "N"}
            if openid in self.unionids:
                out["unionid"] = self.unionids[openid]
            return out
        if endpoint == "externalcontact/get":
            ext = params.get("external_userid", "")
            contact = {"external_userid": ext, "name": "客户", "type": 1}
            if ext in self.unionids:
                contact["unionid"] = self.unionids[ext]
            return {"errcode": 0, "errmsg": "ok", "external_contact": contact, "follow_user": []}
        if endpoint == "externalcontact/add_msg_template":
            with self._lock:
                self.mass_tasks[f"msg-{n}"] = data
            return {"errcode": 0, "errmsg": "ok", "fail_list": [], "msgid": f"msg-{n}"}
        if endpoint == "externalcontact/get_group_msg_result":
            msgid = data.get("msgid", "")
            status = self.mass_status.get(msgid, 0)
            task = self.mass_tasks.get(msgid)
            if task is None:
                targets = [("external_userid", "x")]
            else:
                targets = [("external_userid", t) for t in task.get("external_userid") or []]
                targets += [("chat_id", t) for t in task.get("chat_id_list") or []]
            detail = [
                {
                    field_: target,
                    "userid": (task or {}).get("sender", "staff"),
                    "status": status.get(target, 0) if isinstance(status, dict) else status,
                }
                for field_, target in targets
            ]
            return {
                "errcode": 0,
                "errmsg": "ok",
                "check_status": 1 if any(d["status"] for d in detail) else 0,
                "detail_list": detail,
            }
        if endpoint == "externalcontact/groupchat/get":
            return {
                "errcode": 0,
                "errmsg": "ok",
                "group_chat": {"chat_id": data.get("chat_id"), "owner": "staff-owner"},
            }
        if endpoint in ("message/custom/send", "message/template/send", "message/send"):
            return {"errcode": 0, "errmsg": "ok", "msgid": 1000 + n}
        return {"errcode": 0, "errmsg": "ok"}

    def start(self) -> FakeWechatApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = json.dumps(fake._answer(self.command, self.path, body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _reply

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        # a short poll interval: stop() returns within it (the default 0.5 s is per test)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class RunningSiyu:
    """A built Siyu served by uvicorn on 127.0.0.1:free port, inside the test's event loop."""

    def __init__(self, config, db, clock, port: int) -> None:
        from bot.app.assembly import build

        self.app = build(config, db=db, clock=clock)
        self.runtime = self.app.runtime
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._server = None
        self._task = None

    def adapter(self, channel: str):
        return self.runtime.adapters[channel]

    async def __aenter__(self) -> RunningSiyu:
        import asyncio

        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app.asgi, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
            )
        )
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                break
            await asyncio.sleep(0.02)
        assert self._server.started, "Siyu did not start"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.should_exit = True
        await self._task


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll ``predicate`` (sync) until it is true; fail the test after ``timeout``."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
