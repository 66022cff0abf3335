"""A campaign's status and the moves between them.

``draft`` → ``pilot_pending`` (asked for, the scheduler runs it) → ``piloting`` → (the
verdict) ``stopped`` or ``launch_pending`` → ``running``. A campaign can be asked to launch
from any state but ``running`` (a stopped or paused one is launched again), and paused
while piloting, running or waiting for its pilot or launch.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from bot.core.i18n import t
from bot.core.states import IllegalTransition, Machine

__all__ = [
    "ACTIVE",
    "LAUNCHABLE",
    "CampaignError",
    "CampaignStatus",
    "IllegalCampaignTransition",
    "status_name",
    "transition",
]


class CampaignStatus(StrEnum):
    """Where a campaign is in its life."""

    DRAFT = "draft"
    PILOT_PENDING = "pilot_pending"
    PILOTING = "piloting"
    LAUNCH_PENDING = "launch_pending"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class CampaignError(ValueError):
    """A campaign action that cannot be done now, and why.

    With ``key`` (templates/i18n/campaign.toml) and ``values`` the reason can be said in
    the reader's locale (:meth:`text`); ``str()`` is the English text (logs, CLI).
    """

    def __init__(self, message: str = "", key: str | None = None, **values: object) -> None:
        self.key, self.values = key, values
        super().__init__(t(key, "en", **values) if key else message)

    def text(self, locale: str | None) -> str:
        """The reason in the reader's locale."""
        return t(self.key, locale, **self.values) if self.key else str(self)


class IllegalCampaignTransition(CampaignError, IllegalTransition):
    """A campaign status change the table below does not allow."""

    def __init__(self, machine: str, old: str, new: str, allowed: Iterable[str]) -> None:
        IllegalTransition.__init__(self, machine, old, new, allowed)
        self.key, self.values = None, {}
        self.campaign = ""

    def text(self, locale: str | None) -> str:
        """The refused move in the reader's locale, statuses by their names there."""
        names = [status_name(s, locale) for s in self.allowed]
        return t(
            "campaign.error.illegal_move",
            locale,
            name=self.campaign or "-",
            old=status_name(self.old, locale),
            new=status_name(self.new, locale),
            allowed=t("campaign.error.list_sep", locale).join(names) or "-",
        )


def status_name(status: str, locale: str | None) -> str:
    """A campaign status as its reader says it (``paused`` → 已暂停)."""
    known = status in {s.value for s in CampaignStatus}
    return t(f"campaign.status.{status if known else 'other'}", locale)


_S = CampaignStatus
TRANSITIONS = {
    _S.DRAFT: (_S.PILOT_PENDING, _S.LAUNCH_PENDING),
    _S.PILOT_PENDING: (_S.PILOTING, _S.LAUNCH_PENDING, _S.PAUSED),
    _S.PILOTING: (_S.LAUNCH_PENDING, _S.STOPPED, _S.PAUSED),
    _S.LAUNCH_PENDING: (_S.RUNNING, _S.PAUSED),
    _S.RUNNING: (_S.PAUSED,),
    _S.PAUSED: (_S.LAUNCH_PENDING,),
    _S.STOPPED: (_S.LAUNCH_PENDING,),
}
MACHINE = Machine("campaign status", CampaignStatus, TRANSITIONS, error=IllegalCampaignTransition)
#: Statuses from which a campaign may be (or already is being) launched.
LAUNCHABLE = (
    *(s for s, moves in TRANSITIONS.items() if _S.LAUNCH_PENDING in moves),
    _S.LAUNCH_PENDING,
)
#: Campaigns still at work (an opt-out counts against them).
ACTIVE = (_S.PILOT_PENDING, _S.PILOTING, _S.LAUNCH_PENDING, _S.RUNNING, _S.PAUSED)


def transition(old: str, new: str, *, name: str = "") -> CampaignStatus:
    """Check a campaign's move; raises :class:`IllegalCampaignTransition`."""
    try:
        return MACHINE.check(old, new, subject=f"campaign {name!r}" if name else "")
    except IllegalCampaignTransition as exc:
        exc.campaign = name
        raise
