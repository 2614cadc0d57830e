"""The web console in a real browser (Chromium, driven by Playwright) against a real
``gateway serve`` process: what a customer and an operator do, CSRF, the CSP.

Controls are found as a user finds them: by role and accessible name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.accounts import PASSWORD, RELAXED
from tests.support.browser import PageWatch, chromium_or_reason, screenshot
from tests.support.config import REDIS_URL, base_raw_config, merge
from tests.support.processes import free_port, running_gateway

playwright_api = pytest.importorskip("playwright.async_api")

# Slow: a gateway process, a browser; the first run may install Chromium.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OPERATOR_EMAIL = f"operator-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture(scope="module")
def chromium() -> str:
    path, reason = chromium_or_reason()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
async def chromium_browser(chromium: str) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def console_url(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_prefix: str
) -> AsyncIterator[str]:
    """A ``gateway serve`` process (not in development mode: cookies are Secure)."""
    raw = base_raw_config(database_url, REDIS_URL, redis_prefix)
    extra = merge(
        RELAXED,
        {
            "admin": {"console_emails": [OPERATOR_EMAIL]},
            "redis": {"key_prefix": f"{redis_prefix}{uuid.uuid4().hex[:10]}:"},
        },
    )
    async with running_gateway(tmp_path_factory.mktemp("console"), raw, extra) as (url, _):
        yield url


@pytest.fixture
async def console_page(chromium_browser: Any) -> AsyncIterator[Any]:
    context = await chromium_browser.new_context(viewport={"width": 360, "height": 780})
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    opened = await context.new_page()
    yield opened
    await context.close()


async def credits_of(url: str, key: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/credits", headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        assert response.status == 200, await response.text()
        balances: dict[str, Any] = await response.json()
        return balances


async def generate(url: str, key: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v1/images/generations",
            json={"prompt": "a lighthouse", "size": "256x256"},
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        return response.status, await response.json()


async def sign_up(page: Any, url: str, email: str) -> None:
    await page.goto(f"{url}/console/signup")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign up", exact=True).click()
    await page.wait_for_url(re.compile(r".*/console/keys\?done=welcome$"))


async def create_key(page: Any, url: str, name: str) -> str:
    await page.goto(f"{url}/console/keys")
    await page.get_by_label("Key name").fill(name)
    await page.get_by_role("button", name="Create key", exact=True).click()
    shown = page.get_by_label(f"Your new key ({name})")
    key: str = await shown.input_value()
    return key


async def test_a_customer_signs_up_makes_a_key_uses_it_and_leaves(
    console_page: Any, console_url: str
) -> None:
    url, page = console_url, console_page
    watch = PageWatch()
    watch.attach(page)
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"

    response = await page.goto(f"{url}/console/signup")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    await screenshot(page, "signup")
    await sign_up(page, url, email)
    assert await page.evaluate("document.cookie") == ""  # the session is HttpOnly

    await page.get_by_role("button", name="Log out", exact=True).click()
    await page.wait_for_url(re.compile(r".*/console/login\?done=logged-out$"))
    await page.get_by_role("status").filter(has_text="You are logged out.").wait_for()
    await screenshot(page, "login")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await page.wait_for_url(re.compile(r".*/console/keys$"))

    key = await create_key(page, url, "browser")
    assert await page.get_by_role("alert").filter(has_text="only time it is shown").is_visible()
    await page.get_by_role("button", name="Copy", exact=True).click()
    await page.get_by_text("Copied.").wait_for()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    await screenshot(page, "new-key")
    stored = await page.evaluate("localStorage.length + sessionStorage.length")
    assert stored == 0

    for _ in range(2):
        status, _body = await generate(url, key)
        assert status == 200

    await page.goto(f"{url}/console/playground")
    await page.get_by_label("Prompt").fill("a red square")
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("Size").select_option("256x256")
    await page.get_by_role("button", name="Generate", exact=True).click()
    image = page.get_by_role("img", name="Generated image for: a red square")
    await image.wait_for()
    await screenshot(page, "playground")
    # The same as a job: submitted with Prefer: respond-async, followed until it ends.
    await page.get_by_label("Run as a job").check()
    await page.get_by_role("button", name="Generate", exact=True).click()
    done = page.get_by_role("status").filter(has_text=re.compile(r"^Job job_\w+: done\.$"))
    await done.wait_for()
    await image.wait_for()
    await screenshot(page, "playground-job")
    await page.goto(f"{url}/console/jobs")
    status_cell = page.get_by_role("cell", name=re.compile(r"(Status: )?succeeded$"))
    assert await status_cell.is_visible()
    await screenshot(page, "jobs")

    await page.goto(f"{url}/console/usage")
    assert await page.locator("[data-today]").get_attribute("data-today") == "4"
    chart = page.get_by_role("img", name=re.compile(r"Images per day, .*: 4 in total"))
    assert await chart.is_visible()
    await screenshot(page, "usage")
    for name in ("plan", "password", "credits"):
        await page.goto(f"{url}/console/{name}")
        await screenshot(page, name)

    await page.goto(f"{url}/console/keys")
    await screenshot(page, "keys")
    await page.get_by_role("button", name="Rotate", exact=True).click()
    rotated = await page.get_by_label("Your new key (browser)").input_value()
    assert rotated != key
    status, body = await generate(url, key)
    assert status == 401, body  # no grace period was chosen
    assert (await generate(url, rotated))[0] == 200

    await page.goto(f"{url}/console/keys")
    await page.get_by_role("button", name="Revoke", exact=True).click()
    await page.get_by_role("heading", name="Revoke this key?").wait_for()
    await screenshot(page, "revoke-confirm")
    await page.get_by_role("button", name="Revoke", exact=True).click()
    await page.wait_for_url(re.compile(r".*/console/keys\?done=revoked$"))
    status, body = await generate(url, rotated)
    assert (status, body["error"]["code"]) == (401, "api_key_revoked")

    await page.get_by_role("button", name="Log out", exact=True).click()
    await page.wait_for_url(re.compile(r".*/console/login\?done=logged-out$"))
    await page.goto(f"{url}/console/keys")
    assert page.url.endswith("/console/login")
    assert watch.errors == []


async def test_an_operator_disables_a_user_and_the_key_stops(
    chromium_browser: Any, console_url: str
) -> None:
    url = console_url
    customer_context = await chromium_browser.new_context(viewport={"width": 360, "height": 780})
    operator_context = await chromium_browser.new_context()
    try:
        customer = await customer_context.new_page()
        email = f"disabled-{uuid.uuid4().hex[:10]}@example.com"
        await sign_up(customer, url, email)
        key = await create_key(customer, url, "doomed")
        assert (await generate(url, key))[0] == 200

        operator = await operator_context.new_page()
        watch = PageWatch()
        watch.attach(operator)
        await sign_up(operator, url, OPERATOR_EMAIL)
        await operator.get_by_role("link", name="Users", exact=True).click()
        await operator.get_by_label("Email contains").fill(email)
        await operator.get_by_role("button", name="Search", exact=True).click()
        await screenshot(operator, "admin-users")
        await operator.get_by_role("link", name=email, exact=True).click()
        await operator.get_by_role("heading", name=f"User {email}").wait_for()
        await screenshot(operator, "admin-user")
        await operator.get_by_label("Credits to grant (negative to take away)").fill("250")
        await operator.get_by_label("Reason", exact=True).fill("a browser's gift")
        await operator.get_by_role("button", name="Grant credits", exact=True).click()
        await operator.get_by_role("status").filter(has_text="The credits were changed.").wait_for()
        balances = await credits_of(url, key)
        assert balances["purchased"]["balance"] == 250
        shown = await operator.locator("[data-credits-total]").get_attribute("data-credits-total")
        assert shown == str(balances["total"])
        await operator.get_by_role("button", name="Disable user", exact=True).click()
        await operator.get_by_role("status").filter(has_text="Saved.").wait_for()

        status, body = await generate(url, key)
        assert (status, body["error"]["code"]) == (403, "account_disabled")

        await operator.get_by_role("link", name="Audit log", exact=True).click()
        await operator.get_by_role("cell", name=f"console:{OPERATOR_EMAIL}").first.wait_for()
        await screenshot(operator, "admin-audit")
        await operator.get_by_role("link", name="All usage", exact=True).click()
        # Other tests' users share the database: the customer is found by email.
        await operator.get_by_label("Email contains").fill(email)
        await operator.get_by_role("button", name="Show", exact=True).click()
        await operator.get_by_role("link", name=email).first.wait_for()
        await screenshot(operator, "admin-usage")
        assert watch.errors == []
    finally:
        await customer_context.close()
        await operator_context.close()


@pytest.fixture
async def other_site() -> AsyncIterator[tuple[str, list[str]]]:
    """A page on another origin, and where its form should post (set by the test)."""
    target: list[str] = []

    async def form(request: web.Request) -> web.Response:
        return web.Response(
            text=(
                f'<form method="post" action="{target[0]}">'
                '<input type="hidden" name="name" value="planted">'
                '<button type="submit">Win a prize</button></form>'
            ),
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/", form)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://localhost:{port}/", target
    await runner.cleanup()


async def test_a_form_posted_from_another_site_is_refused(
    console_page: Any, console_url: str, other_site: tuple[str, list[str]]
) -> None:
    url, page = console_url, console_page
    await sign_up(page, url, f"csrf-{uuid.uuid4().hex[:10]}@example.com")
    attack_page, target = other_site
    target.append(f"{url}/console/keys")
    await page.goto(attack_page)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Win a prize").click()
    response = await navigation.value
    assert response.status == 403
    await screenshot(page, "csrf-refused")
    await page.goto(f"{url}/console/keys")
    assert await page.get_by_text("You have no keys yet.").is_visible()
