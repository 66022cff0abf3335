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


def _check_member(value: str) -> str | None:
    channel, sep, user = value.partition(":")
    if not sep or channel not in CHANNELS or not user:
        return f"{value!r} must be '<channel>:<user id>' with channel one of {', '.join(CHANNELS)}"
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


@dataclass(frozen=True)
class SandboxConfig:
    """The local sandbox channel served at the web root."""

    enabled: bool = True
    groups: list[str] = field(default_factory=lambda: ["Siyu 体验群"])


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


@dataclass(frozen=True)
class RolesConfig:
    """Who may run managers' commands, as '<channel>:<user id>'."""

    managers: list[str] = field(
        default_factory=lambda: ["sandbox:manager"], metadata=_meta(_check_member)
    )


@dataclass(frozen=True)
class KeywordRule:
    """A tag given to a customer who writes one of the keywords (and none of the exclusions)."""

    tag: str
    keywords: list[str]
    exclude: list[str] = field(default_factory=list)
    ttl_days: int = 0


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


@dataclass(frozen=True)
class Config:
    """The whole configuration; every section has defaults."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})

    def replace(self, **sections) -> Config:
        """A copy with some sections replaced (for tests and the CLI)."""
        return dataclasses.replace(self, **sections)


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
        return cls(**kwargs)


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
