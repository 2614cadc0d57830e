"""The ``gateway`` command, run for real as a subprocess: exit codes, output, rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psycopg
import pytest

from gateway.db.pool import split_database_url
from gateway.keys.format import display_prefix, hash_key, parse_key
from tests.support.cli import CliResult as Result
from tests.support.cli import run_cli
from tests.support.config import KEY_PREFIX, merge, write_config
from tests.support.gateway import Gateway, MakeKey
from tests.support.paths import CONFIGS, ROOT
from tests.support.processes import clean_env, free_port, gateway_command

KEY_RE = re.compile(rf"^{KEY_PREFIX}[0-9A-Za-z]{{38}}$")
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def config_path(tmp_path: Path, raw_config: dict[str, Any]) -> Path:
    return write_config(tmp_path / "config.yaml", raw_config)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no config.yaml and no migrations/ in it."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli(config_path: Path, elsewhere: Path) -> Cli:
    """``await cli(*args, **env)``: the command with ``--config`` for the test's config."""

    async def run(*args: str, **env: str) -> Result:
        return await run_cli(*args, "--config", str(config_path), cwd=elsewhere, **env)

    return run


def config_ok(
    head: str, *, models: tuple[str, ...] = ("local",), plans: tuple[str, ...] = ("free", "pro")
) -> str:
    """What check-config prints for a good config: ``head``, then the prices (1 credit per
    image each, the default) and the plans' credits (none)."""
    return (
        f"{head}\nprices (credits per image):\n"
        + "".join(f"  {model}: 1 credits per image\n" for model in models)
        + "plans (monthly credits):\n"
        + "".join(f"  {plan}: no credit limit\n" for plan in plans)
    )


def unique_email(tag: str) -> str:
    return f"cli-{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def insert_user(db: asyncpg.Connection, email: str, plan: str) -> uuid.UUID:
    user_id: uuid.UUID = await db.fetchval(
        "INSERT INTO users (email, plan) VALUES ($1, $2) RETURNING id", email, plan
    )
    return user_id


# -- check-config and finding the config -----------------------------------------------
#
# Independent runs go out together (asyncio.gather): each is a fresh interpreter.

CHECK_CONFIG_ERRORS = {
    "unknown_plan_key.yaml": "plans.free.images_per_dya: unknown key",
    "bool_for_int.yaml": "plans.free.max_images_per_request: must be a whole number",
    "unset_env_var.yaml": "database.url: environment variable GATEWAY_TEST_NEVER_SET is not set",
    # Found only when the backends are built, which check-config does too.
    "backend_unknown_option.yaml": "backends.local.colour: unknown key",
    "http_backend_without_base_url.yaml": "backends.remote.base_url: required, an http(s) URL",
}


async def test_check_config_accepts_a_good_file(cli: Cli):
    result = await cli("check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "config ok: 2 plans, 1 backends, 1 models\n"
        "prices (credits per image):\n"
        "  local: 1 credits per image\n"
        "plans (monthly credits):\n"
        "  free: no credit limit\n"
        "  pro: no credit limit\n"
    )
    assert result.stdout == config_ok("config ok: 2 plans, 1 backends, 1 models")
    assert result.stderr == ""


async def test_check_config_rejects_bad_files_naming_the_key(elsewhere: Path):
    names = list(CHECK_CONFIG_ERRORS)
    results = await asyncio.gather(
        *(run_cli("check-config", "--config", str(CONFIGS / n), cwd=elsewhere) for n in names)
    )
    got = {n: (r.returncode, r.stderr, r.stdout) for n, r in zip(names, results, strict=True)}
    assert got == {n: (2, f"config error: {m}\n", "") for n, m in CHECK_CONFIG_ERRORS.items()}


async def test_check_config_lists_known_backend_types(elsewhere: Path):
    path = CONFIGS / "backend_unknown_type.yaml"
    result = await run_cli("check-config", "--config", str(path), cwd=elsewhere)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "config error: backends.gpu.type: unknown backend type 'comfyui' (known: "
    )
    assert "http" in result.stderr
    assert "local" in result.stderr


