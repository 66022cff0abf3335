"""Verifying, decrypting and parsing WeChat / WeCom callbacks; building passive replies.

Shared by the Official Account and WeCom adapters. XML is parsed with defusedxml (DTDs,
entities and external references are refused before any expansion), signatures are
compared in constant time, timestamps must fall inside a replay window, and the AES
message body must name our AppID / CorpID. Every refusal is a :class:`CallbackRejected`
carrying the HTTP status to answer and the reason to log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from starlette.requests import ClientDisconnect, Request
from wechatpy.crypto import PrpCrypto as OaPrpCrypto
from wechatpy.enterprise.crypto import PrpCrypto as CorpPrpCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import InvalidAppIdException

__all__ = [
    "CallbackCrypto",
    "CallbackRejected",
    "parse_xml",
    "read_body",
    "signature_of",
    "text_reply_xml",
]


class CallbackRejected(Exception):
    """A callback we refuse: answer ``status`` and log ``reason``; nothing is processed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signature_of(*parts: str) -> str:
    """WeChat's callback signature: SHA-1 of the sorted parts concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise CallbackRejected(413, f"body of {declared} bytes is over the {limit} limit")
        except ValueError:
            raise CallbackRejected(400, "bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise CallbackRejected(413, f"body is over the {limit} byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise CallbackRejected(400, "client disconnected") from None
    return b"".join(chunks)


def _value(element: Element) -> object:
    children = list(element)
    if not children:
        return element.text or ""
    out: dict[str, object] = {}
    for child in children:
        value = _value(child)
        if child.tag in out:
            previous = out[child.tag]
            out[child.tag] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[child.tag] = value
    return out


def parse_xml(body: bytes | str) -> dict[str, object]:
    """A callback's ``<xml>`` as a dict (leaves are strings; repeated tags become lists).

    Raises CallbackRejected(400) for malformed XML and for DTDs, entities or external
    references (billion laughs, XXE), which defusedxml refuses before expanding anything.
    """
    if not body or not body.strip():
        raise CallbackRejected(400, "empty body")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CallbackRejected(400, f"hostile XML refused ({type(exc).__name__})") from None
    except (ParseError, ValueError) as exc:
        raise CallbackRejected(400, f"malformed XML ({exc})") from None
    if root.tag != "xml":
        raise CallbackRejected(400, f"unexpected root element <{root.tag}>")
    value = _value(root)
    return value if isinstance(value, dict) else {}


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply_xml(to_user: str, from_user: str, text: str, created: int) -> str:
    """A passive text reply (``]]>`` inside the text is split across CDATA sections)."""
    return (
        "<xml>"
        f"<ToUserName>{_cdata(to_user)}</ToUserName>"
        f"<FromUserName>{_cdata(from_user)}</FromUserName>"
        f"<CreateTime>{created}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>"
        f"<Content>{_cdata(text)}</Content>"
        "</xml>"
    )


class CallbackCrypto:
    """Signature, replay-window and AES checks for one account (OA AppID or WeCom CorpID)."""

    def __init__(
        self,
        *,
        token: str,
        encoding_aes_key: str,
        receiver_id: str,
        replay_window: float,
        now: Callable[[], float] = time.time,
        corp: bool = False,
    ) -> None:
        self.token = token
        self.receiver_id = receiver_id
        self.replay_window = replay_window
        self._now = now
        self._corp = corp
        self.key: bytes | None = None
        if encoding_aes_key:
            self.key = base64.b64decode(encoding_aes_key + "=")
            if len(self.key) != 32:
                raise ValueError("EncodingAESKey must decode to 32 bytes")

    @property
    def encrypted(self) -> bool:
        return self.key is not None

    def check_timestamp(self, timestamp: str) -> None:
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            # (a 400-digit "timestamp" cannot even be compared with the clock)
            raise CallbackRejected(400, "missing or non-numeric timestamp")
        sent = int(timestamp)
        skew = abs(self._now() - sent)
        if skew > self.replay_window:
            raise CallbackRejected(
                403, f"timestamp {sent} is {skew:.0f}s from now (window {self.replay_window:g}s)"
            )

    def check_signature(self, signature: str, timestamp: str, nonce: str, *extra: str) -> None:
        expected = signature_of(self.token, timestamp, nonce, *extra)
        if not hmac.compare_digest(expected, signature or ""):
            raise CallbackRejected(403, "bad signature")

    def _prp(self):
        assert self.key is not None
        return CorpPrpCrypto(self.key) if self._corp else OaPrpCrypto(self.key)

    def decrypt(self, encrypt: str, msg_signature: str, timestamp: str, nonce: str) -> str:
        """Check ``msg_signature`` over the ciphertext and decrypt it; the ID must be ours."""
        if self.key is None:
            raise CallbackRejected(403, "encrypted callback but no EncodingAESKey configured")
        if not encrypt:
            raise CallbackRejected(400, "no <Encrypt> element")
        self.check_signature(msg_signature, timestamp, nonce, encrypt)
        try:
            return self._prp().decrypt(encrypt, self.receiver_id)
        except (InvalidAppIdException, InvalidCorpIdException):
            raise CallbackRejected(403, "ciphertext is for another AppID/CorpID") from None
        except Exception as exc:
            raise CallbackRejected(
                400, f"ciphertext does not decrypt ({type(exc).__name__})"
            ) from None

    def encrypt_reply(
        self, xml: str, timestamp: str | None = None, nonce: str | None = None
    ) -> str:
        """The safe-mode envelope of a passive reply, signed with msg_signature."""
        timestamp = timestamp or str(int(self._now()))
        nonce = nonce or secrets.token_hex(8)
        encrypt = self._prp().encrypt(xml, self.receiver_id).decode()
        signature = signature_of(self.token, timestamp, nonce, encrypt)
        return (
            "<xml>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce><![CDATA[{nonce}]]></Nonce>"
            "</xml>"
        )
