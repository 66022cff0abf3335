"""Typed configuration: a TOML file validated into frozen dataclasses.

No file is needed at all: every key has a default. ``load_config`` reads the file named by
``--config``, else ``$SIYU_CONFIG``, else ``./config.toml`` if present. Scalar keys of any
section can also come from the environment as ``SIYU_<SECTION>_<KEY>`` (for secrets such as
``SIYU_TELEGRAM_TOKEN``). Any problem raises :class:`ConfigError`, whose message names the
file, the key path and what is wrong; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Config", "ConfigError", "load_config"]

SUPPORTED_LOCALES = ("zh-CN", "en")
CHANNELS = ("sandbox", "telegram", "wechat", "wecom")


class ConfigError(Exception):
    """A configuration problem, with where it is (file and key path) and what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"config error in {where}: {problem}")


def _check_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as 'Asia/Shanghai')"
    return None


def _check_locale(value: str) -> str | None:
    if value not in SUPPORTED_LOCALES:
        return f"unsupported locale {value!r} (one of {', '.join(SUPPORTED_LOCALES)})"
    return None


def _check_port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"port {value} is out of range 0-65535"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _between(low: int, high: int):
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}, got {value}"

    return check


def _check_member(value: str) -> str | None:
    channel, sep, user = value.partition(":")
    if not sep or channel not in CHANNELS or not user:
        return f"{value!r} must be '<channel>:<user id>' with channel one of {', '.join(CHANNELS)}"
    return None


def _check_account(value: str) -> str | None:
    member, sep, username = value.rpartition(":")
    if not sep or not username or _check_member(member):
        return f"{value!r} must be '<channel>:<user id>:<staff username>'"
    return None


def _check_sandbox_admin(value: str) -> str | None:
    chat, sep, user = value.partition(":")
    if not sep or not chat or not user:
        return f"{value!r} must be '<sandbox group chat id>:<user id>', e.g. 'group-1:alice'"
    return None


def _meta(check=None, doc: str = "") -> dict:
    return {"check": check, "doc": doc}


@dataclass(frozen=True)
class GeneralConfig:
    """Defaults for customers whose platform does not tell us."""

    locale: str = field(default="zh-CN", metadata=_meta(_check_locale))
    timezone: str = field(default="Asia/Shanghai", metadata=_meta(_check_timezone))


@dataclass(frozen=True)
class DatabaseConfig:
    """Where Siyu keeps its state."""

    url: str = "sqlite:///var/siyu.db"
    echo: bool = False


@dataclass(frozen=True)
class WebConfig:
    """Siyu's HTTP server (sandbox page, webhooks, APIs)."""

    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_meta(_check_port))
    #: The argon2id cost of new staff password hashes: passes, and memory in KiB. Unset,
    #: the argon2 library's defaults (RFC 9106's low-memory choice: 3 passes over 64 MiB),
    #: which production keeps; the test suite lowers them to hash quickly.
    password_time_cost: int | None = field(default=None, metadata=_meta(_between(1, 64)))
    password_memory_kib: int | None = field(
        default=None, metadata=_meta(_between(32, 4 * 1024 * 1024))
    )


@dataclass(frozen=True)
class SandboxConfig:
    """The local sandbox channel served at the web root.

    ``enabled`` unset: on only while no real channel (telegram, wechat, wecom) is
    configured. With a real channel it runs only when set to true and ``[web] host`` is a
    loopback address (bot/app/exposure.py); otherwise start-up stops with a reason."""

    enabled: bool | None = None
    groups: list[str] = field(default_factory=lambda: ["Siyu 体验群"])
    #: Sandbox personas who are admins of a sandbox group: "<group chat id>:<user id>".
    group_admins: list[str] = field(default_factory=list, metadata=_meta(_check_sandbox_admin))


