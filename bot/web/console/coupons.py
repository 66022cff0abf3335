"""Coupons in the console: each definition's issued / redeemed / expired codes,
redemptions over time, and the redeem form (``handoff.redeem_coupon``, as the inbox does)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bot.conversations import handoff
from bot.core.amounts import AmountError, parse_amount
from bot.core.i18n import t
from bot.marketing.coupons import format_code
from bot.web.console import charts, queries
from bot.web.console.common import (
    back,
    endpoint,
    form_of,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)
from bot.web.console.dashboard import period_of

__all__ = ["coupon_page", "redeem"]

HERE = "/console/coupons"


@endpoint
async def coupon_page(request: Request) -> Response:
    user = await manager_of(request)
    runtime = runtime_of(request)
    period = period_of(request)

    def load() -> dict:
        with runtime.db.sessions() as session:
            return {
                "rows": queries.coupon_stats(session, runtime.clock.now()),
                "by_day": queries.redemptions_by_day(session, period),
            }

    data = await run(request, load)
    return page(
        request,
        "console/coupons.html",
        user,
        section="coupons",
        rows=data["rows"],
        period=period,
        periods=queries.PERIODS,
        charts={"chart-redemptions": charts.lines(period.labels(), data["by_day"])},
    )


@endpoint
async def redeem(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    code = data.get("code", "").strip()
    if not code or len(code) > 64:
        return back(request, HERE, t("console.coupon.type_code", locale), error=True)
    raw_amount = data.get("amount", "")
    try:
        amount = parse_amount(raw_amount) if raw_amount.strip() else None
    except AmountError as exc:
        problem = t("console.coupon.bad_amount", locale) + " " + exc.message(locale)
        return back(request, HERE, problem, error=True)

    def run_redeem():
        with runtime.db.transaction() as session:
            return handoff.redeem_coupon(
                session, user, code, now=runtime.clock.now(), config=runtime.config,
                amount_cents=amount,
            )  # fmt: skip

    result = await run(request, run_redeem)
    if not result.ok:
        return back(
            request,
            HERE,
            t(f"console.coupon.refused.{result.reason}", locale,
              min_spend=f"{(result.min_spend_cents or 0) / 100:.2f}"),
            error=True,
        )  # fmt: skip
    return back(
        request,
        HERE,
        t("console.coupon.redeemed", locale, code=format_code(result.code), title=result.title,
          off=f"{(result.discount_cents or 0) / 100:.2f}"),
    )  # fmt: skip
