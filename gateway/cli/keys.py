"""``gateway keys``: create, list, set, revoke."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from typing import Any

from gateway import errors
from gateway.accounts import operators
from gateway.cli.common import (
    ACTOR,
    CliError,
    add_json,
    emit_json,
    invalidator,
    normalise_email,
    print_table,
    run,
    utc_now,
)
from gateway.config import Config
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.http.schemas.admin import MAX_LIMIT
from gateway.keys.issue import issue_key, issue_key_within_cap

__all__ = ["KEY_HEADERS", "add_parsers", "key_json", "key_rows", "key_state"]

KEY_HEADERS = ("ID", "PREFIX", "NAME", "STATE", "RPM", "IMAGES/DAY", "CREATED", "LAST USED")
#: ``--requests-per-minute plan``: no override, the plan's limit applies.
_PLAN = "plan"


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    keys = sub.add_parser("keys", parents=[common], help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", parents=[common], help="create a key (printed once)")
    create.add_argument("--email", required=True, help="the owner's email")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument(
        "--force", action="store_true", help="even past auth.max_keys_per_user active keys"
    )
    add_json(create)
    create.set_defaults(handler=_create)

    listing = keys.add_parser("list", parents=[common], help="a user's keys (never the keys)")
    listing.add_argument("--email", required=True, help="the owner's email")
    add_json(listing)
    listing.set_defaults(handler=_list)

    change = keys.add_parser("set", parents=[common], help="override a key's limits")
    change.add_argument("id", help="the key's id")
    for option in ("--requests-per-minute", "--images-per-day"):
        change.add_argument(
            option,
            type=_limit,
            default=argparse.SUPPRESS,
            metavar=f"N|{_PLAN}",
            help=f"the new limit; '{_PLAN}': no override, the plan's",
        )
    add_json(change)
    change.set_defaults(handler=_set)

    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key everywhere")
    revoke.add_argument("id", help="the key's id")
    revoke.set_defaults(handler=_revoke)


def _limit(value: str) -> int | None:
    if value == _PLAN:
        return None
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_LIMIT:
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1 to {MAX_LIMIT}")


def _key_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CliError(f"{value!r} is not a key id", 2) from None


def key_state(row: dict[str, Any], now: dt.datetime) -> str:
    """active, rotating (its successor exists; it works until its grace ends), expired,
    rotated or revoked."""
    if not row["is_active"]:
        return "rotated" if row["rotated_to"] is not None else "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "rotating" if row["rotated_to"] is not None else "active"


def key_json(row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    fields = ("id", "prefix", "name", "created_at", "last_used_at", "expires_at")
    return {
        **{name: row[name] for name in fields},
        "state": key_state(row, now),
        "requests_per_minute": row["requests_per_minute"],
        "images_per_day": row["images_per_day"],
    }


def key_rows(rows: list[dict[str, Any]], now: dt.datetime) -> list[tuple[Any, ...]]:
    return [
        (
            r["id"],
            r["prefix"],
            r["name"] or "-",
            key_state(r, now),
            r["requests_per_minute"] or _PLAN,
            r["images_per_day"] or _PLAN,
            r["created_at"],
            r["last_used_at"],
        )
        for r in rows
    ]


def _create(config: Config, args: argparse.Namespace) -> int:
    async def work(conn: Any) -> int:
        user = await db_users.find_user_by_email(conn, normalise_email(args.email))
        if user is None:
            raise CliError(f"no user with email {args.email!r}")
        prefix = config.keys.prefix
        if args.force:
            key, row = await issue_key(conn, user_id=user["id"], prefix=prefix, name=args.name)
        else:
            try:
                key, row = await issue_key_within_cap(
                    conn,
                    user_id=user["id"],
                    prefix=prefix,
                    name=args.name,
                    max_keys=config.auth.max_keys_per_user,
                )
            except errors.TooManyKeys as exc:
                raise CliError(f"{exc.message} Or create it anyway with --force.") from None
        if args.json:
            emit_json({"id": row["id"], "key": key, "prefix": row["prefix"], "name": row["name"]})
            return 0
        print(f"key id: {row['id']}", file=sys.stderr)
        print("This is the only time the key is shown. Store it now:", file=sys.stderr)
        print(key)
        return 0

    return run(config, work)


def _list(config: Config, args: argparse.Namespace) -> int:
    async def work(conn: Any) -> int:
        user = await db_users.find_user_by_email(conn, normalise_email(args.email))
        if user is None:
            raise CliError(f"no user with email {args.email!r}")
        rows = await db_keys.keys_with_limits_of_user(conn, user["id"])
        now = utc_now()
        if args.json:
            emit_json([key_json(r, now) for r in rows])
        else:
            print_table(KEY_HEADERS, key_rows(rows, now))
        return 0

    return run(config, work)


def _set(config: Config, args: argparse.Namespace) -> int:
    key_id = _key_id(args.id)
    changes = {
        name: value
        for name, value in vars(args).items()
        if name in ("requests_per_minute", "images_per_day")
    }
    if not changes:
        raise CliError("nothing to change: give --requests-per-minute and/or --images-per-day", 2)

    async def work(conn: Any) -> int:
        try:
            row = await operators.change_key(
                conn, key_id, changes, actor=ACTOR, invalidate=invalidator(config)
            )
        except errors.NotFound:
            raise CliError(f"no key with id {key_id}") from None
        if args.json:
            emit_json(key_json(row, utc_now()) | {"user_id": row["user_id"]})
            return 0
        rpm = row["requests_per_minute"] or _PLAN
        ipd = row["images_per_day"] or _PLAN
        print(f"key {key_id} requests_per_minute={rpm} images_per_day={ipd}")
        return 0

    return run(config, work)


def _revoke(config: Config, args: argparse.Namespace) -> int:
    key_id = _key_id(args.id)

    async def work(conn: Any) -> int:
        key_hash = await db_keys.revoke_key(conn, key_id)
        if key_hash is None:
            raise CliError(f"no key with id {key_id}")
        await invalidator(config)([key_hash])
        print(f"revoked {key_id}")
        return 0

    return run(config, work)
