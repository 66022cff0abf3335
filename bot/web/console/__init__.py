"""The manager console (``/console``): dashboard, measures, campaigns, segments, customers,
tags, imports, coupons, flows, groups and staff accounts, for inbox accounts with the manager role.

It reuses the inbox's login and session (bot/web/inbox.py); staff accounts get 403 and
anonymous visitors the login page. One module per page; every action calls the function
the chat command and the CLI call. Charts are Apache ECharts, shipped in
``bot/web/static/vendor/echarts`` (no CDN).
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bot.web.console import (
    campaigns,
    coupons,
    customers,
    dashboard,
    flows,
    group_forms,
    groups,
    imports,
    measures,
    preferences,
    scenarios,
    segments,
    staff,
    tags,
)

__all__ = ["STATIC_DIR", "console_routes"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def console_routes() -> list[BaseRoute]:
    """The console's pages, form actions, JSON helpers and its static files."""
    get, post = ["GET"], ["POST"]
    return [
        Route("/console", dashboard.dashboard, methods=get),
        Route("/console/locale", preferences.set_locale, methods=post),
        Route("/console/campaigns", campaigns.campaign_list, methods=get),
        Route("/console/campaigns/new", campaigns.new_form, methods=get),
        Route("/console/campaigns/new", campaigns.create, methods=post),
        Route("/console/campaigns/{campaign_id}", campaigns.detail, methods=get),
        Route("/console/campaigns/{campaign_id}/data", campaigns.detail_data, methods=get),
        Route("/console/campaigns/{campaign_id}/edit", campaigns.edit_form, methods=get),
        Route("/console/campaigns/{campaign_id}/edit", campaigns.update, methods=post),
        Route("/console/campaigns/{campaign_id}/{action}", campaigns.act, methods=post),
        Route("/console/scenarios/{name}", scenarios.scenario_page, methods=get),
        Route("/console/api/segment-count", segments.live_count, methods=post),
        Route("/console/api/campaign-preview", campaigns.live_preview, methods=post),
        Route("/console/segments", segments.segment_list, methods=get),
        Route("/console/segments", segments.save, methods=post),
        Route("/console/segments/delete", segments.delete, methods=post),
        Route("/console/segments/{name}/export.csv", segments.export, methods=get),
        Route("/console/customers", customers.search, methods=get),
        Route("/console/customers/{customer_id}", customers.profile, methods=get),
        Route("/console/customers/{customer_id}/{action}", customers.act, methods=post),
        Route("/console/tags", tags.tag_page, methods=get),
        Route("/console/tags/rules", tags.add_rule_form, methods=post),
        Route("/console/tags/rules/{rule_id}/edit", tags.edit_rule_form, methods=post),
        Route("/console/tags/rules/{rule_id}/delete", tags.delete_rule, methods=post),
        Route("/console/imports", imports.import_page, methods=get),
        Route("/console/imports", imports.upload, methods=post),
        Route("/console/imports/{job_id}", imports.import_job, methods=get),
        Route("/console/coupons", coupons.coupon_page, methods=get),
        Route("/console/coupons/redeem", coupons.redeem, methods=post),
        Route("/console/flows", flows.flow_page, methods=get),
        Route("/console/measures", measures.measures_page, methods=get),
        Route("/console/groups", groups.groups_page, methods=get),
        Route("/console/groups/sop", group_forms.sop_save, methods=post),
        Route("/console/groups/faq", group_forms.faq_save, methods=post),
        Route("/console/groups/{group_id}/moderation", group_forms.moderation_save, methods=post),
        Route("/console/groups/sop/{name}/{action}", groups.sop_action, methods=post),
        Route("/console/groups/faq/{entry_id}/delete", groups.faq_delete, methods=post),
        Route("/console/staff", staff.staff_page, methods=get),
        Route("/console/staff", staff.add, methods=post),
        Route("/console/staff/{username}/{action}", staff.act, methods=post),
        Mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static"),
    ]