async def test_check_config_reports_a_non_string_default_plan(elsewhere: Path):
    path = CONFIGS / "default_plan_list.yaml"
    result = await run_cli("check-config", "--config", str(path), cwd=elsewhere)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("config error: default_plan: ")
    assert result.returncode == 2


async def test_where_the_config_comes_from(config_path: Path, elsewhere: Path, tmp_path: Path):
    bad = str(CONFIGS / "unknown_server_key.yaml")
    missing = tmp_path / "missing.yaml"
    runs = {
        # No option, no variable: ./config.yaml, relative to the working directory.
        "cwd": run_cli("check-config", cwd=config_path.parent),
        "cwd-without-file": run_cli("check-config", cwd=elsewhere),
        # GATEWAY_CONFIG names the file when --config is not given.
        "variable": run_cli("check-config", cwd=elsewhere, GATEWAY_CONFIG=str(config_path)),
        "variable-bad": run_cli("check-config", cwd=elsewhere, GATEWAY_CONFIG=bad),
        # --config wins over GATEWAY_CONFIG.
        "option-wins": run_cli(
            "check-config", "--config", str(config_path), cwd=elsewhere, GATEWAY_CONFIG=bad
        ),
        "option-missing": run_cli("check-config", "--config", str(missing), cwd=elsewhere),
    }
    results = dict(zip(runs, await asyncio.gather(*runs.values()), strict=True))
    ok = (0, config_ok("config ok: 2 plans, 1 backends, 1 models"), "")
    assert {name: (r.returncode, r.stdout, r.stderr) for name, r in results.items()} == {
        "cwd": ok,
        "cwd-without-file": (
            2,
            "",
            "config error: config.yaml: cannot read: No such file or directory\n",
        ),
        "variable": ok,
        "variable-bad": (2, "", "config error: server.prot: unknown key\n"),
        "option-wins": ok,
        "option-missing": (
            2,
            "",
            f"config error: {missing}: cannot read: No such file or directory\n",
        ),
    }


async def test_config_option_before_or_after_the_subcommand(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path
):
    # A config with three plans, so the output proves this very file was read.
    raw = {**raw_config, "plans": {**raw_config["plans"], "team": dict(raw_config["plans"]["pro"])}}
    path = str(write_config(tmp_path / "three-plans.yaml", raw))
    argvs = {
        "before": ["--config", path, "check-config"],
        "after": ["check-config", "--config", path],
        "after-equals": ["check-config", f"--config={path}"],
    }
    results = await asyncio.gather(*(run_cli(*argv, cwd=elsewhere) for argv in argvs.values()))
    got = {name: (r.returncode, r.stdout) for name, r in zip(argvs, results, strict=True)}
    three = config_ok("config ok: 3 plans, 1 backends, 1 models", plans=("free", "pro", "team"))
    assert got == dict.fromkeys(argvs, (0, three))


async def test_config_option_anywhere_in_a_two_level_command(
    config_path: Path, elsewhere: Path, db: asyncpg.Connection
):
    path = str(config_path)
    emails = {name: unique_email(name) for name in ("before", "between", "after")}
    argvs = {
        "before": ["--config", path, "users", "create", "--email", emails["before"]],
        "between": ["users", "--config", path, "create", "--email", emails["between"]],
        "after": ["users", "create", "--email", emails["after"], "--config", path],
    }
    results = await asyncio.gather(*(run_cli(*argv, cwd=elsewhere) for argv in argvs.values()))
    got = {name: (r.returncode, r.stderr) for name, r in zip(argvs, results, strict=True)}
    assert got == dict.fromkeys(argvs, (0, ""))
    rows = await db.fetch("SELECT email FROM users WHERE email = ANY($1)", list(emails.values()))
    assert sorted(r["email"] for r in rows) == sorted(emails.values())


async def test_no_subcommand_is_a_usage_error(elsewhere: Path):
    result = await run_cli(cwd=elsewhere)
    assert result.returncode == 2
    assert "usage: gateway" in result.stderr


# -- users create ------------------------------------------------------------------------


async def test_users_create_lower_cases_and_trims_the_email(cli: Cli, db: asyncpg.Connection):
    email = unique_email("case")
    typed = f"  {email.upper()}\t"
    result = await cli("users", "create", "--email", typed)
    assert result.returncode == 0, result.stderr
    row = await db.fetchrow("SELECT * FROM users WHERE email = $1", email)
    assert row is not None
    assert row["plan"] == "free"  # default_plan
    assert row["is_active"] is True
    assert row["password_hash"] is None
    assert result.stdout == f"user {row['id']} {email} plan=free\n"


