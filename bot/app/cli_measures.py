"""``siyu report loyalty|cohorts|aarrr|survey``: the operation's own figures.

Human-readable by default (labels in the reader's locale: ``--lang`` or ``$LANG``), JSON
with ``--json``. Periods are the brand's local dates, ``--to`` exclusive.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bot.app.config import Config
from bot.core.i18n import t

__all__ = ["COMMANDS", "KINDS", "add_arguments", "add_parsers", "cmd_measures", "cmd_survey"]

KINDS = ("loyalty", "cohorts", "aarrr", "survey")
EXIT_USAGE = 2


def add_arguments(rep: argparse.ArgumentParser) -> None:
    """The options of ``siyu report`` that these reports take."""
    rep.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="period start")
    rep.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="period end (exclusive)")
    rep.add_argument("--segment", metavar="EXPR", help="only customers in this segment")
    rep.add_argument("--months", type=int, default=12, help="cohorts: months after the first")
    rep.add_argument("--lang", default=None, help="zh-CN or en (default: from $LANG)")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """``siyu survey send NAME --segment EXPR``."""
    survey = sub.add_parser("survey", parents=[common], help="satisfaction surveys: send")
    ssub = survey.add_subparsers(dest="survey_command", required=True, metavar="ACTION")
    send = ssub.add_parser(
        "send", parents=[common], help="send a survey to a segment (opt-out, caps, quiet hours)"
    )
    send.add_argument("name")
    send.add_argument("--segment", required=True, metavar="EXPR")
    send.add_argument("--source", default="", help="what sends it (default: survey:<date>)")
    send.add_argument("--json", action="store_true", help="print JSON")
    send.add_argument("--lang", default=None, help="zh-CN or en (default: from $LANG)")


def cmd_survey(config: Config, args: argparse.Namespace) -> int:
    """``siyu survey send NAME --segment EXPR``: queue the question for the segment."""
    from bot.core.clock import SystemClock
    from bot.core.templating import Renderer
    from bot.customers.segment_language import SegmentError
    from bot.measures import surveys
    from storage.db import Database

    lang = args.lang or os.environ.get("LANG", "zh-CN")
    now = SystemClock().now()
    source = args.source or f"cli:{now.date().isoformat()}"
    if len(source) > 64 or (":" not in source and not source.isidentifier()):
        print("siyu: --source is at most 64 characters", file=sys.stderr)
        return EXIT_USAGE
    db = Database(config.database.url)
    try:
        with db.transaction() as session:
            outcomes = surveys.send_to_segment(
                session,
                config=config,
                renderer=Renderer(),
                name=args.name,
                segment=args.segment,
                source=source,
                now=now,
            )
    except (surveys.SurveyError, SegmentError) as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    if args.json:
        print(json.dumps({"survey": args.name, "source": source, "outcomes": outcomes}))
        return 0
    main = ("queued", "deferred", "duplicate")
    skipped = {k: v for k, v in outcomes.items() if k not in main}
    print(
        t(
            "measures.survey.send_result",
            lang,
            name=args.name,
            queued=outcomes.get("queued", 0),
            deferred=outcomes.get("deferred", 0),
            duplicate=outcomes.get("duplicate", 0),
            skipped=sum(skipped.values()),
            reasons=", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "-",
        )
    )
    return 0


COMMANDS = {"survey": cmd_survey}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def cmd_measures(config: Config, args: argparse.Namespace) -> int:
    """Run one of :data:`KINDS` and print it."""
    from bot.core.clock import SystemClock
    from bot.customers.segment_language import SegmentError
    from bot.measures import loyalty as figures
    from bot.measures import surveys
    from bot.measures.periods import PeriodError, parse_period
    from storage.db import Database

    lang = args.lang or os.environ.get("LANG", "zh-CN")
    now = SystemClock().now()
    default_days = {"cohorts": 365, "survey": 90}.get(args.kind, 30)
    try:
        period = parse_period(
            args.date_from,
            args.date_to,
            zone=config.general.timezone,
            now=now,
            default_days=default_days,
        )
    except PeriodError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            report: Any
            kw = {"config": config, "now": now, "segment": args.segment}
            if args.kind == "loyalty":
                report = figures.loyalty(session, period, **kw)
                text = _loyalty_text(report, lang)
            elif args.kind == "cohorts":
                report = figures.cohorts(session, period, months=args.months, **kw)
                text = _cohorts_text(report, lang)
            elif args.kind == "aarrr":
                report = figures.aarrr(session, period, **kw)
                text = _aarrr_text(report, lang)
            else:
                if not args.name:
                    print(t("measures.cli.survey_name", lang), file=sys.stderr)
                    return EXIT_USAGE
                report = surveys.results(session, args.name, period, **kw)
                text = surveys.format_results(report, lang)
    except SegmentError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
    else:
        print(text)
    return 0


def _head(report, lang: str, title_key: str) -> list[str]:
    p = report.period
    lines = [t(title_key, lang, start=p["from"], end=p["to"], zone=p["zone"])]
    if report.segment:
        lines.append(t("measures.cli.segment", lang, segment=report.segment))
    return lines


def _loyalty_text(r, lang: str) -> str:
    lines = _head(r, lang, "measures.loyalty.title")
    lines += [
        t(
            "measures.loyalty.repeat",
            lang,
            rate=_pct(r.repeat_rate),
            n=r.repeat_buyers,
            of=r.buyers,
        ),
        t(
            "measures.loyalty.retention",
            lang,
            rate=_pct(r.retention_rate),
            n=r.retained_buyers,
            of=r.previous_buyers,
        ),
        t(
            "measures.loyalty.referral",
            lang,
            rate=_pct(r.referral_rate),
            n=r.referred_customers,
            of=r.new_customers,
        ),
        t("measures.loyalty.churn", lang, rate=_pct(r.churn_rate)),
    ]
    for stage in ("new", "activated", "retained", "dormant", "churned"):
        if stage in r.stages:
            lines.append(f"  {t('measures.stage.' + stage, lang)}: {r.stages[stage]}")
    lines.append(
        t("measures.loyalty.changes", lang, dormant=r.became_dormant, churned=r.became_churned)
    )
    return "\n".join(lines)


def _cohorts_text(r, lang: str) -> str:
    lines = _head(r, lang, "measures.cohorts.title")
    header = [t("measures.cohorts.cohort", lang), t("measures.cohorts.size", lang)]
    header += [f"+{k}" for k in range(r.months + 1)]
    lines.append("  ".join(f"{h:>7}" for h in header))
    for row in r.cohorts:
        cells = [row["cohort"], str(row["size"])] + [_pct(v) for v in row["retention"]]
        lines.append("  ".join(f"{c:>7}" for c in cells))
    if not r.cohorts:
        lines.append(t("measures.cli.empty", lang))
    return "\n".join(lines)


def _aarrr_text(r, lang: str) -> str:
    lines = _head(r, lang, "measures.aarrr.title")
    for step in r.steps:
        name = t("measures.aarrr." + step["step"], lang)
        share = "" if step["of_previous"] is None else f"  ({_pct(step['of_previous'])})"
        lines.append(f"  {name:<12} {step['customers']:>8}{share}")
    if r.biggest_loss:
        lines.append(
            t("measures.aarrr.biggest_loss", lang, step=t("measures.aarrr." + r.biggest_loss, lang))
        )
    return "\n".join(lines)
