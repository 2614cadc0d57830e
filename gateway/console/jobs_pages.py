"""A customer's jobs in the console: the list, newest first, and the Cancel button.

The list is :func:`gateway.jobs.store.list_jobs`, as ``GET /v1/images/jobs`` reads it; a
cancel is :func:`gateway.http.jobs_api.cancel_users_job`, as ``POST
/v1/images/jobs/{id}/cancel`` makes it (the reservation given back, every process told).
"""

from __future__ import annotations

from aiohttp import web

from gateway.console.html import esc, html_page, post_button, when
from gateway.console.session import csrf_token
from gateway.console.views import nav_of, notice_of, require_session, see_other
from gateway.db.pool import connection
from gateway.http.jobs_api import cancel_users_job
from gateway.jobs import store
from gateway.jobs.store import JobRow
from gateway.services import SERVICES, Services

__all__ = ["JOBS_PAGE", "cancel_job", "jobs_page"]

JOBS_PAGE = 25
_CANCELABLE = frozenset({"queued", "running"})


def _row(job: JobRow, csrf: str) -> str:
    error = ""
    if job.status == "failed":
        error = esc(f"{job.error_code or 'job_failed'}: {job.error_message or ''}".rstrip(": "))
    action = ""
    if job.status in _CANCELABLE:
        action = post_button(f"/console/jobs/{job.id}/cancel", "Cancel", csrf, style="danger")
    return (
        f'<tr data-job-id="{esc(job.id)}"><td data-label="Job"><code>{esc(job.id)}</code></td>'
        f'<td data-label="Status">{esc(job.status)}</td>'
        f'<td data-label="Model">{esc(job.model)}</td>'
        f'<td data-label="Images">{job.reserved}</td>'
        f'<td data-label="Created">{when(job.created_at)}</td>'
        f'<td data-label="Completed">{when(job.completed_at)}</td>'
        f'<td data-label="Error">{error}</td>'
        f'<td data-label="Actions" class="actions">{action}</td></tr>'
    )


async def jobs_page(request: web.Request) -> web.StreamResponse:
    """A page of the user's jobs, newest first (``?after=<job id>`` for older ones)."""
    session = await require_session(request, customer=True)
    assert session.user is not None
    services: Services = request.config_dict[SERVICES]
    after = request.query.get("after") or None
    error = ""
    async with connection(services.pool) as conn:
        rows = await store.list_jobs(
            conn, session.user["id"], status=None, after=after, limit=JOBS_PAGE + 1
        )
        if rows is None:  # not one of the user's jobs: the first page
            error, after = "There is no such job: here are the newest.", None
            rows = await store.list_jobs(
                conn, session.user["id"], status=None, after=None, limit=JOBS_PAGE + 1
            )
    assert rows is not None
    csrf = csrf_token(request)
    pager = []
    if after is not None:
        pager.append('<a href="/console/jobs">Newest jobs</a>')
    if len(rows) > JOBS_PAGE:
        pager.append(f'<a href="/console/jobs?after={esc(rows[JOBS_PAGE - 1].id)}">Older jobs</a>')
    if rows:
        body = (
            '<div class="scroll"><table class="stack"><caption>Your jobs, newest first</caption>'
            '<thead><tr><th scope="col">Job</th><th scope="col">Status</th>'
            '<th scope="col">Model</th><th scope="col">Images</th><th scope="col">Created</th>'
            '<th scope="col">Completed</th><th scope="col">Error</th>'
            '<th scope="col">Actions</th></tr></thead>'
            f"<tbody>{''.join(_row(job, csrf) for job in rows[:JOBS_PAGE])}</tbody></table></div>"
        )
    else:
        body = (
            "<p>You have no jobs yet. Run one from the "
            '<a href="/console/playground">playground</a> or with'
            " <code>POST /v1/images/jobs</code>.</p>"
        )
    if pager:
        body += f'<nav class="pager" aria-label="Job pages">{"".join(pager)}</nav>'
    return html_page(
        "Jobs",
        body,
        nav=nav_of(request, session),
        path="/console/jobs",
        notice=notice_of(request),
        error=error,
    )


async def cancel_job(request: web.Request) -> web.StreamResponse:
    """Cancel one of the user's jobs (one that ended already is left as it is)."""
    session = await require_session(request, customer=True)
    assert session.user is not None
    services: Services = request.config_dict[SERVICES]
    await cancel_users_job(services, request.match_info["id"], session.user["id"])
    return see_other("/console/jobs?done=canceled")