async def test_users_create_with_a_plan(cli: Cli, db: asyncpg.Connection):
    email = unique_email("pro")
    result = await cli("users", "create", "--email", email, "--plan", "pro")
    assert result.returncode == 0, result.stderr
    assert await db.fetchval("SELECT plan FROM users WHERE email = $1", email) == "pro"
    assert result.stdout.endswith(f" {email} plan=pro\n")


async def test_users_create_refuses_a_duplicate_email(cli: Cli, db: asyncpg.Connection):
    email = unique_email("dup")
    first = await cli("users", "create", "--email", email)
    assert first.returncode == 0, first.stderr
    again = await cli("users", "create", "--email", f" {email.upper()} ", "--plan", "pro")
    assert again.returncode != 0
    assert "exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert again.stdout == ""
    rows = await db.fetch("SELECT plan FROM users WHERE email = $1", email)
    assert [r["plan"] for r in rows] == ["free"]


async def test_users_create_refuses_an_unknown_plan(cli: Cli, db: asyncpg.Connection):
    email = unique_email("plan")
    result = await cli("users", "create", "--email", email, "--plan", "gold")
    assert result.returncode != 0
    assert result.stderr == "error: unknown plan 'gold' (known: free, pro)\n"
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0


async def test_users_create_requires_an_email(cli: Cli):
    result = await cli("users", "create")
    assert result.returncode == 2
    assert "--email" in result.stderr


# -- keys create -----------------------------------------------------------------------------


async def test_keys_create_prints_the_key_once_and_stores_only_its_hash(
    cli: Cli, db: asyncpg.Connection
):
    email = unique_email("key")
    user_id = await insert_user(db, email, "free")
    result = await cli("keys", "create", "--email", f" {email.upper()}", "--name", "ci deploy")
    assert result.returncode == 0, result.stderr

    # stdout is the key and nothing else, so `KEY=$(gateway keys create ...)` works.
    key = result.stdout.strip()
    assert result.stdout == key + "\n"
    assert KEY_RE.fullmatch(key), key
    assert parse_key(key, KEY_PREFIX) is not None
    assert key not in result.stderr
    match = re.search(rf"key id: ({UUID_RE})", result.stderr)
    assert match, result.stderr
    assert "only time" in result.stderr

    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", uuid.UUID(match[1]))
    assert row is not None
    assert row["user_id"] == user_id
    assert row["name"] == "ci deploy"
    assert row["is_active"] is True
    assert row["key_hash"] == hash_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", row["key_hash"])
    assert row["prefix"] == display_prefix(key, KEY_PREFIX)
    assert row["prefix"].startswith(KEY_PREFIX)
    assert len(row["prefix"]) < len(key)
    random_part = key[len(KEY_PREFIX) : len(KEY_PREFIX) + 32]
    assert random_part not in row["prefix"]
    # Neither the key nor its random part is anywhere in the row.
    everything = json.dumps({k: str(v) for k, v in dict(row).items()})
    assert key not in everything
    assert random_part not in everything


async def test_keys_create_twice_gives_two_different_keys(cli: Cli, db: asyncpg.Connection):
    email = unique_email("two")
    user_id = await insert_user(db, email, "pro")
    first, second = await asyncio.gather(
        *(cli("keys", "create", "--email", email) for _ in range(2))
    )
    assert first.returncode == second.returncode == 0
    assert first.stdout != second.stdout
    hashes = {
        r["key_hash"]
        for r in await db.fetch("SELECT key_hash FROM api_keys WHERE user_id = $1", user_id)
    }
    assert hashes == {hash_key(first.stdout.strip()), hash_key(second.stdout.strip())}
    names = await db.fetch("SELECT name FROM api_keys WHERE user_id = $1", user_id)
    assert [r["name"] for r in names] == ["", ""]  # --name is optional


