"""``siyu campaign ...``, ``siyu report campaign NAME`` and ``siyu report scenario NAME``.

``siyu campaign new NAME segment=... template=...`` takes the same definition as the chat
command; ``preview``, ``pilot``, ``launch``, ``pause``, ``evaluate`` and ``stats`` act on a
campaign by name. Pilot and launch run the push here, in this process (chunked, so a
million-customer audience keeps memory flat), and print what was queued.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from bot.app import cli_measures
from bot.app.config import Config

__all__ = ["COMMANDS", "add_parsers"]

EXIT_USAGE = 2
ACTIONS = ("new", "list", "preview", "pilot", "launch", "pause", "evaluate", "stats")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    camp = sub.add_parser("campaign", parents=[common], help="campaigns: new, preview, pilot...")
    camp.add_argument("action", choices=ACTIONS)
    camp.add_argument("name", nargs="?", default="", help="the campaign (not for list)")
    camp.add_argument("definition", nargs=argparse.REMAINDER, help="for new: key=value ...")
    rep = sub.add_parser(
        "report",
        parents=[common],
        help="reports: campaign|scenario|survey NAME, loyalty, cohorts, aarrr",
    )
    rep.add_argument("kind", choices=("campaign", "scenario", *cli_measures.KINDS))
    rep.add_argument("name", nargs="?", help="the campaign, scenario or survey")
    rep.add_argument("--json", action="store_true", help="print JSON")
    cli_measures.add_arguments(rep)


def _services(config: Config):
    from bot.app.services import Services
    from bot.core.clock import SystemClock
    from bot.core.templating import Renderer
    from bot.marketing.coupons import sync_definitions
    from storage.db import Database

    db = Database(config.database.url)
    services = Services(db, config, Renderer(), SystemClock())
    with db.transaction() as session:
        sync_definitions(session, config.coupons, services.clock.now())
    return services


def cmd_campaign(config: Config, args: argparse.Namespace) -> int:
    from bot.app.cli_output import Progress, cli_locale, emit_json, say
    from bot.core.templating import TemplateRenderError
    from bot.customers.segment_language import SegmentError
    from bot.marketing.campaigns import manage
    from bot.marketing.campaigns.push import ChunkResult
    from bot.marketing.campaigns.spec import SpecError, parse_spec
    from storage.campaigns import Campaign

    as_json = getattr(args, "json", False)
    if args.action == "list":
        return _list(config, as_json)
    if not args.name:
        print(f"siyu: campaign {args.action} needs a NAME", file=sys.stderr)
        return EXIT_USAGE
    services = _services(config)
    now = services.clock.now()
    try:
        if args.action == "new":
            text = " ".join([shlex.quote(args.name), *map(shlex.quote, args.definition)])
            spec = parse_spec(text, config)
            with services.db.transaction() as session:
                c = manage.create_campaign(
                    session,
                    spec,
                    config=config,
                    renderer=services.renderer,
                    now=now,
                    created_by="cli",
                )
                if as_json:
                    emit_json({"name": c.name, "id": c.id, "status": c.status})
                else:
                    print(f"campaign {c.name} created (#{c.id}, draft)")
            return 0
        with services.db.sessions() as session:
            campaign = manage.find_campaign(session, args.name)
            if campaign is None:
                print("siyu: " + say("cli.campaign.no_such", name=args.name), file=sys.stderr)
                return 1
            if args.action in ("pilot", "launch"):
                manage.require_audience(session, campaign, config=config, now=now)
            if args.action == "preview":
                p = manage.preview(
                    session, campaign, config=config, renderer=services.renderer, now=now
                )
                if as_json:
                    emit_json(
                        {
                            "audience": p.audience,
                            "reachable": p.reachable,
                            "pilot": p.pilot,
                            "holdout": p.holdout,
                            "samples": [
                                {"customer": n, "variant": v, "text": t} for n, v, t in p.samples
                            ],
                        }
                    )
                    return 0
                print(
                    f"audience {p.audience}, reachable {p.reachable}, "
                    f"pilot ~{p.pilot}, holdout ~{p.holdout}"
                )
                for name, variant, text in p.samples:
                    print(f"--- {name} ({variant})\n{text}")
                return 0
        if args.action == "stats":
            return cmd_report(
                config, argparse.Namespace(kind="campaign", name=args.name, json=as_json)
            )
        result: object
        if args.action in ("pilot", "launch"):
            result = _prepare_now(services, campaign.id, args.action, Progress)
        else:
            action = {"pause": manage.pause, "evaluate": manage.evaluate}[args.action]
            result = action(services, campaign.id)
        shown = result.as_dict() if isinstance(result, ChunkResult) else result
        if isinstance(result, Campaign):
            shown = {
                "status": result.status,
                "reason": result.stop_reason or (result.verdict or {}).get("reason"),
            }
        print(json.dumps(shown, ensure_ascii=False, default=str))
        return 0
    except manage.CampaignError as exc:
        print(f"siyu: {exc.text(cli_locale())}", file=sys.stderr)
        return EXIT_USAGE
    except (SpecError, SegmentError, TemplateRenderError) as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        services.db.close()


def _prepare_now(services, campaign_id: int, action: str, progress_bar) -> dict:
    """Pilot or launch from the CLI: the same request the chat command and the console
    make (it queues the preparation job), then this process runs that job itself as a
    worker would, with a progress bar; if a worker claimed it first, wait for its result."""
    import time as _time

    from bot.app.cli_output import say
    from bot.app.jobs import job_runners
    from bot.jobs.states import FINAL
    from bot.jobs.worker import JobWorker
    from bot.marketing.campaigns import manage
    from storage.campaigns import Campaign
    from storage.jobs import BatchJob

    config = services.config
    with services.db.transaction() as session:
        campaign = session.get_one(Campaign, campaign_id)
        job = manage.request(
            session, campaign, action, config=config, now=services.clock.now(), created_by="cli"
        )
    worker = JobWorker(services, job_runners(), config.jobs)
    with progress_bar(say("cli.progress.campaign")) as bar:

        def show(progress: dict) -> None:
            bar.total = progress.get("total") or bar.total
            bar.advance(int(progress.get("done", 0)) - bar.done)

        if worker.run_one(job.job_id, on_progress=show) is None:  # a worker has it
            while True:
                with services.db.sessions() as session:
                    row = session.get_one(BatchJob, job.job_id)
                if row.status in FINAL:
                    break
                show(row.progress or {})
                _time.sleep(0.5)
    with services.db.sessions() as session:
        row = session.get_one(BatchJob, job.job_id)
    if row.status != "done":
        raise manage.CampaignError(row.error or f"the preparation ended {row.status}")
    return {k: v for k, v in (row.result or {}).items() if k not in ("step", "status")}


def _list(config: Config, as_json: bool) -> int:
    """``siyu campaign list``: the newest campaigns (the same list as ``/campaign list``)."""
    from bot.app.cli_output import emit_json, say
    from bot.marketing.campaigns.manage import list_campaigns
    from storage.db import Database

    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            campaigns = list_campaigns(session)
    finally:
        db.close()
    if as_json:
        emit_json(campaigns)
        return 0
    if not campaigns:
        print(say("cli.campaign.none"))
        return 0
    print(say("cli.campaign.header"))
    for c in campaigns:
        print(f"{c['name']}\t{c['status']}\t{c['targeted']}\t{c['segment']}")
    return 0


def cmd_report(config: Config, args: argparse.Namespace) -> int:
    from bot.marketing.campaigns.funnel import format_funnel, funnel
    from bot.marketing.campaigns.manage import find_campaign
    from storage.db import Database

    if getattr(args, "kind", "campaign") in cli_measures.KINDS:
        return cli_measures.cmd_measures(config, args)
    if not getattr(args, "name", None):
        print(f"siyu: report {args.kind} needs a name", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "kind", "campaign") == "scenario":
        return _report_scenario(config, args)
    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            campaign = find_campaign(session, args.name)
            if campaign is None:
                print(f"siyu: no campaign named {args.name!r}", file=sys.stderr)
                return 1
            rows = funnel(session, campaign)
            if args.json:
                print(
                    json.dumps(
                        {
                            "campaign": campaign.name,
                            "status": campaign.status,
                            "verdict": campaign.verdict,
                            "funnel": [r.as_dict() for r in rows],
                        },
                        ensure_ascii=False,
                        default=str,
                    )
                )
            else:
                print(format_funnel(campaign, rows))
    finally:
        db.close()
    return 0


def _report_scenario(config: Config, args: argparse.Namespace) -> int:
    """``siyu report scenario NAME [--json]``: the scenario's funnel per local date."""
    from bot.marketing.campaigns.funnel import format_scenario_funnel, scenario_funnel
    from bot.marketing.scenarios import find_scenario, scenario_names
    from storage.db import Database

    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            scenario = find_scenario(session, args.name)
            if scenario is None:
                known = ", ".join(scenario_names(session))
                print(
                    f"siyu: no scenario named {args.name!r} (known: {known or 'none'})",
                    file=sys.stderr,
                )
                return 1
            rows = scenario_funnel(session, scenario)
            if args.json:
                print(
                    json.dumps(
                        {
                            "scenario": scenario.name,
                            "enabled": scenario.enabled,
                            "funnel": [r.as_dict() for r in rows],
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                print(format_scenario_funnel(scenario, rows))
    finally:
        db.close()
    return 0


COMMANDS = {"campaign": cmd_campaign, "report": cmd_report}
