"""Imports in the console: upload a CSV or JSON file of customers, orders or tags; a worker
process runs it as a batch job (bot/customers/imports.py) and this page shows its status,
progress and rejected rows.

The upload is checked here (kind, format, size, UTF-8) and queued with the form's one-time
token as its key, so a form sent twice queues one import. Reading and applying the rows
happens in the worker, never in the web process.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bot.core.i18n import t
from bot.customers.imports import (
    KIND,
    MAX_FILE_BYTES,
    WHAT,
    ImportRefused,
    check_upload,
    enqueue_import,
    failure_text,
)
from bot.customers.intake import RowError
from bot.jobs.states import OPEN
from bot.web.console.common import (
    Refused,
    back,
    endpoint,
    int_param,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)
from bot.web.inbox.auth import csrf_ok
from storage.jobs import BatchJob

__all__ = ["import_job", "import_page", "upload"]

HERE = "/console/imports"
#: Imports listed on the page.
RECENT = 20
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _summary(job: BatchJob, locale: str) -> dict:
    """What the page shows of a job (never its payload: the file stays in the database);
    rejected rows say why in the reader's ``locale``."""
    payload = job.payload or {}
    result = job.result or {}
    return {
        "id": job.id,
        "what": payload.get("what", ""),
        "file": payload.get("file", ""),
        "status": job.status,
        "open": job.status in OPEN,
        "progress": job.progress or {},
        "attempts": job.attempts,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "counts": result.get("counts", {}),
        "rejected": result.get("rejected"),
        "errors": [
            {"where": e.where, "key": e.key, "reason": e.text(locale)}
            for e in map(RowError.load, result.get("errors", []))
        ],
        "error": failure_text(result, locale) or job.error,
    }


@endpoint
async def import_page(request: Request) -> Response:
    """The upload form and the recent imports."""
    user = await manager_of(request)
    runtime = runtime_of(request)
    locale = locale_of(request, user)

    def load() -> list[dict]:
        with runtime.db.sessions() as session:
            jobs = session.scalars(
                select(BatchJob)
                .where(BatchJob.kind == KIND)
                .order_by(BatchJob.id.desc())
                .limit(RECENT)
            ).all()
            return [_summary(j, locale) for j in jobs]

    jobs = await run(request, load)
    return page(
        request,
        "console/imports.html",
        user,
        section="imports",
        jobs=jobs,
        kinds=WHAT,
        token=uuid.uuid4().hex,
        limit_kb=MAX_FILE_BYTES // 1024,
        limit_bytes=MAX_FILE_BYTES,
        refresh=any(j["open"] for j in jobs),
    )


@endpoint
async def upload(request: Request) -> Response:
    """Check the uploaded file and queue its import; then show the job."""
    user = await manager_of(request)
    locale = locale_of(request, user)
    try:
        form = await request.form(max_files=1, max_fields=8)
    except MultiPartException:
        return HTMLResponse(t("console.imports.error.bad_form", locale), status_code=400)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(request, fields.get("csrf")):
        raise Refused(HTMLResponse(t("console.csrf_wrong", locale), status_code=403))
    token = fields.get("token", "")
    if not _TOKEN.match(token):
        return back(request, HERE, t("console.imports.error.token", locale), error=True)
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return back(request, HERE, t("console.imports.error.no_file", locale), error=True)
    data = await file.read(MAX_FILE_BYTES + 1)
    runtime = runtime_of(request)
    try:
        checked = check_upload(fields.get("what", ""), file.filename, data)
    except ImportRefused as refused:
        text = t(f"console.imports.error.{refused.key}", locale, **refused.values)
        return back(request, HERE, text, error=True)

    def queue() -> int:
        with runtime.db.transaction() as session:
            return enqueue_import(
                session,
                checked,
                token=token,
                now=runtime.clock.now(),
                created_by=f"staff:{user.username}",
            ).job_id

    job_id = await run(request, queue)
    runtime.jobs.wake()  # a process that runs jobs itself (role all) starts at once
    return back(request, f"{HERE}/{job_id}", t("console.imports.queued", locale, file=checked.name))


@endpoint
async def import_job(request: Request) -> Response:
    """One import: status, progress, counts and the first rejected rows."""
    user = await manager_of(request)
    job_id = int_param(request, "job_id")
    runtime = runtime_of(request)
    locale = locale_of(request, user)

    def load() -> dict | None:
        with runtime.db.sessions() as session:
            job = session.get(BatchJob, job_id)
            return _summary(job, locale) if job is not None and job.kind == KIND else None

    job = await run(request, load)
    if job is None:
        return page(request, "console/not_found.html", user, status=404, section="imports")
    return page(
        request, "console/import_job.html", user, section="imports", job=job, refresh=job["open"]
    )