async def test_keys_create_for_an_unknown_email_fails(cli: Cli, db: asyncpg.Connection):
    before = await db.fetchval("SELECT count(*) FROM api_keys")
    email = unique_email("nobody")
    result = await cli("keys", "create", "--email", email, "--name", "x")
    assert result.returncode != 0
    assert result.stderr == f"error: no user with email {email!r}\n"
    assert result.stdout == ""
    assert await db.fetchval("SELECT count(*) FROM api_keys") == before


# -- keys revoke ------------------------------------------------------------------------------


async def test_keys_revoke_deactivates_the_key(cli: Cli, db: asyncpg.Connection, make_key: MakeKey):
    issued = await make_key()
    other = await make_key()
    result = await cli("keys", "revoke", str(issued.key_id))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"revoked {issued.key_id}\n"
    active = await db.fetchval("SELECT is_active FROM api_keys WHERE id = $1", issued.key_id)
    assert active is False
    # Only that key.
    assert await db.fetchval("SELECT is_active FROM api_keys WHERE id = $1", other.key_id)


async def test_a_revoked_key_stops_working_on_a_running_gateway_at_once(
    cli: Cli, gateway: Gateway, make_key: MakeKey
):
    issued = await make_key()
    other = await make_key()
    # The running gateway now has both keys cached in its own memory.
    assert (await gateway.generate(issued.key)).status == 200
    assert (await gateway.generate(other.key)).status == 200

    result = await cli("keys", "revoke", str(issued.key_id))
    assert result.returncode == 0, result.stderr

    # No restart and no waiting for a cache TTL.
    response = await gateway.generate(issued.key)
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "api_key_revoked"
    assert (await gateway.generate(other.key)).status == 200


async def test_keys_revoke_of_an_unknown_or_malformed_id_fails(cli: Cli):
    unknown = uuid.uuid4()
    ids = [str(unknown), "not-a-uuid", ""]
    results = await asyncio.gather(*(cli("keys", "revoke", key_id) for key_id in ids))
    got = [(r.returncode, r.stdout, r.stderr) for r in results]
    assert got == [
        (1, "", f"error: no key with id {unknown}\n"),
        (2, "", "error: 'not-a-uuid' is not a key id\n"),
        (2, "", "error: '' is not a key id\n"),
    ]


# -- demo ---------------------------------------------------------------------------------------


async def test_demo_prints_a_working_key_and_a_curl_line_and_reuses_its_user(
    cli: Cli, db: asyncpg.Connection
):
    keys = []
    for _ in range(2):
        result = await cli("demo")
        assert result.returncode == 0, result.stderr
        found = re.findall(rf"\b{KEY_PREFIX}[0-9A-Za-z]{{38}}\b", result.stdout)
        assert found, result.stdout
        key = found[0]
        assert set(found) == {key}
        assert parse_key(key, KEY_PREFIX) is not None
        assert "demo@example.com" in result.stdout
        curl = [line for line in result.stdout.splitlines() if "curl " in line]
        assert curl == ["  curl -s http://127.0.0.1:8080/v1/images/generations \\"]
        assert f"-H 'Authorization: Bearer {key}'" in result.stdout
        keys.append(key)
    assert keys[0] != keys[1]

    users = await db.fetch("SELECT id, plan FROM users WHERE email = 'demo@example.com'")
    assert len(users) == 1
    assert users[0]["plan"] == "free"
    stored = await db.fetch(
        "SELECT key_hash, name, is_active FROM api_keys WHERE user_id = $1", users[0]["id"]
    )
    by_hash = {r["key_hash"]: r for r in stored}
    for key in keys:
        assert by_hash[hash_key(key)]["name"] == "demo"
        assert by_hash[hash_key(key)]["is_active"] is True


