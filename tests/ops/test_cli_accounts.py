"""The operators' commands, run for real as subprocesses: users, keys and usage, each
as text and as ``--json``; what they change reaches a running gateway at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.accounts import PASSWORD, RELAXED, new_account, new_key
from tests.support.cli import CliResult, run_cli
from tests.support.config import merge, write_config
from tests.support.gateway import Gateway, MakeGateway
from tests.support.http import expect_error
from tests.support.smtp import smtp_sink
from tests.support.usage import store_usage, today

Cli = Callable[..., Awaitable[CliResult]]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.fixture
def make_cli(tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path) -> Callable[..., Cli]:
    """``make_cli(extra_config)``: the command, with ``--config`` for the test's config."""

    def make(extra: dict[str, Any] | None = None) -> Cli:
        path = write_config(tmp_path / f"{uuid.uuid4().hex}.yaml", merge(raw_config, extra or {}))

        async def run(*args: str, stdin: str | None = None) -> CliResult:
            return await run_cli(*args, "--config", str(path), cwd=elsewhere, stdin=stdin)

        return run

    return make


@pytest.fixture
def cli(make_cli: Callable[..., Cli]) -> Cli:
    return make_cli()


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    """A gateway in the commands' Redis namespace (they reach its key cache and counters),
    with per-IP account budgets that these tests never meet."""
    return await make_gateway(RELAXED)


def unique_email(tag: str) -> str:
    return f"ops-{tag}-{uuid.uuid4().hex[:10]}@example.com"


def succeeded(result: CliResult) -> CliResult:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def parsed(result: CliResult) -> Any:
    return json.loads(succeeded(result).stdout)


def table(result: CliResult) -> list[list[str]]:
    """The rows of a printed table (header first), split on runs of two spaces or more;
    blank lines left out."""
    lines = succeeded(result).stdout.splitlines()
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines if line]


async def login(gateway: Gateway, email: str, password: str) -> int:
    response = await gateway.client.post(
        "/v1/auth/login", json={"email": email, "password": password}
    )
    return response.status


def link_token(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    assert parts.path == "/console/reset"
    (token,) = urllib.parse.parse_qs(parts.query)["token"]
    return token


# -- users create -------------------------------------------------------------------------


async def test_users_create_with_a_password_from_stdin(
    cli: Cli, gateway: Gateway, db: asyncpg.Connection
):
    email, as_json = unique_email("stdin"), unique_email("stdin-json")
    text, js = await asyncio.gather(
        cli("users", "create", "--email", email, "--password-stdin", stdin="my own passphrase\n"),
        cli(
            "users",
            "create",
            "--email",
            as_json,
            "--plan",
            "pro",
            "--json",
            "--password-stdin",
            stdin="another passphrase\n",
        ),
    )
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)
    assert succeeded(text).stdout == f"user {user_id} {email} plan=free\n"
    body = parsed(js)
    assert body["email"] == as_json
    assert body["plan"] == "pro"
    assert body["is_active"] is True
    assert body["reset_link"] is None
    assert uuid.UUID(body["id"]) == await db.fetchval(
        "SELECT id FROM users WHERE email = $1", as_json
    )
    assert await login(gateway, email, "my own passphrase") == 200
    assert await login(gateway, as_json, "another passphrase") == 200
    assert await login(gateway, email, "my own passphrase\n") == 401


async def test_users_create_validates_the_email_and_password_as_the_api_does(
    cli: Cli, db: asyncpg.Connection
):
    runs = await asyncio.gather(
        cli("users", "create", "--email", "no-at-sign"),
        cli("users", "create", "--email", "two words@example.com"),
        cli("users", "create", "--email", "x@example.com\x01"),
        cli("users", "create", "--email", unique_email("short"), "--password-stdin", stdin="short"),
    )
    message = "error: 'email' must be a valid email address.\n"
    assert [(r.returncode, r.stdout, r.stderr) for r in runs[:3]] == [(2, "", message)] * 3
    assert runs[3].returncode == 2
    assert runs[3].stderr == "error: the password must be 8 to 128 characters\n"
    assert await db.fetchval("SELECT count(*) FROM users WHERE email LIKE 'ops-short-%'") == 0


