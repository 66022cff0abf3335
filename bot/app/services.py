"""What every part of a Siyu process shares: storage, config, templates, time, signals.

A :class:`Services` is enough for the scheduler's jobs and the CLI's verbs; the running bot
(:class:`bot.app.runtime.Runtime`) is one too, with the router, adapters and delivery
worker on top. Building one subscribes the followers of in-process signals
(:mod:`bot.core.signals`), so a click on a tracked link reaches campaigns and tagging in
whichever process records it.
"""

from __future__ import annotations

from bot.app.config import Config
from bot.core.clock import Clock
from bot.core.metrics import Metrics
from bot.core.signals import Bus, LinkClicked
from bot.core.templating import Renderer
from bot.customers.tagging import TaggingRules, link_tagging
from bot.marketing.campaigns.manage import count_link_click
from storage.db import Database

__all__ = ["Services"]


class Services:
    """The process's database, config, renderer, clock, signal bus and metrics."""

    def __init__(self, db: Database, config: Config, renderer: Renderer, clock: Clock) -> None:
        self.db = db
        self.config = config
        self.renderer = renderer
        self.clock = clock
        self.bus = Bus()
        self.metrics = Metrics()
        self.tagging_rules = TaggingRules(config)
        self.bus.subscribe(LinkClicked, count_link_click)
        self.bus.subscribe(LinkClicked, link_tagging(self.tagging_rules))
