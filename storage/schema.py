"""Imports every module that defines tables, so Alembic and tests see the whole schema."""

# ruff: noqa: I001  (one line per area, with its comment, rather than one sorted import)

from storage import models  # noqa: F401
from storage import wechat  # noqa: F401  (WeChat OA and WeCom channels)
from storage import followups, handoff  # noqa: F401  (flows, follow-ups, staff inbox)
from storage import telegram  # noqa: F401  (Telegram channel)
from storage import orders, scores, segments, tag_rules  # noqa: F401  (customers)
from storage import tag_scores  # noqa: F401  (interest scores per tag)
from storage import campaigns, coupons  # noqa: F401  (scenarios, campaigns, coupons)
from storage import links  # noqa: F401  (tracked links in the funnel)
from storage import scenario_events  # noqa: F401  (scenario funnel clicks)
from storage import measures  # noqa: F401  (invites, referrals, rewards, survey answers)
from storage import wechat_inbound  # noqa: F401  (callback journal and plaintext-mode nonces)
from storage import groups  # noqa: F401  (groups: SOP posts, FAQ, moderation)
from storage import console  # noqa: F401  (the manager console: segment counts by day)
from storage import jobs  # noqa: F401  (batch jobs: campaign preparation, imports)