# -- migrate ---------------------------------------------------------------------------


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards."""
    server_url, _ = split_database_url(database_url)
    name = f"gw_cli_migrate_{secrets.token_hex(4)}"
    yield database_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


async def public_tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {r["table_name"] for r in rows}
    finally:
        await conn.close()


async def database_exists(url: str) -> bool:
    server_url, name = split_database_url(url)
    conn = await asyncpg.connect(server_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


MIGRATIONS = ROOT / "migrations"
#: Migration ids in the order they apply: 0001.initial, ...
MIGRATION_IDS = sorted(
    p.name.removesuffix(".sql")
    for p in MIGRATIONS.glob("*.sql")
    if not p.name.endswith(".rollback.sql")
)


async def test_migrate_creates_applies_rolls_back_and_reapplies(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path, fresh_database_url: str
):
    schema = {"users", "api_keys", "usage"}
    all_applied = f"applied: {', '.join(MIGRATION_IDS)}\n"
    raw = {**raw_config, "database": {**raw_config["database"], "url": fresh_database_url}}
    path = str(write_config(tmp_path / "fresh.yaml", raw))
    assert not await database_exists(fresh_database_url)

    # cwd has no migrations/: the directory beside the package is found.
    first = await run_cli("migrate", "--config", path, cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    assert first.stdout == all_applied
    assert await database_exists(fresh_database_url)
    assert schema <= await public_tables(fresh_database_url)

    second = await run_cli("migrate", "--config", path, cwd=elsewhere)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "applied: nothing (up to date)\n"

    # --rollback alone undoes the latest migration only...
    latest = await run_cli("migrate", "--rollback", "--config", path, cwd=elsewhere)
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout == f"rolled back: {MIGRATION_IDS[-1]}\n"
    # ...and --rollback N the N latest, newest first: here all the rest.
    rest = await run_cli(
        "migrate", "--config", path, "--rollback", str(len(MIGRATION_IDS)), cwd=elsewhere
    )
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout == f"rolled back: {', '.join(MIGRATION_IDS[-2::-1]) or 'nothing'}\n"
    assert not schema & await public_tables(fresh_database_url)

    # Again, this time with the database named only by DATABASE_URL.
    raw["database"]["url"] = "postgresql://nobody@127.0.0.1:1/not_this_one"
    write_config(Path(path), raw)
    again = await run_cli(
        "migrate", "--config", path, cwd=elsewhere, DATABASE_URL=fresh_database_url
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == all_applied
    assert schema <= await public_tables(fresh_database_url)


async def test_migrate_against_an_unreachable_server_fails_cleanly(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path
):
    raw = {
        **raw_config,
        "database": {**raw_config["database"], "url": "postgresql://postgres@127.0.0.1:1/nothing"},
    }
    path = str(write_config(tmp_path / "unreachable.yaml", raw))
    result = await run_cli("migrate", "--config", path, cwd=elsewhere)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


# -- check-config runs what serve runs; serve starts cleanly or says why in one line -------


def without_jwt_secret(raw: dict[str, Any]) -> dict[str, Any]:
    auth = {k: v for k, v in raw["auth"].items() if k != "jwt_secrets"}
    return {**raw, "auth": auth}


def serve_args(path: Path | str) -> list[str]:
    return ["serve", "--config", str(path), "--host", "127.0.0.1"]


NO_JWT_SECRET = (
    "config error: auth.jwt_secrets: a secret of at least 32 bytes is required "
    "(set GATEWAY_JWT_SECRET), or run in development mode (--dev)\n"
)


async def test_check_config_and_serve_refuse_the_same_configs(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path
):
    """What check-config refuses, serve refuses with the same line, before it says it is
    listening; what check-config passes gets past those checks in serve too."""
    port = free_port()
    base = merge(raw_config, {"server": {"port": port}})
    credential = merge(
        base,
        {
            "backends": {"remote": {"type": "openai", "api_key_env": "GW_TEST_CLI_UPSTREAM_KEY"}},
            "models": {"remote": "remote"},
        },
    )
    configs = {
        "credential": write_config(tmp_path / "credential.yaml", credential),
        "no-secret": write_config(tmp_path / "no-secret.yaml", without_jwt_secret(base)),
    }
    missing_credential = (
        "config error: backends.remote.api_key_env: environment variable "
        "GW_TEST_CLI_UPSTREAM_KEY is not set\n"
    )
    runs = {
        "check credential unset": (["check-config", "--config", str(configs["credential"])], {}),
        "serve credential unset": (serve_args(configs["credential"]), {}),
        "check credential set": (
            ["check-config", "--config", str(configs["credential"])],
            {"GW_TEST_CLI_UPSTREAM_KEY": "sk-test"},
        ),
        "check no secret": (["check-config", "--config", str(configs["no-secret"])], {}),
        "serve no secret": (serve_args(configs["no-secret"]), {}),
        "check no secret --dev": (
            ["check-config", "--dev", "--config", str(configs["no-secret"])],
            {},
        ),
        "check short secret": (
            ["check-config", "--config", str(configs["no-secret"])],
            {"GATEWAY_JWT_SECRET": "short"},
        ),
        "serve short secret": (serve_args(configs["no-secret"]), {"GATEWAY_JWT_SECRET": "short"}),
    }
    results = await asyncio.gather(
        *(run_cli(*argv, cwd=elsewhere, **env) for argv, env in runs.values())
    )
    got = {name: (r.returncode, r.stdout, r.stderr) for name, r in zip(runs, results, strict=True)}
    short = "config error: auth.jwt_secrets[0]: must be at least 32 bytes\n"
    assert got == {
        "check credential unset": (2, "", missing_credential),
        "serve credential unset": (2, "", missing_credential),
        "check credential set": (
            0,
            config_ok("config ok: 2 plans, 2 backends, 2 models", models=("local", "remote")),
            "",
        ),
        "check no secret": (2, "", NO_JWT_SECRET),
        "serve no secret": (2, "", NO_JWT_SECRET),
        "check no secret --dev": (
            0,
            config_ok(
                "config ok: 2 plans, 1 backends, 1 models"
                " (development mode: a JWT secret is generated)"
            ),
            "",
        ),
        "check short secret": (2, "", short),
        "serve short secret": (2, "", short),
    }


@contextlib.asynccontextmanager
async def serving(
    path: Path, cwd: Path, log: Path, *extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``gateway serve``, up to the first line it prints; SIGTERM and exit 0 afterwards."""
    with log.open("wb") as log_file:  # a file, never a pipe: a full pipe blocks the server
        process = await asyncio.create_subprocess_exec(
            *gateway_command(*serve_args(path), *extra),
            cwd=cwd,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        yield process, line.decode()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=40) == 0
        assert await process.stdout.read() == b""  # and nothing more on stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
            await process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_says_it_listens_only_once_it_serves(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path, workers: int
):
    port = free_port()
    path = write_config(
        tmp_path / "config.yaml", merge(raw_config, {"server": {"port": port, "workers": workers}})
    )
    log = tmp_path / "serve.log"
    async with serving(path, elsewhere, log) as (_, line):
        plural = "s" if workers > 1 else ""
        assert line == f"gateway listening on http://127.0.0.1:{port} ({workers} worker{plural})\n"
        # At once, no retrying: the port is bound, start-up done (Postgres, backends).
        for _ in range(4 * workers):  # fresh connections: the kernel spreads them over workers
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/readyz") as response,
            ):
                assert response.status == 200
    text = log.read_text()
    assert "Traceback" not in text
    assert "Unclosed" not in text


