"""Whether the sandbox runs, and the refusal to expose it next to real channels.

The sandbox lets anyone who reaches the web port act as any customer or manager. It is on
by default only while no real channel (Telegram, WeChat, WeCom) is configured; next to a
real channel it runs only when ``[sandbox] enabled = true`` *and* ``[web] host`` is a
loopback address. Anything else stops start-up with one line saying why (exit code 2).
"""

from __future__ import annotations

import ipaddress
import logging

from bot.app.config import Config, ConfigError

__all__ = ["check_exposure", "is_loopback", "real_channels", "sandbox_enabled"]

log = logging.getLogger(__name__)


def real_channels(config: Config) -> list[str]:
    """The platform channels this configuration turns on."""
    found = []
    if config.telegram.token:
        found.append("telegram")
    if config.wechat.app_id:
        found.append("wechat")
    if config.wecom.corp_id:
        found.append("wecom")
    return found


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def sandbox_enabled(config: Config) -> bool:
    """Does this configuration run the sandbox channel (see the module docstring)?"""
    if config.sandbox.enabled is None:
        return not real_channels(config)
    return config.sandbox.enabled


def check_exposure(config: Config) -> None:
    """Raise ConfigError when the sandbox would be reachable next to a real channel."""
    channels = real_channels(config)
    if not (config.sandbox.enabled and channels):
        if sandbox_enabled(config) and not is_loopback(config.web.host):
            log.warning(
                "the sandbox is reachable from the network on %s: anyone there can act as "
                "any persona (fine for a demo; it stays off once a real channel is set)",
                config.web.host,
            )
        return
    if not is_loopback(config.web.host):
        raise ConfigError(
            config.source,
            "sandbox.enabled",
            f"the sandbox may run next to real channels ({', '.join(channels)}) only on a "
            f"loopback [web] host such as 127.0.0.1, not {config.web.host!r}; "
            "turn it off with [sandbox] enabled = false",
        )