async def test_users_create_with_a_reset_link(cli: Cli, gateway: Gateway):
    email = unique_email("link")
    result = succeeded(await cli("users", "create", "--email", email, "--reset-link"))
    user_line, url = result.stdout.splitlines()
    assert user_line.endswith(f" {email} plan=free")
    assert "one use" in result.stderr
    response = await gateway.client.post(
        "/v1/auth/password-reset",
        json={"token": link_token(url), "new_password": "chosen passphrase"},
    )
    assert response.status == 204
    assert await login(gateway, email, "chosen passphrase") == 200


# -- users list, show, set ---------------------------------------------------------------------


async def test_users_list(cli: Cli):
    tag = uuid.uuid4().hex[:8]
    emails = [f"list-{tag}-{i}@example.com" for i in range(3)]
    for email in emails:  # one after the other: the list is oldest first
        succeeded(await cli("users", "create", "--email", email))
    succeeded(await cli("users", "set", emails[1], "--active", "false", "--plan", "pro"))

    text, js, limited, none = await asyncio.gather(
        cli("users", "list", "--email-like", tag.upper()),
        cli("users", "list", "--email-like", tag, "--json"),
        cli("users", "list", "--email-like", tag, "--limit", "2", "--json"),
        cli("users", "list", "--email-like", "nobody-has-this"),
    )
    rows = table(text)
    assert rows[0] == ["ID", "EMAIL", "PLAN", "STATE", "CREATED"]
    assert [r[1:4] for r in rows[1:]] == [
        [emails[0], "free", "active"],
        [emails[1], "pro", "disabled"],
        [emails[2], "free", "active"],
    ]
    users = parsed(js)
    assert [u["email"] for u in users] == emails
    assert [u["is_active"] for u in users] == [True, False, True]
    assert set(users[0]) == {"id", "email", "plan", "is_active", "created_at", "updated_at"}
    assert [u["id"] for u in parsed(limited)] == [u["id"] for u in users[:2]]
    assert table(none) == [["ID", "EMAIL", "PLAN", "STATE", "CREATED"]]


async def test_users_show(cli: Cli, gateway: Gateway):
    account = await new_account(gateway)
    key = await new_key(gateway, account, name="laptop")
    assert (await gateway.generate(key["key"], n=2)).status == 200

    text, js = await asyncio.gather(
        cli("users", "show", account.email.upper()), cli("users", "show", account.email, "--json")
    )
    lines = succeeded(text).stdout.splitlines()
    assert lines[:7] == [
        f"id:           {account.id}",
        f"email:        {account.email}",
        "plan:         free (10/min, 50 images/day)",
        "state:        active",
        lines[4],
        "images today: 2",
        "keys:         1 active",
    ]
    assert lines[4].startswith("created:      ")
    rows = table(CliResult(0, "\n".join(lines[8:]), ""))
    assert rows[0][:4] == ["ID", "PREFIX", "NAME", "STATE"]
    assert rows[1][:4] == [key["id"], key["prefix"], "laptop", "active"]

    body = parsed(js)
    assert body["id"] == account.id
    assert body["images_today"] == 2
    assert [(k["id"], k["name"], k["state"]) for k in body["keys"]] == [
        (key["id"], "laptop", "active")
    ]
    assert key["key"] not in js.stdout


async def test_users_show_an_unknown_email(cli: Cli):
    result = await cli("users", "show", "nobody@example.com")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: no user with email 'nobody@example.com'\n"