@pytest.mark.slow
async def test_serve_dev_starts_without_a_jwt_secret_and_says_so(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path
):
    port = free_port()
    raw = merge(without_jwt_secret(raw_config), {"server": {"port": port}})
    path = write_config(tmp_path / "config.yaml", raw)
    log = tmp_path / "serve.log"
    async with serving(path, elsewhere, log, "--dev") as (_, line):
        assert line == f"gateway listening on http://127.0.0.1:{port} (1 worker)\n"
    assert "development mode: signing access tokens with a generated secret" in log.read_text()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_on_a_port_in_use_says_so_in_one_line(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path, taken_port: int, workers: int
):
    raw = merge(raw_config, {"server": {"port": taken_port, "workers": workers}})
    path = write_config(tmp_path / "config.yaml", raw)
    result = await run_cli(*serve_args(path), cwd=elsewhere)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"error: cannot listen on 127.0.0.1:{taken_port}: address already in use\n",
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_without_postgres_says_so_in_one_line(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path, workers: int
):
    port = free_port()
    unreachable = "postgresql://postgres:s3cret-password@127.0.0.1:1/nothing"
    missing = raw_config["database"]["url"] + "_missing"
    missing_name = missing.rsplit("/", 1)[1]
    where = missing.split("@", 1)[1]
    runs = {}
    for name, url in (("unreachable", unreachable), ("missing", missing)):
        raw = merge(
            raw_config, {"server": {"port": port, "workers": workers}, "database": {"url": url}}
        )
        runs[name] = serve_args(write_config(tmp_path / f"{name}.yaml", raw))
    results = await asyncio.gather(*(run_cli(*argv, cwd=elsewhere) for argv in runs.values()))
    got = {name: (r.returncode, r.stdout, r.stderr) for name, r in zip(runs, results, strict=True)}
    assert got == {
        # Where it looked, never the password.
        "unreachable": (
            1,
            "",
            "error: cannot connect to Postgres at 127.0.0.1:1/nothing: connection refused\n",
        ),
        "missing": (
            1,
            "",
            f"error: cannot connect to Postgres at {where}: "
            f'database "{missing_name}" does not exist\n',
        ),
    }


