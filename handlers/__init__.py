"""Bot handlers, and the one place that says in which order they run.

Group 0 runs for every event, even while staff own the conversation (tagging). Group 10 is
the bot's answers; in a group the first matching handler (highest priority) runs.
"""

from __future__ import annotations

from bot import filters as f
from bot.config import Config
from bot.events import EventKind
from bot.routing import Handler, Router
from handlers.basic import help_command, start, unknown_command
from handlers.tagging import KeywordMatcher, keyword_tagging

__all__ = ["register_handlers"]

TAGGING = 0
ANSWERS = 10


def register_handlers(router: Router, config: Config) -> Router:
    """Register Siyu's handlers on ``router`` in their documented order."""
    matcher = KeywordMatcher(config.tagging.keywords)
    router.add(
        Handler(
            "keyword_tagging",
            keyword_tagging(matcher),
            f.kind(EventKind.MESSAGE, EventKind.EDITED),
            group=TAGGING,
            during_handoff=True,
        )
    )
    router.add(Handler("start", start, f.command("start"), group=ANSWERS, priority=100))
    router.add(Handler("help", help_command, f.command("help"), group=ANSWERS, priority=100))
    router.add(
        Handler("unknown_command", unknown_command, f.command(), group=ANSWERS, priority=-100)
    )
    return router