async def test_a_disabled_users_key_stops_working_at_once(
    cli: Cli, gateway: Gateway, db: asyncpg.Connection
):
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    assert (await gateway.generate(key["key"])).status == 200  # held in the gateway's memory

    result = succeeded(await cli("users", "set", account.email, "--active", "false"))
    assert result.stdout == f"user {account.id} {account.email} plan=free disabled\n"
    await expect_error(await gateway.generate(key["key"]), 403, "account_disabled")

    body = parsed(await cli("users", "set", account.email, "--active", "true", "--json"))
    assert (body["id"], body["is_active"]) == (account.id, True)
    assert (await gateway.generate(key["key"])).status == 200

    audit = await db.fetch(
        "SELECT actor, action, details::text FROM admin_audit_log WHERE target_id = $1 "
        "ORDER BY created_at",
        uuid.UUID(account.id),
    )
    assert [(r["actor"], r["action"]) for r in audit] == [("cli", "update_user")] * 2
    assert [json.loads(r["details"]) for r in audit] == [{"is_active": False}, {"is_active": True}]


async def test_a_plan_change_reaches_a_running_gateway_at_once(cli: Cli, gateway: Gateway):
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    response = await gateway.generate(key["key"])
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    succeeded(await cli("users", "set", account.email, "--plan", "pro"))
    response = await gateway.generate(key["key"])
    assert response.headers["x-ratelimit-limit-requests"] == "600"


async def test_users_set_refuses_bad_changes(cli: Cli, gateway: Gateway):
    account = await new_account(gateway)
    runs = await asyncio.gather(
        cli("users", "set", account.email),
        cli("users", "set", account.email, "--plan", "gold"),
        cli("users", "set", account.email, "--active", "maybe"),
        cli("users", "set", "nobody@example.com", "--plan", "pro"),
    )
    got = [(r.returncode, r.stdout) for r in runs]
    assert got == [(2, ""), (2, ""), (2, ""), (1, "")]
    assert runs[0].stderr == "error: nothing to change: give --plan and/or --active\n"
    assert runs[1].stderr == "error: unknown plan 'gold' (known: free, pro)\n"
    assert "'maybe' is not true or false" in runs[2].stderr


# -- users reset-password -------------------------------------------------------------------------


async def test_users_reset_password(cli: Cli, gateway: Gateway):
    account = await new_account(gateway)
    text, js = await asyncio.gather(
        cli("users", "reset-password", "--email", account.email),
        cli("users", "reset-password", "--email", account.email, "--json"),
    )
    url = succeeded(text).stdout.strip()
    assert text.stdout == url + "\n"
    assert f"password-reset link for {account.email} (one use, until " in text.stderr
    body = parsed(js)
    assert set(body) == {"url", "expires_at", "emailed"}
    assert body["emailed"] is False
    assert link_token(body["url"]) != link_token(url)

    reset = {"token": link_token(url), "new_password": "reset by the operator"}
    assert (await gateway.client.post("/v1/auth/password-reset", json=reset)).status == 204
    assert (await gateway.client.post("/v1/auth/password-reset", json=reset)).status == 400
    assert await login(gateway, account.email, "reset by the operator") == 200
    assert await login(gateway, account.email, PASSWORD) == 401


async def test_users_reset_password_mails_the_link_when_smtp_is_set(
    make_cli: Callable[..., Cli], gateway: Gateway
):
    account = await new_account(gateway)
    async with smtp_sink() as sink:
        cli = make_cli({"email": {"smtp_url": sink.url, "public_url": "https://gw.test"}})
        result = succeeded(await cli("users", "reset-password", "--email", account.email))
        await sink.received.wait()
    url = result.stdout.strip()
    assert url.startswith("https://gw.test/console/reset?token=")
    assert f"mailed to {account.email}" in result.stderr
    [(recipients, message)] = sink.messages
    assert recipients == [account.email]
    assert url in message.get_content()


# -- keys ------------------------------------------------------------------------------------------


