"""Imports every module that defines tables, so Alembic and tests see the whole schema."""

# ruff: noqa: I001  (one line per issue, with its comment, rather than one sorted import)

from storage import models  # noqa: F401
from storage import wechat  # noqa: F401  (issue 4: WeChat OA and WeCom channels)
from storage import followups, handoff  # noqa: F401  (issue 7: flows, follow-ups, staff inbox)
from storage import telegram  # noqa: F401  (issue 3: Telegram channel)
from storage import orders, scores, segments, tag_rules  # noqa: F401  (issue 5: customers)
from storage import tag_scores  # noqa: F401  (issue 5: interest scores per tag)
from storage import campaigns, coupons  # noqa: F401  (issue 6: scenarios, campaigns, coupons)
from storage import links  # noqa: F401  (issue 6: tracked links in the funnel)
from storage import scenario_events  # noqa: F401  (issue 6: scenario funnel clicks)
from storage import console  # noqa: F401  (the manager console: segment counts by day)
