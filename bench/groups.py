"""Benchmark: the per-message cost of running the groups, and posting one SOP slot.

    .venv/bin/python -m bench.groups --faq 500 --messages 5000 --groups 2000

Prints: FAQ matching (bot.groups.faq.find_match over N entries with 4 keywords each, on
group messages of ~60 characters) in messages/s, next to a bare loop of the same keyword
checks; moderation rules on members' messages (bot.groups.moderation.check_message with
links, flood and banned words on, none triggering) in messages/s; and one SOP slot to G
groups (bot.groups.sop.run_due: claim, render, outbox insert, post record per group) in
groups/s. SQLite in a temporary file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app.config import load_config
from bot.app.services import Services
from bot.core.clock import FakeClock
from bot.core.templating import Renderer
from bot.groups import faq, moderation, sop
from storage import repos
from storage.db import Database

NOW = datetime(2026, 3, 6, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
WORDS = ["退货", "发货", "优惠", "会员", "积分", "尺码", "门店", "营业", "快递", "发票"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faq", type=int, default=500)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=2000)
    args = parser.parse_args()

    config = load_config(None, environ={})
    config = config.replace(groups=replace(config.groups, max_faq_entries=args.faq + 1))
    db = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    db.migrate()
    renderer = Renderer()
    clock = FakeClock(NOW)

    with db.transaction() as s:
        for n in range(args.faq):
            line = (
                f"问题{n} keywords=q{n}{WORDS[n % 10]},问{n},k{n}x,词{n}词 groups=always | 答案 {n}"
            )
            faq.add_entry(s, faq.parse_faq(line, renderer, config), config=config, now=NOW, created_by="bench")  # fmt: skip
    texts = [f"大家好，请问{WORDS[i % 10]}要多久？第 {i} 次问，谢谢各位朋友的帮忙啦～" for i in range(args.messages)]  # fmt: skip

    with db.sessions() as s:
        faq.find_match(s, channel="telegram", chat_id="-1", in_group=True, mentions_bot=True, text="x", now=NOW)  # fmt: skip
        start = time.perf_counter()
        for text in texts:
            faq.find_match(s, channel="telegram", chat_id="-1", in_group=True, mentions_bot=True, text=text, now=NOW)  # fmt: skip
        faq_rate = len(texts) / (time.perf_counter() - start)
    keywords = [[f"q{n}{WORDS[n % 10]}", f"问{n}", f"k{n}x", f"词{n}词"] for n in range(args.faq)]
    start = time.perf_counter()
    for text in texts:
        any(k in text for ks in keywords for k in ks)
    bare_rate = len(texts) / (time.perf_counter() - start)

    with db.transaction() as s:
        group = repos.ensure_group(s, "telegram", "-100999", "会员群")
        customer, _ = repos.upsert_customer(
            s,
            "telegram",
            "42",
            display_name="Amy",
            locale="zh-CN",
            timezone="Asia/Shanghai",
            now=NOW - timedelta(days=30),
        )
        repos.ensure_membership(s, group.id, customer.id, NOW - timedelta(days=30))
        moderation.configure(s, group, ["links", "3"], "bench", NOW)
        moderation.configure(s, group, ["flood", "20", "10", "5"], "bench", NOW)
        moderation.configure(s, group, ["words", "add", "代购", "刷单", "加微信"], "bench", NOW)
        group_id, customer_id = group.id, customer.id
    start = time.perf_counter()
    with db.sessions() as s:
        group = s.get(type(group), group_id)
        for text in texts:
            moderation.check_message(
                s, group=group, customer_id=customer_id, user_id="42", user_name="Amy",
                text=text, raw={}, now=NOW, config=config, renderer=renderer,
            )  # fmt: skip
    mod_rate = len(texts) / (time.perf_counter() - start)

    with db.transaction() as s:
        for n in range(args.groups):
            repos.ensure_group(s, "telegram", f"-100{n:06d}", f"会员{n}群")
        spec = sop.parse_plan(
            "morning daily 09:30 to=title:会员* | 早上好，{{ group }}！", renderer
        )
        sop.create_plan(s, spec, config=config, now=NOW, created_by="bench")
    clock.advance(timedelta(minutes=31))
    start = time.perf_counter()
    posted = sop.run_due(Services(db, config, renderer, clock))
    sop_seconds = time.perf_counter() - start

    print(f"FAQ match, {args.faq} entries x 4 keywords: {faq_rate:,.0f} messages/s (bare keyword loop: {bare_rate:,.0f}/s)")  # fmt: skip
    print(f"moderation rules (links, flood, banned words; none hit): {mod_rate:,.0f} messages/s")
    print(f"one SOP slot to {posted.get('morning', 0)} groups: {sop_seconds:.2f} s ({posted.get('morning', 0) / sop_seconds:,.0f} groups/s)")  # fmt: skip
    db.close()


if __name__ == "__main__":
    main()