async def test_serve_that_fails_midway_through_start_up_closes_what_it_opened(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path
):
    """Postgres and Redis are open when the journal directory turns out unusable: one line,
    and no warnings about connections or sessions left open."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    raw = merge(
        raw_config,
        {"server": {"port": free_port()}, "usage": {"journal_dir": str(blocker / "journal")}},
    )
    path = write_config(tmp_path / "config.yaml", raw)
    result = await run_cli(*serve_args(path), cwd=elsewhere)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"error: cannot open the reservation journal in {blocker / 'journal'}: Not a directory\n",
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_while_start_up_waits_for_postgres_stops_at_once(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path, workers: int
):
    """A Postgres that accepts connections and never answers: start-up waits on it, and a
    SIGTERM then stops the gateway at once, quietly, without it saying it listens."""
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    pg_port = server.sockets[0].getsockname()[1]
    raw = merge(
        raw_config,
        {
            "server": {"port": free_port(), "workers": workers},
            "database": {"url": f"postgresql://postgres@127.0.0.1:{pg_port}/silent"},
        },
    )
    path = write_config(tmp_path / "config.yaml", raw)
    process = await asyncio.create_subprocess_exec(
        *gateway_command(*serve_args(path)),
        cwd=elsewhere,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(connected.wait(), timeout=60)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        for writer in held:
            writer.close()
        server.close()
    assert (process.returncode, stdout, stderr) == (0, b"", b"")


async def test_serve_with_a_store_it_cannot_write_says_so_in_one_line(
    tmp_path: Path, raw_config: dict[str, Any], elsewhere: Path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    raw = merge(
        raw_config,
        {"server": {"port": free_port()}, "storage": {"url": f"file://{blocker}/images"}},
    )
    path = write_config(tmp_path / "config.yaml", raw)
    result = await run_cli(*serve_args(path), cwd=elsewhere)
    assert result.returncode != 0
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("config error: storage.url: The file store ")
    assert "not writable" in line


# -- credits --------------------------------------------------------------------------


async def test_credits_grant_adds_purchased_credits_once_per_key_audited(
    cli: Cli, db: asyncpg.Connection
):
    email = unique_email("credits")
    user_id = await insert_user(db, email, "free")
    granted = await cli(
        "credits", "grant", "--email", email.upper(), "--amount", "50", "--reason", "invoice 9",
        "--idempotency-key", "inv-9",
    )  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout == (
        f"{email}: +50 credits; purchased 50, this month's allowance left 0, total 50\n"
    )
    again = await cli(
        "credits", "grant", "--email", email, "--amount", "50", "--reason", "invoice 9",
        "--idempotency-key", "inv-9",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stdout
    taken = await cli("credits", "grant", "--email", email, "--amount", "-80", "--reason", "x")
    assert taken.returncode == 2
    assert taken.stderr == (
        "error: The user has 50 purchased credits: an adjustment cannot take away 80.\n"
    )
    nobody = await cli("credits", "grant", "--email", unique_email("x"), "--amount", "1",
                       "--reason", "x")  # fmt: skip
    assert nobody.returncode == 1
    assert "no user with email" in nobody.stderr
    audit = await db.fetch(
        "SELECT actor, details->>'amount' AS amount FROM admin_audit_log"
        " WHERE target_id = $1 AND action = 'change_credits'",
        user_id,
    )
    assert [tuple(row) for row in audit] == [("cli", "50")]