async def test_keys_list_shows_ids_prefixes_names_and_states(cli: Cli, gateway: Gateway):
    account = await new_account(gateway)
    kept = await new_key(gateway, account, name="kept")
    revoked = await new_key(gateway, account, name="revoked")
    rotated = await new_key(gateway, account, name="rotated")
    response = await gateway.client.delete(f"/v1/keys/{revoked['id']}", headers=account.headers)
    assert response.status == 204
    response = await gateway.client.post(
        f"/v1/keys/{rotated['id']}/rotate", json={"grace_seconds": 600}, headers=account.headers
    )
    successor = await response.json()

    text, js = await asyncio.gather(
        cli("keys", "list", "--email", account.email),
        cli("keys", "list", "--email", account.email, "--json"),
    )
    rows = table(text)
    assert rows[0] == ["ID", "PREFIX", "NAME", "STATE", "RPM", "IMAGES/DAY", "CREATED", "LAST USED"]
    assert [r[:6] for r in rows[1:]] == [
        [kept["id"], kept["prefix"], "kept", "active", "plan", "plan"],
        [revoked["id"], revoked["prefix"], "revoked", "revoked", "plan", "plan"],
        [rotated["id"], rotated["prefix"], "rotated", "rotating", "plan", "plan"],
        [successor["id"], successor["prefix"], "rotated", "active", "plan", "plan"],
    ]
    keys = parsed(js)
    assert [(k["id"], k["state"]) for k in keys] == [
        (kept["id"], "active"),
        (revoked["id"], "revoked"),
        (rotated["id"], "rotating"),
        (successor["id"], "active"),
    ]
    assert set(keys[0]) == {
        "id",
        "prefix",
        "name",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
        "requests_per_minute",
        "images_per_day",
    }
    for key in (kept, revoked, rotated, successor):
        assert key["key"] not in text.stdout + js.stdout


async def test_keys_set_reaches_a_running_gateway_at_once(
    cli: Cli, gateway: Gateway, db: asyncpg.Connection
):
    account = await new_account(gateway)
    key = await new_key(gateway, account)
    assert (await gateway.generate(key["key"])).headers["x-ratelimit-limit-requests"] == "10"

    result = await cli("keys", "set", key["id"], "--requests-per-minute", "42")
    assert (
        succeeded(result).stdout == f"key {key['id']} requests_per_minute=42 images_per_day=plan\n"
    )
    response = await gateway.generate(key["key"])
    assert response.headers["x-ratelimit-limit-requests"] == "42"

    body = parsed(
        await cli(
            "keys",
            "set",
            key["id"],
            "--requests-per-minute",
            "plan",
            "--images-per-day",
            "3",
            "--json",
        )
    )
    assert (body["id"], body["user_id"]) == (key["id"], account.id)
    assert (body["requests_per_minute"], body["images_per_day"], body["state"]) == (
        None,
        3,
        "active",
    )
    response = await gateway.generate(key["key"])
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert response.headers["x-ratelimit-limit-images"] == "3"
    row = await db.fetchrow(
        "SELECT requests_per_minute, images_per_day FROM api_keys WHERE id = $1",
        uuid.UUID(key["id"]),
    )
    assert tuple(row) == (None, 3)
    actions = await db.fetch(
        "SELECT actor, details::text FROM admin_audit_log WHERE target_id = $1 ORDER BY created_at",
        uuid.UUID(key["id"]),
    )
    assert [(r["actor"], json.loads(r["details"])) for r in actions] == [
        ("cli", {"requests_per_minute": 42}),
        ("cli", {"requests_per_minute": None, "images_per_day": 3}),
    ]


async def test_keys_set_refuses_bad_values(cli: Cli):
    unknown = str(uuid.uuid4())
    runs = await asyncio.gather(
        cli("keys", "set", unknown, "--images-per-day", "5"),
        cli("keys", "set", "not-an-id", "--images-per-day", "5"),
        cli("keys", "set", unknown),
        cli("keys", "set", unknown, "--images-per-day", "0"),
        cli("keys", "set", unknown, "--requests-per-minute", "lots"),
    )
    got = [(r.returncode, r.stdout) for r in runs]
    assert got == [(1, ""), (2, ""), (2, ""), (2, ""), (2, "")]
    assert runs[0].stderr == f"error: no key with id {unknown}\n"
    assert runs[1].stderr == "error: 'not-an-id' is not a key id\n"
    assert "nothing to change" in runs[2].stderr


