"""Benchmark: what the render budget costs, and how fast an attack is stopped.

    .venv/bin/python bench/render_budget.py            # 20,000 renders per case
    .venv/bin/python bench/render_budget.py --renders 100000

Prints renders per second for a typical campaign text (a ~300-character Chinese message,
five variables and a loop) in Jinja2's plain sandbox and in Siyu's budgeted one — both
``Template.render`` and the compiled fast path campaigns use — and how long the nested-loop
attack (150 million iterations unbudgeted) and a 446-character saved-segment expansion
take to be refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from bot.app.config import load_config
from bot.core.template_budget import FILE_BUDGET, USER_BUDGET, BudgetedEnvironment, render_metered
from bot.core.templating import Renderer, TemplateRenderError

TEXT = (
    "{{ customer.name }}，早上好！☀️ 本周{{ customer.city or '您所在城市' }}门店上新："
    "{% for item in items %}{{ loop.index }}. {{ item }}{{ '；' if not loop.last }}{% endfor %}。"
    "凭券 {{ coupon.code }} 满 100 减 {{ coupon.off }}，有效期至 {{ coupon.expires }}。"
    "早餐时段 7:00–9:00 到店再享第二杯半价，会员{{ customer.tier }}额外积分翻倍。"
    "回复 TD 退订。祝您有美好的一天！"
) * 2
VALUES = {
    "customer": {"name": "王小明", "city": "杭州", "tier": "金卡"},
    "coupon": {"code": "ABCD-EFGH-JKLM", "off": 20, "expires": "2026-12-31"},
    "items": ["豆浆", "油条", "小笼包", "蛋饼"],
}
NESTED = "{% for i in range(100000) %}{% for j in range(1500) %}x{% endfor %}{% endfor %}"


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=20_000)
    n = parser.parse_args().renders

    plain = SandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(TEXT)
    budgeted = BudgetedEnvironment(undefined=jinja2.StrictUndefined).from_string(TEXT)
    assert plain.render(**VALUES) == budgeted.render(**VALUES)

    def fast(template):
        base = {**template.globals, **VALUES}
        return lambda: render_metered(
            lambda: template.root_render_func(template.new_context(base, shared=True)),
            FILE_BUDGET,
        )

    def fast_plain(template):
        base = {**template.globals, **VALUES}
        concat = template.environment.concat
        return lambda: concat(template.root_render_func(template.new_context(base, shared=True)))

    print(f"campaign text: {len(plain.render(**VALUES))} characters, {n:,} renders per case")
    for label, fn in (
        ("plain sandbox, Template.render", lambda: plain.render(**VALUES)),
        ("budgeted, Template.render", lambda: budgeted.render(**VALUES)),
        ("plain sandbox, fast path", fast_plain(plain)),
        ("budgeted, fast path (campaigns)", fast(budgeted)),
    ):
        print(f"  {label:34} {rate(fn, n):>10,.0f} renders/s")

    renderer = Renderer()
    start = time.perf_counter()
    try:
        renderer.render_string(NESTED, name="x")
    except TemplateRenderError as exc:
        print(f"nested-loop attack refused in {(time.perf_counter() - start) * 1000:.1f} ms "
              f"({exc.problem}; budget {USER_BUDGET})")  # fmt: skip

    from sqlalchemy import select

    from storage.db import Database
    from storage.segments import SavedSegment, SegmentBudgetError, count_segment

    config = load_config(None, environ={})
    now = datetime(2026, 6, 1, tzinfo=UTC)
    path = Path("var/bench/render_budget.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    db = Database(f"sqlite:///{path}")
    db.migrate()
    refs = lambda name, k: " or ".join([f"segment:{name}"] * k)  # noqa: E731
    with db.transaction() as s:
        s.add(SavedSegment(name="n0", expression="tag:a or tag:b", created_at=now, updated_at=now))
        for level in range(1, 4):
            s.add(SavedSegment(name=f"n{level}", expression=refs(f"n{level - 1}", 4),
                               created_at=now, updated_at=now))  # fmt: skip
    attack = f"({refs('n3', 32)})"
    with db.sessions() as s:
        assert s.scalar(select(SavedSegment.id).limit(1))
        start = time.perf_counter()
        try:
            count_segment(s, attack, config=config, now=now)
        except SegmentBudgetError as exc:
            print(f"{len(attack)}-character segment expansion refused in "
                  f"{(time.perf_counter() - start) * 1000:.1f} ms ({exc.message})")  # fmt: skip
    db.close()
    path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
