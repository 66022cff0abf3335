"""WeChat and WeCom API clients whose access token is shared by every Siyu process.

wechatpy's clients keep the token in process memory and, on 40001/42001, refetch and retry
without limit. Here the token lives in the database (``wechat_access_tokens``) with its
expiry: a process uses it until ``margin`` before it expires, and only one process fetches
a new one (the row is locked while fetching; the others wait and then read it). An API
answer of 40001/42001/40014 invalidates exactly the token that was used and the call is
retried once. The API base URL comes from the config (a proxy or a test server may stand
in for api.weixin.qq.com). The clients are blocking (``requests``): call them in a thread.

WeCom limits each API on its own (calls per minute and per hour, per company): the WeCom
client counts every request — the access-token fetch (``gettoken``) included — in a
:class:`~bot.adapters.quotas.SharedQuota` scoped by the API's endpoint (shared by all
processes through Redis), and a request over the count is not made: it raises :class:`QuotaExceeded` (errcode 45009, as WeCom would answer) with the
seconds until the window has room. Calls made while sending an outbox row count with that
row's purpose (:data:`CALL_PURPOSE`), so replies keep their reserve; background work
(mass-send results, tag sync) counts as marketing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from wechatpy.client import WeChatClient
from wechatpy.enterprise.client import WeChatClient as WeComClient
from wechatpy.exceptions import WeChatClientException

from bot.adapters.quotas import SharedQuota
from bot.core.clock import Clock
from storage.db import Database, insert_ignore
from storage.wechat import AccessToken

__all__ = [
    "CALL_PURPOSE",
    "OfficialAccountApi",
    "QuotaExceeded",
    "TokenStore",
    "WecomApi",
    "api_endpoint",
    "errcode_of",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors that mean "this access token is not (or no longer) valid".
TOKEN_ERRORS = frozenset({40001, 40014, 42001})


#: The outbox purpose the API calls of this context are made for (set by a send; a task or
#: thread started from it inherits it). Background work counts as marketing.
CALL_PURPOSE: ContextVar[str] = ContextVar("wechat_call_purpose", default="marketing")


class QuotaExceeded(WeChatClientException):
    """Siyu's shared count of one API's calls is full: the call was not made (45009)."""

    def __init__(self, endpoint: str, wait: float, client: Any) -> None:
        super().__init__(45009, f"{endpoint}: API call quota used for now", client=client)
        self.endpoint = endpoint
        self.wait = wait


def api_endpoint(url_or_endpoint: str, base_url: str) -> str:
    """The API a request goes to (``externalcontact/add_msg_template``), without the base
    URL and the query."""
    path = url_or_endpoint.removeprefix(base_url).split("?", 1)[0]
    return path.strip("/")[:100]


def errcode_of(exc: WeChatClientException) -> int | None:
    try:
        return int(exc.errcode) if exc.errcode is not None else None
    except (TypeError, ValueError):
        return None


class TokenStore:
    """Access tokens in the database, shared by all processes (see the module docstring)."""

    def __init__(self, db: Database, clock: Clock, margin_seconds: float) -> None:
        self.db = db
        self.clock = clock
        self.margin = timedelta(seconds=margin_seconds)

    def current(self, key: str) -> str | None:
        """The stored token if it is good for longer than the margin, else None."""
        with self.db.sessions() as session:
            row = session.get(AccessToken, key)
            if (
                row
                and row.token
                and row.expires_at
                and row.expires_at - self.margin > self.clock.now()
            ):
                return row.token
        return None

    def refresh(
        self, key: str, fetch: Callable[[], tuple[str, int]], *, stale: str | None = None
    ) -> str:
        """Fetch a new token unless another process already did (while we waited for the lock).

        ``stale`` is a token the API refused: it is replaced even if not yet expired.
        """
        with self.db.transaction() as session:
            # The write comes first so that on SQLite this transaction holds the write lock
            # from its first statement; on PostgreSQL the row is locked FOR UPDATE.
            insert_ignore(session, AccessToken, {"key": key, "fetch_count": 0}, ["key"])
            row = session.scalars(
                select(AccessToken).where(AccessToken.key == key).with_for_update()
            ).one()
            now = self.clock.now()
            fresh = row.expires_at is not None and row.expires_at - self.margin > now
            if row.token and fresh and row.token != stale:
                return row.token
            token, expires_in = fetch()
            row.token = token
            row.fetched_at = now
            row.expires_at = now + timedelta(seconds=expires_in)
            row.fetch_count = (row.fetch_count or 0) + 1
            log.info("access token %s fetched (expires in %ss)", key, expires_in)
            return token


class _SharedToken:
    """Mixin for wechatpy clients: token from the TokenStore, retried once on token errors."""

    _store: TokenStore
    _token_key: str
    _token_path: str
    _local: threading.local

    def _init_shared(self, store: TokenStore, key: str, base_url: str, token_path: str) -> None:
        self._store = store
        self._token_key = key
        self.API_BASE_URL = base_url
        self._token_path = token_path
        self._local = threading.local()

    def _token_params(self) -> dict[str, str]:
        raise NotImplementedError

    def _fetch_token(self) -> tuple[str, int]:
        result = self._http.get(  # type: ignore[attr-defined]
            self.API_BASE_URL + self._token_path,
            params=self._token_params(),
            timeout=self.timeout,  # type: ignore[attr-defined]
        )
        result.raise_for_status()
        data = result.json()
        if data.get("errcode"):
            raise WeChatClientException(data["errcode"], data.get("errmsg", ""), client=self)
        return data["access_token"], int(data.get("expires_in", 7200))

    @property
    def access_token(self) -> str:
        token = self._store.current(self._token_key) or self._store.refresh(
            self._token_key, self._fetch_token
        )
        self._local.token = token
        return token

    def fetch_access_token(self) -> dict:
        token = self._store.refresh(
            self._token_key, self._fetch_token, stale=getattr(self._local, "token", None)
        )
        return {"access_token": token}

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call one API method; on an invalid/expired token refetch it and retry once."""
        try:
            return fn(*args, **kwargs)
        except WeChatClientException as exc:
            if errcode_of(exc) not in TOKEN_ERRORS:
                raise
            log.info("access token %s refused (%s); refetching once", self._token_key, exc.errcode)
            self.fetch_access_token()
            return fn(*args, **kwargs)