async def test_keys_create_keeps_to_the_cap_unless_forced(
    make_cli: Callable[..., Cli], db: asyncpg.Connection
):
    cli = make_cli({"auth": {"max_keys_per_user": 1}})
    email = unique_email("cap")
    succeeded(await cli("users", "create", "--email", email))
    first = parsed(await cli("keys", "create", "--email", email, "--name", "one", "--json"))
    assert set(first) == {"id", "key", "prefix", "name"}
    assert first["name"] == "one"

    refused = await cli("keys", "create", "--email", email)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "error: An account may hold 1 active keys. Revoke one first. "
        "Or create it anyway with --force.\n"
    )
    forced = succeeded(await cli("keys", "create", "--email", email, "--force"))
    assert forced.stdout.strip() != first["key"]
    count = await db.fetchval(
        "SELECT count(*) FROM api_keys k JOIN users u ON u.id = k.user_id WHERE u.email = $1",
        email,
    )
    assert count == 2


# -- usage -----------------------------------------------------------------------------------------


async def test_usage_over_a_range_and_today(cli: Cli, gateway: Gateway, db: asyncpg.Connection):
    account = await new_account(gateway)
    first = await new_key(gateway, account, name="first")
    second = await new_key(gateway, account, name="second")
    other = await new_account(gateway)
    theirs = await new_key(gateway, other)
    past = today() - dt.timedelta(days=333)  # a day no other test writes
    for key, day, images in ((first, past, 5), (second, past, 7), (theirs, past, 1)):
        await store_usage(db, key["id"], day, images)
    # Today's images are in Redis only (not flushed).
    assert (await gateway.generate(first["key"], n=2)).status == 200

    day = past.isoformat()
    text, js, mine, today_only = await asyncio.gather(
        cli("usage", "--start", day, "--end", day),
        cli("usage", "--start", day, "--end", day, "--json"),
        cli("usage", "--email", account.email, "--start", day, "--json"),
        cli("usage", "--email", account.email, "--json"),
    )
    rows = table(text)
    assert rows[0] == [f"{day} to {day}: 13 images"]
    assert rows[1] == ["EMAIL", "KEY ID", "IMAGES"]
    assert rows[2:] == [
        [account.email, second["id"], "7"],
        [account.email, first["id"], "5"],
        [other.email, theirs["id"], "1"],
    ]
    body = parsed(js)
    assert (body["start"], body["end"], body["total"]) == (day, day, 13)
    assert body["keys"][0] == {
        "api_key_id": second["id"],
        "user_id": account.id,
        "email": account.email,
        "images": 7,
    }
    # From that day up to today: today's live count is added.
    body = parsed(mine)
    assert (body["start"], body["end"], body["total"]) == (day, today().isoformat(), 14)
    got = {k["api_key_id"]: k["images"] for k in body["keys"]}
    assert got == {first["id"]: 7, second["id"]: 7}
    body = parsed(today_only)
    assert (body["start"], body["end"], body["total"]) == (
        today().isoformat(),
        today().isoformat(),
        2,
    )


async def test_usage_refuses_bad_ranges(cli: Cli):
    runs = await asyncio.gather(
        cli("usage", "--start", "2024-02-30"),
        cli("usage", "--start", "2024-03-02", "--end", "2024-03-01"),
        cli("usage", "--start", "2020-01-01", "--end", "2024-01-01"),
        cli("usage", "--email", "nobody@example.com"),
    )
    assert [(r.returncode, r.stdout) for r in runs] == [(2, ""), (2, ""), (2, ""), (1, "")]
    assert runs[1].stderr == "error: --end must not be before --start\n"
    assert runs[2].stderr == "error: the range may cover at most 366 days\n"
