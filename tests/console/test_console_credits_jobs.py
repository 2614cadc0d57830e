"""Credits and jobs in the console, without a browser: a customer's Credits and Jobs
pages (and the Cancel button), the playground's job option, an operator's grant."""

from __future__ import annotations

import re
import uuid

import asyncpg

from tests.console.test_console_pages import Users, created_key, dev_app, new_email, signed_up
from tests.support.config import ADMIN_TOKEN
from tests.support.credits import CREDITS
from tests.support.gateway import Gateway, MakeGateway
from tests.support.jobs import JOBS, submit, wait_for_job

_TOKEN = re.compile(r'name="idempotency" value="([0-9a-f]{32})"')


def no_inline_code(page: str) -> bool:
    return "<script>" not in page and "style=" not in page and "<style" not in page


def ledger_rows(page: str) -> int:
    return page.count('<td data-label="Kind">')


async def grant_by_api(gateway: Gateway, user_id: uuid.UUID, amount: int, reason: str) -> None:
    response = await gateway.client.post(
        f"/admin/users/{user_id}/credits",
        json={"amount": amount, "reason": reason},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status == 200, await response.text()


async def test_the_credits_page_shows_balances_and_pages_the_ledger(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    gateway = await dev_app(make_app)
    customer, email = await signed_up(console_user, gateway)
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)
    status, page = await customer.get("/console/credits")
    assert status == 200
    assert "No ledger entries yet." in page
    assert no_inline_code(page)
    assert 'href="/console/credits" aria-current="page"' in page

    for number in range(26):
        await grant_by_api(gateway, user_id, 10, f"gift {number}")
    await gateway.flush()  # the ledger is written behind
    status, page = await customer.get("/console/credits")
    assert status == 200
    assert 'data-credits-total="260"' in page
    assert "<dt>Purchased</dt><dd>260</dd>" in page
    assert ledger_rows(page) == 25
    assert "gift 25" in page  # newest first
    assert "gift 0<" not in page
    older = re.search(r'href="(/console/credits\?before=\d+)">Older entries', page)
    assert older is not None
    status, page = await customer.get(older.group(1))
    assert status == 200
    assert ledger_rows(page) == 1
    assert "gift 0<" in page
    assert "Older entries" not in page
    # The usage page says what is left, too.
    status, page = await customer.get("/console/usage")
    assert "Credits left: <strong>260</strong>" in page


async def test_the_credits_page_shows_the_monthly_allowance_spent(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    gateway = await dev_app(make_app, CREDITS)
    customer, email = await signed_up(console_user, gateway)
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)
    response = await gateway.client.patch(
        f"/admin/users/{user_id}",
        json={"plan": "metered"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status == 200, await response.text()
    key = await created_key(customer)
    assert (await gateway.generate(key)).status == 200
    await gateway.flush()
    status, page = await customer.get("/console/credits")
    assert status == 200
    assert "<dt>Monthly allowance left</dt><dd>9 of 10</dd>" in page
    assert 'data-credits-total="9"' in page
    assert '<td data-label="Kind">charge</td>' in page
    _, page = await customer.get("/console/usage")
    assert "Credits left: <strong>9</strong>" in page


async def test_an_operator_grants_credits_once_per_form(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    operator_email = new_email()
    gateway = await dev_app(make_app, {"admin": {"console_emails": [operator_email]}})
    customer, email = await signed_up(console_user, gateway)
    operator, _ = await signed_up(console_user, gateway, operator_email)
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)
    page_path = f"/console/admin/users/{user_id}"
    action = f"{page_path}/credits"

    status, page = await operator.get(page_path)
    assert status == 200
    assert '<label for="f-amount">' in page
    assert '<label for="f-reason">Reason</label>' in page
    assert "Grant credits</button>" in page
    assert no_inline_code(page)
    token = _TOKEN.search(page)
    assert token is not None
    form = {"idempotency": token.group(1), "amount": "300", "reason": "support ticket 7"}
    first = await operator.submit(page_path, action, form)
    assert (first.status, first.headers["Location"]) == (303, f"{page_path}?done=credits")
    again = await operator.submit(page_path, action, form)  # the same form, sent again
    assert again.status == 303
    await gateway.flush()
    status, page = await customer.get("/console/credits")
    assert "<dt>Purchased</dt><dd>300</dd>" in page
    assert ledger_rows(page) == 1
    assert "support ticket 7" in page
    audit = await db.fetch(
        "SELECT actor, details FROM admin_audit_log"
        " WHERE action = 'change_credits' AND target_id = $1",
        user_id,
    )
    assert [row["actor"] for row in audit] == [f"console:{operator_email}"]

    # A fresh form takes some away; more than there is, zero, or no reason: a 400.
    _, page = await operator.get(page_path)
    assert "<dt>Purchased</dt><dd>300</dd>" in page
    for amount, reason, said in (
        ("-100", "refund", None),
        ("-1000", "too much", "purchased credits"),
        ("0", "nothing", "must be a whole number from"),
        ("ten", "words", "must be a whole number from"),
        ("5", "", "must be 1 to 500 characters"),
        ("5", "a\x00b", "must be 1 to 500 characters"),
    ):
        fields = {"idempotency": uuid.uuid4().hex, "amount": amount, "reason": reason}
        response = await operator.submit(page_path, action, fields)
        if said is None:
            assert response.status == 303
        else:
            assert response.status == 400, (amount, reason)
            assert said in await response.text()
    stale = await operator.submit(page_path, action, {"amount": "5", "reason": "r"})
    assert stale.status == 400
    _, page = await operator.get(page_path)
    assert "<dt>Purchased</dt><dd>200</dd>" in page
    # Customers cannot grant themselves anything.
    mine = await customer.submit("/console/credits", action, form)
    assert mine.status == 403


async def test_the_jobs_page_lists_jobs_and_cancels_a_queued_one(
    make_app: MakeGateway, console_user: Users, db: asyncpg.Connection
) -> None:
    gateway = await dev_app(make_app, {"jobs": {"work": False}})  # nobody works the queue
    customer, _ = await signed_up(console_user, gateway)
    status, page = await customer.get("/console/jobs")
    assert status == 200
    assert "You have no jobs yet." in page
    key = await created_key(customer)
    first = await (await submit(gateway.client, key, n=1)).json()
    second = await (await submit(gateway.client, key, n=2)).json()

    status, page = await customer.get("/console/jobs")
    assert status == 200
    assert page.index(second["id"]) < page.index(first["id"])  # newest first
    assert page.count("Cancel</button>") == 2
    assert no_inline_code(page)
    assert '<td data-label="Status">queued</td>' in page
    assert '<td data-label="Images">2</td>' in page

    canceled = await customer.submit("/console/jobs", f"/console/jobs/{first['id']}/cancel")
    assert (canceled.status, canceled.headers["Location"]) == (303, "/console/jobs?done=canceled")
    response = await gateway.client.get(
        f"{JOBS}/{first['id']}", headers={"Authorization": f"Bearer {key}"}
    )
    assert (await response.json())["status"] == "canceled"
    status, page = await customer.get("/console/jobs?done=canceled")
    assert "The job was canceled" in page
    assert page.count("Cancel</button>") == 1

    # Another user's job, or none: not found, and nothing changes.
    other, _ = await signed_up(console_user, gateway)
    theirs = await other.submit("/console/jobs", f"/console/jobs/{second['id']}/cancel")
    assert theirs.status == 404
    assert await db.fetchval("SELECT status FROM image_jobs WHERE id = $1", second["id"]) == (
        "queued"
    )
    status, page = await customer.get("/console/jobs?after=job_nothing")
    assert status == 200
    assert "There is no such job" in page
    assert second["id"] in page


async def test_the_jobs_page_shows_finished_jobs(
    make_app: MakeGateway, console_user: Users
) -> None:
    gateway = await dev_app(make_app)
    customer, _ = await signed_up(console_user, gateway)
    key = await created_key(customer)
    job = await (await submit(gateway.client, key, n=1)).json()
    done = await wait_for_job(gateway.client, key, job["id"])
    assert done["status"] == "succeeded"
    status, page = await customer.get("/console/jobs")
    assert status == 200
    assert '<td data-label="Status">succeeded</td>' in page
    assert "Cancel</button>" not in page
    assert " UTC</td>" in page


async def test_the_playground_offers_to_run_a_job(
    make_app: MakeGateway, console_user: Users
) -> None:
    gateway = await dev_app(make_app)
    customer, _ = await signed_up(console_user, gateway)
    status, page = await customer.get("/console/playground")
    assert status == 200
    assert '<input id="p-job" name="job" type="checkbox">' in page
    assert '<label for="p-job">Run as a job</label>' in page
    script = await gateway.client.get("/console/static/console.js")
    assert '"respond-async"' in await script.text()