@dataclass(frozen=True)
class DeliveryConfig:
    """The outbox delivery worker."""

    batch_size: int = field(default=50, metadata=_meta(_positive))
    max_attempts: int = field(default=8, metadata=_meta(_positive))
    backoff_base_seconds: float = field(default=2.0, metadata=_meta(_positive))
    backoff_max_seconds: float = field(default=600.0, metadata=_meta(_positive))
    lease_seconds: float = field(default=60.0, metadata=_meta(_positive))
    poll_interval_seconds: float = field(default=1.0, metadata=_meta(_positive))
    shutdown_grace_seconds: float = field(default=10.0, metadata=_meta(_positive))
    #: How often a worker re-reads which campaigns and scenarios have rows waiting, to give
    #: each an equal share of its claims (a new campaign is served fairly after at most this).
    fair_share_refresh_seconds: float = field(default=2.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class JobsConfig:
    """The batch-job worker (campaign preparation, console imports) of ``worker``/``all``."""

    #: Jobs one process runs at the same time (each in a thread of its own).
    concurrency: int = field(default=2, metadata=_meta(_between(1, 32)))
    #: Attempts before a job that keeps failing (or whose worker keeps dying) is failed.
    max_attempts: int = field(default=3, metadata=_meta(_between(1, 20)))
    lease_seconds: float = field(default=60.0, metadata=_meta(_positive))
    poll_interval_seconds: float = field(default=2.0, metadata=_meta(_positive))
    retry_base_seconds: float = field(default=5.0, metadata=_meta(_positive))
    retry_max_seconds: float = field(default=600.0, metadata=_meta(_positive))
    shutdown_grace_seconds: float = field(default=10.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class RolesConfig:
    """Who may run managers' commands, as '<channel>:<user id>'."""

    managers: list[str] = field(default_factory=list, metadata=_meta(_check_member))
    #: Chat identities linked to inbox accounts, "<channel>:<user id>:<staff username>":
    #: the account's role (staff or manager) is the identity's role in chat.
    staff_accounts: list[str] = field(default_factory=list, metadata=_meta(_check_account))


def _check_weight(value: float) -> str | None:
    return None if 0 < value <= 1000 else f"must be greater than 0 and at most 1000, got {value}"


@dataclass(frozen=True)
class KeywordRule:
    """A tag given to a customer who writes one of the keywords (and none of the exclusions)."""

    tag: str
    keywords: list[str]
    exclude: list[str] = field(default_factory=list)
    ttl_days: int = 0
    weight: float = field(default=1.0, metadata=_meta(lambda v: _check_weight(v)))


def _default_rules() -> list[KeywordRule]:
    return [
        KeywordRule(tag="周末出游", keywords=["周末去哪", "周末出游", "周末游", "weekend trip"]),
        KeywordRule(tag="早餐", keywords=["早餐", "早饭", "breakfast"]),
        KeywordRule(tag="母婴", keywords=["宝宝", "辅食", "奶粉", "baby"]),
    ]


@dataclass(frozen=True)
class TaggingConfig:
    """Automatic tagging by what customers write."""

    keywords: list[KeywordRule] = field(default_factory=_default_rules)
    events: list[EventRule] = field(default_factory=list)
    activity: list[ActivityRule] = field(default_factory=list)
    #: Interest scores (sum of rule weights per tag) halve every this many days; 0 = never.
    interest_half_life_days: float = field(
        default=30.0, metadata=_meta(lambda v: None if v >= 0 else f"must be >= 0, got {v}")
    )


EVENT_TRIGGERS = ("join", "button", "scene", "coupon", "link")


@dataclass(frozen=True)
class EventRule:
    """A tag for doing something: joined group X, pressed button Y, came from scene S..."""

    tag: str
    trigger: str = field(
        metadata=_meta(
            lambda v: None if v in EVENT_TRIGGERS else f"must be one of {', '.join(EVENT_TRIGGERS)}"
        )
    )
    value: str = "*"
    ttl_days: int = field(default=0, metadata=_meta(lambda v: None if v >= 0 else "must be >= 0"))
    weight: float = field(default=1.0, metadata=_meta(lambda v: _check_weight(v)))


@dataclass(frozen=True)
class ActivityRule:
    """A tag for ≥ min_messages in ``days`` days (in ``group``, or any group with "*");
    removed after ``silent_days`` without such activity."""

    tag: str
    min_messages: int = field(default=5, metadata=_meta(_positive))
    days: int = field(default=7, metadata=_meta(_positive))
    group: str = "*"
    silent_days: int = field(default=30, metadata=_meta(_positive))


@dataclass(frozen=True)
class ApiConfig:
    """The authenticated HTTP API (POST /api/orders); disabled while key is empty.

    Give the key as ``SIYU_API_KEY`` in the environment rather than in the file."""

    key: str = ""


def _check_level(value: str) -> str | None:
    return None if value in ("high", "low", "any") else "must be 'high', 'low' or 'any'"


@dataclass(frozen=True)
class RfmGroup:
    """A named RFM group: R, F and M each 'high' (score ≥ high_score), 'low' or 'any'."""

    name: str
    r: str = field(default="any", metadata=_meta(_check_level))
    f: str = field(default="any", metadata=_meta(_check_level))
    m: str = field(default="any", metadata=_meta(_check_level))


def _default_rfm_groups() -> list[RfmGroup]:
    levels = [
        ("重要价值", "high", "high", "high"),
        ("重要发展", "high", "low", "high"),
        ("重要保持", "low", "high", "high"),
        ("重要挽留", "low", "low", "high"),
        ("一般价值", "high", "high", "low"),
        ("一般发展", "high", "low", "low"),
        ("一般保持", "low", "high", "low"),
        ("一般挽留", "low", "low", "low"),
    ]
    return [RfmGroup(name, r, f, m) for name, r, f, m in levels]


@dataclass(frozen=True)
class RfmConfig:
    """RFM scoring (bot/customers/rfm.py): 1-5 by rank over customers who ordered within window_days."""

    window_days: int = field(default=365, metadata=_meta(_positive))
    currency: str = "CNY"
    high_score: int = field(
        default=3, metadata=_meta(lambda v: None if 1 <= v <= 5 else "must be 1-5")
    )
    groups: list[RfmGroup] = field(default_factory=_default_rfm_groups)

    def problems(self) -> typing.Iterator[tuple[str, str]]:
        """Group names unique and usable; no group hidden behind an earlier, wider one."""
        seen: dict[str, int] = {}
        for i, g in enumerate(self.groups):
            key = f"groups[{i}]"
            if not g.name.strip() or len(g.name) > 32:
                yield f"{key}.name", f"must be 1-32 characters, got {g.name!r}"
            elif g.name == "none":
                yield f"{key}.name", "'none' is reserved (rfm:none means no group)"
            elif g.name in seen:
                yield f"{key}.name", f"{g.name!r} is already the name of groups[{seen[g.name]}]"
            seen.setdefault(g.name, i)
            for j, earlier in enumerate(self.groups[:i]):
                if all(
                    e in ("any", mine)
                    for e, mine in ((earlier.r, g.r), (earlier.f, g.f), (earlier.m, g.m))
                ):
                    yield (
                        key,
                        (
                            f"{g.name!r} can never match: groups[{j}] ({earlier.name!r}, "
                            f"r={earlier.r} f={earlier.f} m={earlier.m}) is tried first and "
                            "covers it"
                        ),
                    )
                    break


@dataclass(frozen=True)
class LifecycleConfig:
    """Lifecycle stages by orders: new → activated → retained → dormant → churned."""

    retained_min_orders: int = field(default=2, metadata=_meta(_positive))
    dormant_days: int = field(default=90, metadata=_meta(_positive))
    churned_days: int = field(default=180, metadata=_meta(_positive))

    def problems(self) -> typing.Iterator[tuple[str, str]]:
        if self.churned_days <= self.dormant_days:
            yield (
                "churned_days",
                (
                    f"must be greater than dormant_days ({self.dormant_days}), "
                    f"got {self.churned_days}"
                ),
            )


@dataclass(frozen=True)
class Tier:
    """A membership tier reached at min_spend (trailing 12 months, in rfm.currency)."""

    name: str
    min_spend: float = field(metadata=_meta(_positive))


def _default_tiers() -> list[Tier]:
    return [Tier("银卡", 1000.0), Tier("金卡", 5000.0), Tier("黑卡", 20000.0)]


@dataclass(frozen=True)
class TiersConfig:
    """Membership tiers by trailing-12-month spend; below the lowest there is no tier."""

    levels: list[Tier] = field(default_factory=_default_tiers)

    def problems(self) -> typing.Iterator[tuple[str, str]]:
        """Names unique and 1-32 characters; min_spend strictly ascending."""
        names: dict[str, int] = {}
        for i, tier in enumerate(self.levels):
            if not tier.name.strip() or len(tier.name) > 32:
                yield f"levels[{i}].name", f"must be 1-32 characters, got {tier.name!r}"
            elif tier.name == "none":
                yield f"levels[{i}].name", "'none' is reserved (tier:none means no tier)"
            elif tier.name in names:
                yield (
                    f"levels[{i}].name",
                    (f"{tier.name!r} is already the name of levels[{names[tier.name]}]"),
                )
            names.setdefault(tier.name, i)
            if i and tier.min_spend <= self.levels[i - 1].min_spend:
                yield (
                    f"levels[{i}].min_spend",
                    (
                        f"tiers go from lowest to highest: {tier.min_spend:g} must be greater than "
                        f"levels[{i - 1}].min_spend ({self.levels[i - 1].min_spend:g})"
                    ),
                )


def _check_relay_chat(value: str) -> str | None:
    if value and not (value.startswith("-") and value[1:].isdigit()):
        return f"{value!r} must be a supergroup's chat id such as '-1001234567890'"
    return None


def _check_relay_staff(value: str) -> str | None:
    user, sep, staff = value.partition(":")
    if not sep or not user.isdigit() or not staff:
        return f"{value!r} must be '<telegram user id>:<staff username>'"
    return None


@dataclass(frozen=True)
class TelegramConfig:
    """The Telegram channel; it starts when a token is set."""

    token: str = ""
    mode: str = field(
        default="polling",
        metadata=_meta(
            lambda v: None if v in ("polling", "webhook") else "must be 'polling' or 'webhook'"
        ),
    )
    base_url: str = ""
    webhook_secret: str = ""
    #: Public HTTPS URL of POST /telegram/webhook; if set, Siyu registers it on start.
    webhook_url: str = ""
    #: Long-polling timeout of getUpdates (seconds).
    poll_timeout: int = field(default=30, metadata=_meta(_positive))
    #: How long a group's admin list (getChatAdministrators) is cached (seconds).
    admin_cache_seconds: float = field(default=600.0, metadata=_meta(_positive))
    #: Staff relay group: a forum supergroup's chat id ("-100..."); empty means no relay.
    relay_chat_id: str = field(default="", metadata=_meta(_check_relay_chat))
    #: Who may act in the relay group: "<telegram user id>:<staff username>" entries.
    relay_staff: list[str] = field(default_factory=list, metadata=_meta(_check_relay_staff))
    #: Redis URL for rate limits shared by several Siyu processes; empty: per process.
    redis_url: str = ""


def _check_clock_range(value: str) -> str | None:
    start, sep, end = value.partition("-")
    try:
        if not sep:
            raise ValueError
        for part in (start, end):
            hour, minute = part.split(":")
            if not (0 <= int(hour) <= 23 and 0 <= int(minute) <= 59):
                raise ValueError
    except ValueError:
        return f"{value!r} must be 'HH:MM-HH:MM', e.g. '09:00-21:00'"
    return None


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


@dataclass(frozen=True)
class ConversationsConfig:
    """Flows and their breakpoints: see docs/flows.md."""

    flows_dir: str = ""
    resume_after_minutes: int = field(default=30, metadata=_meta(_non_negative))
    misunderstandings_before_handoff: int = field(default=2, metadata=_meta(_positive))
    followup_interval_seconds: float = field(default=30.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class HandoffConfig:
    """Flagging conversations for staff, the staff inbox and its SLA."""

    keywords: list[str] = field(
        default_factory=lambda: ["投诉", "退款", "人工", "转人工", "complaint", "refund", "human"]
    )
    vip_tags: list[str] = field(default_factory=lambda: ["VIP", "黑卡"])
    business_hours: str = field(default="09:00-21:00", metadata=_meta(_check_clock_range))
    expected_minutes: int = field(default=10, metadata=_meta(_positive))
    sla_minutes: int = field(default=15, metadata=_meta(_positive))
    secret_key: str = ""
    session_hours: int = field(default=12, metadata=_meta(_positive))
    login_max_failures: int = field(default=5, metadata=_meta(_positive))
    login_window_minutes: int = field(default=15, metadata=_meta(_positive))
    #: Failed logins from one address (any names) in the window before it is refused;
    #: ``login_max_failures`` counts per name *and* address, so others are not locked out.
    login_max_failures_per_address: int = field(default=20, metadata=_meta(_positive))
    #: While a conversation waits for or is with staff: at most one short acknowledgement
    #: of the customer's new messages per this many minutes.
    ack_minutes: int = field(default=10, metadata=_meta(_positive))


@dataclass(frozen=True)
class MarketingConfig:
    """The marketing-send policy (follow-ups now, campaigns later): bot/marketing/policy.py."""

    quiet_hours: str = field(default="22:00-08:00", metadata=_meta(_check_clock_range))
    max_per_window: int = field(default=3, metadata=_meta(_non_negative))
    window_hours: int = field(default=168, metadata=_meta(_positive))


def _check_aes_key(value: str) -> str | None:
    if value and len(value) != 43:
        return f"EncodingAESKey must be 43 characters, got {len(value)}"
    return None


def _check_api_base(value: str) -> str | None:
    if not value.startswith(("https://", "http://")) or not value.endswith("/"):
        return "must be an http(s) URL ending with '/'"
    return None


def _check_corp_tag(value: str) -> str | None:
    tag, sep, corp_tag = value.partition("=")
    if not sep or not tag.strip() or not corp_tag.strip():
        return f"{value!r} must be '<Siyu tag>=<WeCom corp tag id>'"
    return None


@dataclass(frozen=True)
class WechatConfig:
    """The WeChat Official Account (公众号) channel; it starts when app_id is set."""

    app_id: str = ""
    app_secret: str = ""
    token: str = ""
    encoding_aes_key: str = field(default="", metadata=_meta(_check_aes_key))
    allow_plaintext: bool = False
    api_base_url: str = field(
        default="https://api.weixin.qq.com/cgi-bin/", metadata=_meta(_check_api_base)
    )
    replay_window_seconds: float = field(default=300.0, metadata=_meta(_positive))
    max_body_bytes: int = field(default=65536, metadata=_meta(_positive))
    reply_budget_seconds: float = field(default=3.0, metadata=_meta(_positive))
    passive_reply: bool = True
    fallback_template_id: str = ""
    fallback_template_field: str = "content"
    fallback_template_url: str = ""
    fetch_unionid: bool = False
    token_refresh_margin_seconds: float = field(default=300.0, metadata=_meta(_positive))
    http_timeout_seconds: float = field(default=10.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class WecomConfig:
    """The WeCom (企业微信) app and customer-contact channel; it starts when corp_id is set."""

    corp_id: str = ""
    secret: str = ""
    agent_id: int = 0
    token: str = ""
    encoding_aes_key: str = field(default="", metadata=_meta(_check_aes_key))
    api_base_url: str = field(
        default="https://qyapi.weixin.qq.com/cgi-bin/", metadata=_meta(_check_api_base)
    )
    replay_window_seconds: float = field(default=300.0, metadata=_meta(_positive))
    max_body_bytes: int = field(default=65536, metadata=_meta(_positive))
    reply_budget_seconds: float = field(default=3.0, metadata=_meta(_positive))
    mass_poll_interval_seconds: float = field(default=300.0, metadata=_meta(_positive))
    mass_batch_seconds: float = field(default=5.0, metadata=_meta(_positive))
    fetch_unionid: bool = False
    corp_tags: list[str] = field(default_factory=list, metadata=_meta(_check_corp_tag))
    tag_sync_interval_seconds: float = field(default=60.0, metadata=_meta(_positive))
    token_refresh_margin_seconds: float = field(default=300.0, metadata=_meta(_positive))
    http_timeout_seconds: float = field(default=10.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class ScenarioDef:
    """A timed push in each customer's own time zone (see bot/marketing/scenarios.py)."""

    name: str
    template: str
    schedule: str = field(default="daily", metadata=_meta(lambda v: _check_schedule(v)))
    window: str = field(default="07:00-09:00", metadata=_meta(_check_clock_range))
    segment: str = "opt_out:no"
    buttons: list[str] = field(default_factory=list, metadata=_meta(lambda v: _check_button(v)))
    coupon: str = ""
    once_per_days: int = field(default=0, metadata=_meta(_non_negative))
    quiet_hours: bool = True
    priority: int = 5
    enabled: bool = True
    #: a satisfaction survey (a name in [[surveys.definitions]]): the push asks its question
    #: with the score buttons instead of ``template``
    survey: str = ""


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_schedule(value: str) -> str | None:
    if value in ("daily", "birthday"):
        return None
    days = [d.strip() for d in value.split(",")]
    if days and all(d in _WEEKDAYS for d in days):
        return None
    return f"{value!r} must be 'daily', 'birthday' or weekdays such as 'fri' or 'sat,sun'"


def _check_button(value: str) -> str | None:
    label, sep, action = value.partition("=")
    if not sep or not label.strip() or not action.strip() or len(action) > 32:
        return f"{value!r} must be '<label>=<action>' (action up to 32 characters)"
    return None


def _default_scenarios() -> list[ScenarioDef]:
    return [
        # The customer's breakfast time is the point of it: its window is its quiet rule.
        ScenarioDef(
            "morning_offer", "morning_offer", "daily", "07:00-09:00", "tag:早餐", quiet_hours=False
        ),
        ScenarioDef("weekend_trip", "weekend_trip", "fri", "15:00-18:00", "tag:周末出游"),
        ScenarioDef("birthday", "birthday", "birthday", "10:00-12:00", "opt_out:no", priority=20),
        ScenarioDef(
            "win_back",
            "win_back",
            "daily",
            "10:00-20:00",
            "last_order > 90d and orders >= 1",
            once_per_days=180,
        ),
    ]


@dataclass(frozen=True)
class ScenariosConfig:
    """Scenario-timed pushes and the one scheduler that runs them."""

    scheduler: bool = True
    tick_seconds: float = field(default=60.0, metadata=_meta(_positive))
    definitions: list[ScenarioDef] = field(default_factory=_default_scenarios)


def _share(value: float) -> str | None:
    return None if 0 <= value < 1 else f"must be a share from 0 to below 1, got {value}"


@dataclass(frozen=True)
class CampaignsConfig:
    """Campaign preparation and the pilot → rollout decision."""

    chunk_size: int = field(default=2000, metadata=_meta(_positive))
    channels: list[str] = field(
        default_factory=lambda: ["wecom", "wechat", "telegram", "sandbox"],
        metadata=_meta(lambda v: None if v in CHANNELS else f"unknown channel {v!r}"),
    )
    priority: int = 10
    pilot_share: float = field(default=0.05, metadata=_meta(_share))
    holdout_share: float = field(default=0.05, metadata=_meta(_share))
    pilot_hours: float = field(default=24.0, metadata=_meta(_positive))
    min_uplift: float = field(default=0.0, metadata=_meta(_non_negative))
    max_optout_rate: float = field(default=0.02, metadata=_meta(_share))
    min_pilot_size: int = field(default=20, metadata=_meta(_non_negative))


@dataclass(frozen=True)
class CouponDef:
    """A coupon: ``amount`` off (or ``percent`` off), valid ``valid_days`` from issue."""

    name: str
    title: str = ""
    amount: float = field(default=0.0, metadata=_meta(_non_negative))
    percent: int = field(default=0, metadata=_meta(lambda v: None if 0 <= v <= 100 else "0-100"))
    min_spend: float = field(default=0.0, metadata=_meta(_non_negative))
    valid_days: int = field(default=7, metadata=_meta(_positive))
    total_stock: int = field(default=0, metadata=_meta(_non_negative))
    per_customer: int = field(default=1, metadata=_meta(_positive))


@dataclass(frozen=True)
class CouponsConfig:
    """Coupon definitions (total_stock 0 means unlimited)."""

    definitions: list[CouponDef] = field(
        default_factory=lambda: [
            CouponDef("breakfast5", "早餐立减 5 元", amount=5.0, min_spend=20.0, valid_days=3),
            CouponDef("birthday20", "生日 8 折", percent=20, valid_days=14),
            CouponDef("welcome_back", "回归礼 20 元", amount=20.0, min_spend=99.0, valid_days=14),
            # staff can issue any definition from the inbox; this one is for apologies
            CouponDef("staff_comp20", "补偿券20元", amount=20.0, valid_days=3),
            # referral rewards (老带新): both sides of an invite, see [referrals]
            CouponDef("referral10", "好友邀请礼 10 元", amount=10.0, min_spend=50.0, valid_days=30),
        ]
    )


def _check_public_url(value: str) -> str | None:
    if value and (not value.startswith(("https://", "http://")) or value.endswith("/")):
        return "must be empty or an http(s) URL without a trailing '/'"
    return None


@dataclass(frozen=True)
class LinksConfig:
    """Tracked links (``{{ track(url) }}`` in campaign templates → ``GET /r/<token>``)."""

    #: Public URL where Siyu's web server is reached; empty: http://<web.host>:<web.port>.
    base_url: str = field(default="", metadata=_meta(_check_public_url))


def _check_survey_kind(value: str) -> str | None:
    return None if value in ("nps", "csat") else f"{value!r} must be 'nps' (0-10) or 'csat' (1-5)"


@dataclass(frozen=True)
class SurveyDef:
    """A satisfaction survey: NPS (0-10) or CSAT (1-5), then an optional "why?"."""

    name: str
    kind: str = field(default="nps", metadata=_meta(_check_survey_kind))
    #: a score below this flags the conversation for staff (0: never)
    flag_below: int = field(default=0, metadata=_meta(_non_negative))
    ask_comment: bool = True
    #: send it this many days after each order (0: not after orders)
    after_order_days: int = field(default=0, metadata=_meta(_non_negative))


def _default_surveys() -> list[SurveyDef]:
    return [
        SurveyDef("nps", "nps", flag_below=7),
        SurveyDef("csat", "csat", flag_below=3),
    ]


@dataclass(frozen=True)
class SurveysConfig:
    """Satisfaction surveys in chat (docs/measures.md)."""

    definitions: list[SurveyDef] = field(default_factory=_default_surveys)
    #: a typed score answers the last survey question sent within this many hours
    answer_hours: int = field(default=72, metadata=_meta(_positive))
    #: a "why?" comment is taken within this many hours of the score
    comment_hours: int = field(default=24, metadata=_meta(_positive))


def _check_referral_when(value: str) -> str | None:
    return None if value in ("joined", "first_order") else "must be 'joined' or 'first_order'"


def _check_referral_reward(value: str) -> str | None:
    ok = ("referrer", "newcomer", "both")
    return None if value in ok else "must be 'referrer', 'newcomer' or 'both'"


@dataclass(frozen=True)
class ReferralRule:
    """Reward the referrer and/or the newcomer with a coupon when the newcomer does ``when``."""

    name: str
    coupon: str
    when: str = field(default="first_order", metadata=_meta(_check_referral_when))
    reward: str = field(default="both", metadata=_meta(_check_referral_reward))


@dataclass(frozen=True)
class ReferralsConfig:
    """Referrals (老带新): personal invites, attribution and rewards (docs/measures.md)."""

    enabled: bool = True
    #: the bot's @username, for Telegram invite links t.me/<username>?start=ref_<code>
    telegram_bot_username: str = ""
    #: a newcomer must be new: first seen at most this many hours before arriving by invite
    newcomer_hours: int = field(default=24, metadata=_meta(_positive))
    #: rewards to one referrer per period (beyond it they are recorded as capped)
    cap_per_referrer: int = field(default=10, metadata=_meta(_positive))
    cap_period_days: int = field(default=30, metadata=_meta(_positive))
    rules: list[ReferralRule] = field(
        default_factory=lambda: [ReferralRule("invite_first_order", "referral10")]
    )


@dataclass(frozen=True)
class GroupsConfig:
    """Running the groups: scheduled posts (SOP), FAQ answers, moderation (bot/groups/)."""

    #: How often the one scheduler looks for due post slots and expired newcomer checks.
    tick_seconds: float = field(default=30.0, metadata=_meta(_positive))
    #: A slot missed (process down) is still posted this many minutes late, else recorded
    #: as missed.
    catch_up_minutes: int = field(
        default=30,
        metadata=_meta(lambda v: None if 0 <= v <= 1440 else f"must be 0 to 1440, got {v}"),
    )
    max_plans: int = field(default=200, metadata=_meta(_positive))
    max_faq_entries: int = field(default=500, metadata=_meta(_positive))
    #: Cool-down of a new FAQ entry (seconds) unless its definition says otherwise.
    faq_cooldown_seconds: int = field(default=600, metadata=_meta(_non_negative))
    #: Chats ('<channel>:<chat id>') that get moderation reports from channels where the bot
    #: cannot act (WeChat, WeCom, sandbox); empty: the managers of [roles] in 1:1.
    report_to: list[str] = field(default_factory=list, metadata=_meta(_check_member))


@dataclass(frozen=True)
class LoggingConfig:
    """Log output."""

    level: str = field(
        default="INFO",
        metadata=_meta(
            lambda v: (
                None
                if v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR")
                else "must be DEBUG, INFO, WARNING or ERROR"
            )
        ),
    )
    #: "text" (one line per record) or "json" (one JSON object per line, with event and
    #: outbox ids when the record is about one).
    format: str = field(
        default="text",
        metadata=_meta(lambda v: None if v in ("text", "json") else "must be 'text' or 'json'"),
    )


def _check_role(value: str) -> str | None:
    roles = ("all", "web", "worker", "scheduler")
    return None if value in roles else f"must be one of {', '.join(roles)}"


def _check_metrics_port(value: int) -> str | None:
    return None if value == 0 else _check_port(value)


@dataclass(frozen=True)
class ProcessConfig:
    """What this process runs (bot/app/roles.py); ``siyu run --role`` overrides ``role``."""

    role: str = field(default="all", metadata=_meta(_check_role))
    #: How often a standby (scheduler, Telegram polling) tries to take over a dead leader.
    standby_seconds: float = field(default=5.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics at ``/metrics``.

    ``port = 0``: on the web port, for callers with the API key (``Authorization: Bearer
    <[api] key>``). A port: on ``127.0.0.1`` at that port, without a key, for a scraper on
    the same host (the main port then has no ``/metrics``)."""

    enabled: bool = True
    port: int = field(default=0, metadata=_meta(_check_metrics_port))


def _retention_days(value: int) -> str | None:
    return None if 0 <= value <= 36500 else "must be 0 (keep forever) to 36500 days"


def _purge_batch(value: int) -> str | None:
    return None if 1 <= value <= 100_000 else "must be 1 to 100000"


@dataclass(frozen=True)
class RetentionConfig:
    """How long old rows are kept; ``siyu purge`` deletes older ones (0: keep forever)."""

    #: Recorded interactions (messages, clicks, commands) of customers.
    interactions_days: int = field(default=0, metadata=_meta(_retention_days))
    #: Conversation transcripts: handed-off conversation messages and sandbox transcripts.
    transcripts_days: int = field(default=0, metadata=_meta(_retention_days))
    #: Outbox rows that reached a final state (sent, failed, unreachable, cancelled).
    delivered_outbox_days: int = field(default=0, metadata=_meta(_retention_days))
    #: Rows deleted per transaction.
    batch_size: int = field(default=1000, metadata=_meta(_purge_batch))


def _share_below_one(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be at least 0 and below 1"


@dataclass(frozen=True)
class LimitsConfig:
    """WeChat and WeCom API quotas shared by every process (bot/adapters/quotas.py).

    ``redis_url`` empty: each process counts alone (a warning says so). Telegram's limits
    use ``[telegram] redis_url``."""

    redis_url: str = ""
    #: Share of each window kept for replies and staff answers when marketing fills it.
    reply_reserve: float = field(default=0.2, metadata=_meta(_share_below_one))
    #: WeChat OA customer-service message calls per day (45009 beyond it).
    wechat_custom_per_day: int = field(default=500_000, metadata=_meta(_positive))
    #: WeChat OA template message calls per day.
    wechat_template_per_day: int = field(default=100_000, metadata=_meta(_positive))
    #: WeCom calls per API per minute and per hour (blocked for 60 s / 60 min beyond).
    wecom_per_minute: int = field(default=10_000, metadata=_meta(_positive))
    wecom_per_hour: int = field(default=150_000, metadata=_meta(_positive))


@dataclass(frozen=True)
class PipelineConfig:
    """The inbound pipeline: events routed in batches, one transaction per batch."""

    batch_size: int = field(default=100, metadata=_meta(_between(1, 1000)))
    lanes: int = field(default=4, metadata=_meta(_between(1, 64)))


@dataclass(frozen=True)
class Config:
    """The whole configuration; every section has defaults."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    rfm: RfmConfig = field(default_factory=RfmConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    tiers: TiersConfig = field(default_factory=TiersConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    wechat: WechatConfig = field(default_factory=WechatConfig)
    wecom: WecomConfig = field(default_factory=WecomConfig)
    conversations: ConversationsConfig = field(default_factory=ConversationsConfig)
    handoff: HandoffConfig = field(default_factory=HandoffConfig)
    marketing: MarketingConfig = field(default_factory=MarketingConfig)
    scenarios: ScenariosConfig = field(default_factory=ScenariosConfig)
    campaigns: CampaignsConfig = field(default_factory=CampaignsConfig)
    coupons: CouponsConfig = field(default_factory=CouponsConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    surveys: SurveysConfig = field(default_factory=SurveysConfig)
    referrals: ReferralsConfig = field(default_factory=ReferralsConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})

    def replace(self, **sections) -> Config:
        """A copy with some sections replaced (for tests and the CLI)."""
        return dataclasses.replace(self, **sections)

    def problems(self) -> typing.Iterator[tuple[str, str]]:
        """Checks across sections: a name that refers to another section exists there."""
        surveys = [d.name for d in self.surveys.definitions]
        for i, item in enumerate(self.scenarios.definitions):
            if item.survey and item.survey not in surveys:
                yield (
                    f"scenarios.definitions[{i}].survey",
                    (f"no survey named {item.survey!r} (known: {', '.join(surveys) or 'none'})"),
                )
        coupons = [d.name for d in self.coupons.definitions]
        for i, rule in enumerate(self.referrals.rules):
            if rule.coupon not in coupons:
                yield (
                    f"referrals.rules[{i}].coupon",
                    (f"no coupon named {rule.coupon!r} in [coupons] (known: {', '.join(coupons)})"),
                )


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _type_name(tp) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if typing.get_origin(tp) is list:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> typing.NoReturn:
        raise ConfigError(self.source, key, problem)

    def value(self, tp, raw, key: str, check=None):
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            return self.value(args[0], raw, key, check)
        if origin is list:
            (item_tp,) = typing.get_args(tp)
            if not isinstance(raw, list):
                self.fail(key, f"expected a list, got {type(raw).__name__}")
            return [self.value(item_tp, item, f"{key}[{i}]", check) for i, item in enumerate(raw)]
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw, dict):
                self.fail(key, f"expected a table, got {type(raw).__name__}")
            return self.table(tp, raw, key)
        if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
            raw = float(raw)
        if (tp is int and isinstance(raw, bool)) or not isinstance(raw, tp):
            self.fail(key, f"expected {_type_name(tp)}, got {type(raw).__name__} {raw!r}")
        if check is not None and (problem := check(raw)):
            self.fail(key, problem)
        return raw

    def table(self, cls, raw: dict, prefix: str):
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for name in raw:
            if name not in fields:
                known = ", ".join(sorted(fields))
                self.fail(_join(prefix, name), f"unknown key (known keys here: {known})")
        kwargs = {}
        for name, f in fields.items():
            key = _join(prefix, name)
            if name in raw:
                kwargs[name] = self.value(hints[name], raw[name], key, f.metadata.get("check"))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(key, "required key is missing")
        built = cls(**kwargs)
        # Checks across keys: a section's ``problems()`` yields (key path, problem).
        for key, problem in getattr(built, "problems", lambda: ())():
            self.fail(_join(prefix, key), problem)
        return built


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _env_overrides(data: dict, environ: typing.Mapping[str, str]) -> dict:
    """Apply SIYU_<SECTION>_<KEY> variables for scalar keys, converted to the key's type."""
    hints = typing.get_type_hints(Config)
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, section_tp in hints.items():
        if not dataclasses.is_dataclass(section_tp):
            continue
        for f in dataclasses.fields(section_tp):
            var = f"SIYU_{section}_{f.name}".upper()
            if var not in environ:
                continue
            tp = typing.get_type_hints(section_tp)[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):  # e.g. bool | None
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            text = environ[var]
            try:
                value: object
                if tp is bool:
                    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError("expected true or false")
                    value = text.lower() in ("1", "true", "yes")
                elif tp is int:
                    value = int(text)
                elif tp is float:
                    value = float(text)
                elif tp is str:
                    value = text
                else:
                    continue
            except ValueError as exc:
                raise ConfigError(
                    f"environment variable {var}", f"{section}.{f.name}", str(exc)
                ) from None
            merged.setdefault(section, {})
            if not isinstance(merged[section], dict):
                continue
            merged[section][f.name] = value
    return merged


def find_config_path(
    explicit: str | None, environ: typing.Mapping[str, str] | None = None
) -> Path | None:
    """The file to read: --config, else $SIYU_CONFIG, else ./config.toml if present."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get("SIYU_CONFIG"):
        return Path(environ["SIYU_CONFIG"])
    default = Path("config.toml")
    return default if default.is_file() else None


def load_config(
    path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None
) -> Config:
    """Read and validate a configuration; ``path=None`` means built-in defaults (plus env)."""
    environ = os.environ if environ is None else environ
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(source, "", "file not found") from None
        except (PermissionError, IsADirectoryError) as exc:
            raise ConfigError(source, "", f"cannot read the file ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(source, "", "not valid UTF-8") from None
    data = _env_overrides(data, environ)
    config = _Builder(source).table(Config, data, "")
    return dataclasses.replace(config, source=source)
