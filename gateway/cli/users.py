"""``gateway users``: create, list, show, set, reset-password."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.accounts import operators
from gateway.accounts.mail import Mailer, MailError
from gateway.accounts.passwords import PasswordHasher
from gateway.accounts.recovery import ResetLink, mail_reset_link
from gateway.cli.common import (
    ACTOR,
    CliError,
    add_json,
    emit_json,
    invalidator,
    normalise_email,
    parse_bool,
    print_table,
    redis_client,
    run,
    state_of_user,
    utc_now,
)
from gateway.cli.keys import KEY_HEADERS, key_json, key_rows, key_state
from gateway.config import Config
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.http.schemas.accounts import EMAIL_MESSAGE, MAX_PASSWORD, MIN_PASSWORD
from gateway.http.validate import normal_email
from gateway.redis.layout import RedisLayout
from gateway.usage.report import usage_by_key

__all__ = ["add_parsers", "find_user"]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    users = sub.add_parser("users", parents=[common], help="manage users").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", parents=[common], help="create a user")
    create.add_argument("--email", required=True)
    create.add_argument("--plan", help="plan name (default: default_plan)")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the user's password from stdin"
    )
    create.add_argument(
        "--reset-link", action="store_true", help="also print a one-time password-reset link"
    )
    add_json(create)
    create.set_defaults(handler=_create)

    listing = users.add_parser("list", parents=[common], help="list users, oldest first")
    listing.add_argument("--email-like", help="only emails containing this (any case)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    add_json(listing)
    listing.set_defaults(handler=_list)

    show = users.add_parser("show", parents=[common], help="a user, its keys, today's images")
    show.add_argument("email")
    add_json(show)
    show.set_defaults(handler=_show)

    change = users.add_parser("set", parents=[common], help="change a user's plan or state")
    change.add_argument("email")
    change.add_argument("--plan", help="the new plan")
    change.add_argument(
        "--active", type=parse_bool, metavar="true|false", help="false disables the user"
    )
    add_json(change)
    change.set_defaults(handler=_set)

    reset = users.add_parser(
        "reset-password", parents=[common], help="print a one-time password-reset link"
    )
    reset.add_argument("--email", required=True)
    add_json(reset)
    reset.set_defaults(handler=_reset_password)


def _check_plan(config: Config, plan: str) -> None:
    if plan not in config.plans:
        raise CliError(f"unknown plan {plan!r} (known: {', '.join(config.plans)})", 2)


async def find_user(conn: Any, email: str) -> dict[str, Any]:
    user = await db_users.find_user_by_email(conn, normalise_email(email))
    if user is None:
        raise CliError(f"no user with email {email!r}")
    return user


def _user_json(user: dict[str, Any]) -> dict[str, Any]:
    fields = ("id", "email", "plan", "is_active", "created_at", "updated_at")
    return {name: user[name] for name in fields}


def _read_password() -> str:
    password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise CliError(f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", 2)
    return password


async def _handed_over(config: Config, email: str, link: ResetLink) -> dict[str, Any]:
    emailed = False
    if config.email.smtp_url:
        try:
            await mail_reset_link(Mailer(config.email), email, link)
        except MailError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        else:
            emailed = True
    return {"url": link.url, "expires_at": link.expires_at, "emailed": emailed}


def _print_link(email: str, issued: dict[str, Any]) -> None:
    expires = issued["expires_at"].strftime("%Y-%m-%d %H:%M:%SZ")
    note = f", and mailed to {email}" if issued["emailed"] else ""
    print(f"password-reset link for {email} (one use, until {expires}{note}):", file=sys.stderr)
    print(issued["url"])


def _create(config: Config, args: argparse.Namespace) -> int:
    plan = args.plan or config.default_plan
    _check_plan(config, plan)
    email = normal_email(args.email, EMAIL_MESSAGE)
    password = _read_password() if args.password_stdin else None

    async def work(conn: Any) -> int:
        password_hash = None
        if password is not None:
            password_hash = await PasswordHasher(config.auth.bcrypt_cost).hash(password)
        user = await operators.create_account(
            conn, email=email, plan=plan, actor=ACTOR, password_hash=password_hash
        )
        issued = None
        if args.reset_link:
            link = await operators.reset_link(
                conn, user["id"], actor=ACTOR, now=utc_now(), public_url=config.email.public_url
            )
            issued = await _handed_over(config, email, link)
        if args.json:
            emit_json({**_user_json(user), "reset_link": issued})
            return 0
        print(f"user {user['id']} {user['email']} plan={user['plan']}")
        if issued is not None:
            _print_link(email, issued)
        return 0

    return run(config, work)


def _list(config: Config, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1", 2)

    async def work(conn: Any) -> int:
        users = await db_users.list_users(conn, args.limit, email_like=args.email_like)
        assert users is not None  # no cursor given
        if args.json:
            emit_json([_user_json(u) for u in users])
            return 0
        print_table(
            ("ID", "EMAIL", "PLAN", "STATE", "CREATED"),
            [(u["id"], u["email"], u["plan"], state_of_user(u), u["created_at"]) for u in users],
        )
        return 0

    return run(config, work)


def _show(config: Config, args: argparse.Namespace) -> int:
    async def work(conn: Any) -> int:
        user = await find_user(conn, args.email)
        keys = await db_keys.keys_with_limits_of_user(conn, user["id"])
        now = utc_now()
        today = now.date()
        async with redis_client(config) as redis:
            layout = RedisLayout(config.redis.key_prefix)
            usage = await usage_by_key(
                conn, redis, layout, today, today, today=today, user_id=user["id"]
            )
        images_today = sum(row["images"] for row in usage)
        if args.json:
            emit_json(
                {
                    **_user_json(user),
                    "images_today": images_today,
                    "keys": [key_json(k, now) for k in keys],
                }
            )
            return 0
        plan = config.plans.get(user["plan"])
        limits = (
            f" ({plan.requests_per_minute}/min, {plan.images_per_day} images/day)" if plan else ""
        )
        print(f"id:           {user['id']}")
        print(f"email:        {user['email']}")
        print(f"plan:         {user['plan']}{limits}")
        print(f"state:        {state_of_user(user)}")
        print(f"created:      {user['created_at'].isoformat()}")
        print(f"images today: {images_today}")
        print(f"keys:         {sum(key_state(k, now) == 'active' for k in keys)} active")
        if keys:
            print()
            print_table(KEY_HEADERS, key_rows(keys, now))
        return 0

    return run(config, work)


def _set(config: Config, args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.plan is not None:
        _check_plan(config, args.plan)
        changes["plan"] = args.plan
    if args.active is not None:
        changes["is_active"] = args.active
    if not changes:
        raise CliError("nothing to change: give --plan and/or --active", 2)

    async def work(conn: Any) -> int:
        user = await find_user(conn, args.email)
        user = await operators.change_user(
            conn, user["id"], changes, actor=ACTOR, invalidate=invalidator(config)
        )
        if args.json:
            emit_json(_user_json(user))
            return 0
        print(f"user {user['id']} {user['email']} plan={user['plan']} {state_of_user(user)}")
        return 0

    return run(config, work)


def _reset_password(config: Config, args: argparse.Namespace) -> int:
    async def work(conn: Any) -> int:
        user = await find_user(conn, args.email)
        link = await operators.reset_link(
            conn, user["id"], actor=ACTOR, now=utc_now(), public_url=config.email.public_url
        )
        issued = await _handed_over(config, user["email"], link)
        if args.json:
            emit_json(issued)
        else:
            _print_link(user["email"], issued)
        return 0

    return run(config, work)
