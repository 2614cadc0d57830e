"""The ``gateway`` command: serve | worker | migrate | check-config | users | keys | credits
| demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from gateway.config import Config, ConfigError, default_config_path, load_config

__all__ = ["main"]

DEMO_EMAIL = "demo@example.com"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="path to config.yaml (default: $GATEWAY_CONFIG or ./config.yaml)",
    )
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--dev", action="store_true", help="development mode: verbose logs, generated secrets"
    )

    worker = sub.add_parser(
        "worker",
        parents=[common],
        help="work image jobs only (no public API; /healthz, /readyz and /metrics)",
    )
    worker.add_argument("--host", help="override server.host")
    worker.add_argument("--port", type=int, help="override server.port")
    worker.add_argument("--dev", action="store_true", help="development mode")

    migrate = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    migrate.add_argument(
        "--rollback",
        type=int,
        metavar="N",
        nargs="?",
        const=1,
        default=None,
        help="roll back the N most recent migrations (default 1) instead",
    )

    check = sub.add_parser(
        "check-config",
        parents=[common],
        help="run serve's start-up checks (config, backends, environment) and exit",
    )
    check.add_argument(
        "--dev", action="store_true", help="check as `serve --dev` would (no JWT secret needed)"
    )

    users = sub.add_parser("users", parents=[common], help="manage users").add_subparsers(
        dest="action", required=True
    )
    create_user = users.add_parser("create", parents=[common], help="create a user")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--plan", help="plan name (default: default_plan)")

    keys = sub.add_parser("keys", parents=[common], help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create_key = keys.add_parser("create", parents=[common], help="create a key (printed once)")
    create_key.add_argument("--email", required=True, help="the owner's email")
    create_key.add_argument("--name", default="", help="a label for the key")
    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key everywhere")
    revoke.add_argument("id", help="the key's id")

    credits = sub.add_parser(
        "credits", parents=[common], help="manage users' credits"
    ).add_subparsers(dest="action", required=True)
    grant = credits.add_parser(
        "grant", parents=[common], help="add purchased credits to a user (negative: take away)"
    )
    grant.add_argument("--email", required=True, help="the user's email")
    grant.add_argument("--amount", required=True, type=int, help="credits (negative: take away)")
    grant.add_argument("--reason", required=True, help="why (kept in the ledger and audit log)")
    grant.add_argument(
        "--idempotency-key", help="a retry with the same key changes the credits once"
    )

    sub.add_parser("demo", parents=[common], help="ensure a demo user and print a new key")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None) or default_config_path())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    handler = _COMMANDS[args.command]
    try:
        return handler(config, args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before serve has its own handlers: no traceback
        return 130


def _check_config(config: Config, args: argparse.Namespace) -> int:
    from gateway.startup import prepare

    prepared = prepare(config, dev=args.dev)  # exactly what `serve` runs before it starts
    note = " (development mode: a JWT secret is generated)" if prepared.generated_jwt_secret else ""
    print(
        f"config ok: {len(config.plans)} plans, {len(config.backends)} backends, "
        f"{len(config.models)} models{note}"
    )
    from gateway.credits.pricing import price_table

    print("prices (credits per image):")
    for line in price_table(config.pricing, list(config.models)):
        print(line)
    print("plans (monthly credits):")
    for name, plan in config.plans.items():
        credits = "no credit limit" if plan.monthly_credits is None else plan.monthly_credits
        print(f"  {name}: {credits}")
    return 0


def _migrate(config: Config, args: argparse.Namespace) -> int:
    from gateway import migrate

    if args.rollback is not None:
        done = migrate.rollback(config.database.url, steps=args.rollback)
        print(f"rolled back: {', '.join(done) or 'nothing'}")
    else:
        done = migrate.apply(config.database.url)
        print(f"applied: {', '.join(done) or 'nothing (up to date)'}")
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.server import serve
    from gateway.startup import DEV_MODE_WARNING, prepare

    configure_logging(config.logging, force_text=args.dev)
    # What check-config runs; here before any worker starts, so that a generated JWT
    # secret is one for every worker (a token from one is good at all of them).
    prepared = prepare(config, dev=args.dev)
    if prepared.generated_jwt_secret:
        logging.getLogger("gateway").warning(DEV_MODE_WARNING)
    host = args.host or config.server.host
    port = args.port or config.server.port
    public_api = args.command == "serve"
    return serve(prepared.config, host, port, dev=args.dev, public_api=public_api)


def _run(config: Config, work: Callable[[Any], Awaitable[int]]) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(config.database.url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def _users_create(config: Config, args: argparse.Namespace) -> int:
    from gateway.db.users import create_user

    plan = args.plan or config.default_plan
    if plan not in config.plans:
        print(f"error: unknown plan {plan!r} (known: {', '.join(config.plans)})", file=sys.stderr)
        return 2

    async def work(conn: Any) -> int:
        try:
            user = await create_user(conn, _normalise_email(args.email), plan)
        except asyncpg.UniqueViolationError:
            print(f"error: a user with email {args.email!r} exists", file=sys.stderr)
            return 1
        print(f"user {user['id']} {user['email']} plan={user['plan']}")
        return 0

    return _run(config, work)


def _keys_create(config: Config, args: argparse.Namespace) -> int:
    from gateway.db.users import find_user_by_email
    from gateway.keys.issue import issue_key

    async def work(conn: Any) -> int:
        user = await find_user_by_email(conn, _normalise_email(args.email))
        if user is None:
            print(f"error: no user with email {args.email!r}", file=sys.stderr)
            return 1
        key, row = await issue_key(
            conn, user_id=user["id"], prefix=config.keys.prefix, name=args.name
        )
        print(f"key id: {row['id']}", file=sys.stderr)
        print("This is the only time the key is shown. Store it now:", file=sys.stderr)
        print(key)
        return 0

    return _run(config, work)


def _keys_revoke(config: Config, args: argparse.Namespace) -> int:
    from gateway.db.keys import revoke_key
    from gateway.keys.cache import publish_invalidation
    from gateway.redis.client import create_redis

    try:
        key_id = uuid.UUID(args.id)
    except ValueError:
        print(f"error: {args.id!r} is not a key id", file=sys.stderr)
        return 2

    async def work(conn: Any) -> int:
        key_hash = await revoke_key(conn, key_id)
        if key_hash is None:
            print(f"error: no key with id {key_id}", file=sys.stderr)
            return 1
        redis = create_redis(config.redis)
        try:
            await publish_invalidation(redis, config.redis.key_prefix, [key_hash])
            await asyncio.sleep(1.0)  # and again, past any lookup that raced the change
            await publish_invalidation(redis, config.redis.key_prefix, [key_hash])
        finally:
            await redis.aclose()
        print(f"revoked {key_id}")
        return 0

    return _run(config, work)


def _demo(config: Config, args: argparse.Namespace) -> int:
    from gateway.db.users import create_user, find_user_by_email
    from gateway.keys.issue import issue_key

    async def work(conn: Any) -> int:
        user = await find_user_by_email(conn, DEMO_EMAIL)
        if user is None:
            user = await create_user(conn, DEMO_EMAIL, config.default_plan)
        key, _ = await issue_key(conn, user_id=user["id"], prefix=config.keys.prefix, name="demo")
        port = config.server.port
        print(f"\nDemo user {DEMO_EMAIL} (plan {user['plan']}). A new API key, shown once:\n")
        print(f"  {key}\n")
        print("Try it:\n")
        print(
            f"  curl -s http://127.0.0.1:{port}/v1/images/generations \\\n"
            f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
            '    -d \'{"prompt": "a lighthouse at dawn", "size": "256x256"}\' \\\n'
            "    | python3 -c 'import sys,json,base64; "
            'sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["data"][0]["b64_json"]))\''
            " > image.png\n",
            flush=True,
        )
        return 0

    return _run(config, work)


def _credits_grant(config: Config, args: argparse.Namespace) -> int:
    from gateway.credits.cli import grant

    return asyncio.run(grant(config, args.email, args.amount, args.reason, args.idempotency_key))


_COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "serve": _serve,
    "worker": _serve,
    "migrate": _migrate,
    "check-config": _check_config,
    "demo": _demo,
}


def _dispatch_group(config: Config, args: argparse.Namespace) -> int:
    table = {
        ("users", "create"): _users_create,
        ("keys", "create"): _keys_create,
        ("keys", "revoke"): _keys_revoke,
        ("credits", "grant"): _credits_grant,
    }
    return table[(args.command, args.action)](config, args)


_COMMANDS["users"] = _dispatch_group
_COMMANDS["keys"] = _dispatch_group
_COMMANDS["credits"] = _dispatch_group

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