class OfficialAccountApi(_SharedToken, WeChatClient):
    """wechatpy's Official Account client on the shared token store and a configured base URL."""

    def __init__(
        self, app_id: str, secret: str, store: TokenStore, base_url: str, timeout: float
    ) -> None:
        super().__init__(app_id, secret, timeout=timeout, auto_retry=False)
        self._init_shared(store, f"wechat:{app_id}", base_url, "token")

    def _token_params(self) -> dict[str, str]:
        return {"grant_type": "client_credential", "appid": self.appid, "secret": self.secret}


class WecomApi(_SharedToken, WeComClient):
    """wechatpy's WeCom client on the shared token store and a configured base URL."""

    def __init__(
        self,
        corp_id: str,
        secret: str,
        store: TokenStore,
        base_url: str,
        timeout: float,
        quota: SharedQuota | None = None,
    ) -> None:
        super().__init__(corp_id, secret, timeout=timeout, auto_retry=False)
        # One token per app secret; the key names the secret by a hash, never by its text.
        digest = hashlib.sha256(secret.encode()).hexdigest()[:12]
        self._init_shared(store, f"wecom:{corp_id}:{digest}", base_url, "gettoken")
        self.quota = quota

    def _request(self, method: str, url_or_endpoint: str, **kwargs: Any) -> Any:
        """Count the call against its API's quota first (see the module docstring)."""
        self._count(api_endpoint(url_or_endpoint, self.API_BASE_URL))
        return super()._request(method, url_or_endpoint, **kwargs)

    def _fetch_token(self) -> tuple[str, int]:
        """Fetching the access token is an API call like the others: ``gettoken`` has its
        own quota, counted before the request is made."""
        self._count(self._token_path)
        return super()._fetch_token()

    def _count(self, endpoint: str) -> None:
        """Take one call of ``endpoint`` from its quota; raises :class:`QuotaExceeded`."""
        if self.quota is not None:
            wait = self.quota.take_blocking(CALL_PURPOSE.get(), endpoint)
            if wait > 0:
                raise QuotaExceeded(endpoint, wait, self)

    def _token_params(self) -> dict[str, str]:
        return {"corpid": self.corp_id, "corpsecret": self.secret}
