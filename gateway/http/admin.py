"""The admin API for operators: users, keys and credits. Bearer ``admin.token``; off when
unset.

Every change is written to ``admin_audit_log`` and logged (who, what, when), and takes
effect in every gateway process at once (the affected keys are invalidated). The work
is :mod:`gateway.accounts.operators`'s, shared with the console and the CLI.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import re
import uuid
from typing import Any

import msgspec
from aiohttp import web
from msgspec import UNSET

from gateway import errors
from gateway.accounts import operators
from gateway.accounts.mail import MailError
from gateway.accounts.recovery import ResetLink, mail_reset_link
from gateway.credits.changes import change_user_credits
from gateway.db import keys as db_keys
from gateway.db import users as db_users
from gateway.db.pool import connection
from gateway.http.accounts import today_images
from gateway.http.body import decode_body
from gateway.http.credits_api import balance_of
from gateway.http.responses import json_response
from gateway.http.schemas.admin import (
    DEFAULT_PAGE,
    MAX_PAGE,
    AdminConfig,
    AdminKey,
    AdminKeyChange,
    AdminUserChange,
    AdminUserDetail,
    AdminUserList,
    CreatedUser,
    NewUser,
    ResetLinkIssued,
    admin_user_of,
)
from gateway.http.schemas.credits import CreditChange
from gateway.http.schemas.keys import key_of
from gateway.http.token_auth import bearer_token
from gateway.http.validate import has_control_characters, normal_email, path_uuid
from gateway.reload import RELOADER, masked_config
from gateway.services import SERVICES, Services

__all__ = [
    "authorise",
    "change_credits",
    "config_in_effect",
    "create_user",
    "find_users",
    "get_user",
    "issue_reset_link",
    "no_such_admin_route",
    "page_limit",
    "patch_key",
    "patch_user",
    "query_uuid",
]

log = logging.getLogger("gateway.admin")

ACTOR = "admin-token"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def authorise(request: web.Request) -> Services:
    services = request.app[SERVICES]
    expected = services.config.admin.token
    if not expected:
        raise errors.NotFound()
    given = bearer_token(request)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise errors.InvalidToken("The admin token is not valid.")
    return services


def page_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise errors.InvalidRequest(
            f"'limit' must be a whole number from 1 to {MAX_PAGE}.", param="limit"
        )
    return int(raw)


def query_uuid(request: web.Request, name: str) -> uuid.UUID | None:
    """The id in query parameter ``name``; ``None`` when it is absent or empty (no filter,
    as a form with the field left blank sends); the 400 naming it for anything else."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.InvalidRequest(f"'{name}' must be an id (a UUID).", param=name) from None


def _given(change: AdminUserChange | AdminKeyChange) -> dict[str, Any]:
    """The fields a change sends (``null`` included), by name."""
    return {
        name: value for name, value in msgspec.structs.asdict(change).items() if value is not UNSET
    }


def _text_query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and has_control_characters(value):
        raise errors.InvalidRequest(f"'{name}' must not contain control characters.", param=name)
    return value


async def find_users(request: web.Request) -> web.Response:
    services = authorise(request)
    email = _text_query(request, "email")
    email_like = _text_query(request, "email_like")
    limit = page_limit(request)
    if request.query.get("after") == "":  # an id or nothing, as documented; not blank
        raise errors.InvalidRequest("'after' must be the id of a user.", param="after")
    after = query_uuid(request, "after")
    async with connection(services.pool) as conn:
        if email is not None:
            user = await db_users.find_user_by_email(conn, email.strip().lower())
            users = [user] if user is not None else []
            return json_response(
                AdminUserList(data=[admin_user_of(u) for u in users], has_more=False)
            )
        found = await db_users.list_users(
            conn, limit + 1, after=after, email_like=email_like.strip() if email_like else None
        )
    if found is None:
        raise errors.InvalidRequest("'after' must be the id of a user.", param="after")
    return json_response(
        AdminUserList(data=[admin_user_of(u) for u in found[:limit]], has_more=len(found) > limit)
    )


async def get_user(request: web.Request) -> web.Response:
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
        if user is None:
            raise errors.NotFound("No such user.")
        keys = await db_keys.keys_of_user(conn, user_id)
        counts = await today_images(services, conn, user_id, [k["id"] for k in keys])
    plan = services.config.plans.get(user["plan"])
    credits = await services.credits.read(
        str(user_id), plan.monthly_credits if plan is not None else None
    )
    return json_response(
        AdminUserDetail(
            **msgspec.structs.asdict(admin_user_of(user)),
            keys=[key_of(k) for k in keys],
            usage_today=sum(counts.values()),
            credits=balance_of(credits),
        )
    )


async def change_credits(request: web.Request) -> web.Response:
    """``POST /admin/users/{id}/credits``: add (or take away) purchased credits, once per
    ``Idempotency-Key``; audited."""
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    key = request.headers.get("Idempotency-Key")
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise errors.InvalidRequest(
            "Send an 'Idempotency-Key' header (1 to 255 visible ASCII characters): a retry"
            " with the same key changes the credits once.",
            param="Idempotency-Key",
        )
    body = await decode_body(request, CreditChange, services.config.server)
    if body.amount == 0:
        raise errors.InvalidRequest(CreditChange.messages["amount"], param="amount")
    async with connection(services.pool) as conn:
        user = await db_users.get_user(conn, user_id)
    if user is None:
        raise errors.NotFound("No such user.")
    try:
        replayed = await change_user_credits(
            services.pool, services.credits, user_id, body.amount, body.reason, key, ACTOR
        )
        plan = services.config.plans.get(user["plan"])
        credits = await services.credits.read(
            str(user_id), plan.monthly_credits if plan is not None else None
        )
    except errors.GatewayError:
        raise
    except Exception as exc:
        raise errors.ServiceUnavailable("The credits could not be changed. Retry.") from exc
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_response(balance_of(credits), headers=headers)


async def _issued(services: Services, email: str, link: ResetLink) -> ResetLinkIssued:
    emailed = False
    if services.mailer is not None:
        try:
            await mail_reset_link(services.mailer, email, link)
            emailed = True
        except MailError:
            log.warning("the password-reset mail to a user failed", exc_info=True)
    return ResetLinkIssued(url=link.url, expires_at=link.expires_at, emailed=emailed)


def _now(services: Services) -> dt.datetime:
    return dt.datetime.fromtimestamp(services.wall_clock(), dt.UTC)


async def create_user(request: web.Request) -> web.Response:
    services = authorise(request)
    plans = {"plans": ", ".join(services.config.plans)}
    body = await decode_body(request, NewUser, services.config.server, plans)
    email = normal_email(body.email, NewUser.messages["email"])
    plan = services.config.default_plan if body.plan is UNSET else body.plan
    if plan not in services.config.plans:
        raise errors.InvalidRequest(NewUser.messages["plan"].format_map(plans), param="plan")
    async with connection(services.pool) as conn:
        user = await operators.create_account(conn, email=email, plan=plan, actor=ACTOR)
        link = None
        if body.reset_link:
            link = await operators.reset_link(
                conn,
                user["id"],
                actor=ACTOR,
                now=_now(services),
                public_url=services.config.email.public_url,
            )
    issued = await _issued(services, email, link) if link is not None else None
    return json_response(
        CreatedUser(**msgspec.structs.asdict(admin_user_of(user)), reset_link=issued),
        status=201,
    )


async def issue_reset_link(request: web.Request) -> web.Response:
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    async with connection(services.pool) as conn:
        link = await operators.reset_link(
            conn,
            user_id,
            actor=ACTOR,
            now=_now(services),
            public_url=services.config.email.public_url,
        )
        user = await db_users.get_user(conn, user_id)
    assert user is not None  # reset_link raised NotFound otherwise
    return json_response(await _issued(services, user["email"], link), status=201)


async def patch_user(request: web.Request) -> web.Response:
    services = authorise(request)
    user_id = path_uuid(request.match_info["id"])
    plans = {"plans": ", ".join(services.config.plans)}
    body = await decode_body(request, AdminUserChange, services.config.server, plans)
    changes: dict[str, Any] = _given(body)
    if body.plan is not UNSET and body.plan not in services.config.plans:
        raise errors.InvalidRequest(
            AdminUserChange.messages["plan"].format_map(plans), param="plan"
        )
    if not changes:
        raise errors.InvalidRequest("Nothing to change: send 'plan' and/or 'is_active'.")
    async with connection(services.pool) as conn:
        user = await operators.change_user(
            conn, user_id, changes, actor=ACTOR, invalidate=services.keys.invalidate
        )
    return json_response(admin_user_of(user))


async def patch_key(request: web.Request) -> web.Response:
    services = authorise(request)
    key_id = path_uuid(request.match_info["id"])
    body = await decode_body(request, AdminKeyChange, services.config.server)
    changes = _given(body)
    if not changes:
        raise errors.InvalidRequest(
            "Nothing to change: send 'requests_per_minute', 'images_per_day' or 'is_active'."
        )
    async with connection(services.pool) as conn:
        row = await operators.change_key(
            conn, key_id, changes, actor=ACTOR, invalidate=services.keys.invalidate
        )
    return json_response(
        AdminKey(
            **msgspec.structs.asdict(key_of(row)),
            user_id=row["user_id"],
            requests_per_minute=row["requests_per_minute"],
            images_per_day=row["images_per_day"],
        )
    )


async def no_such_admin_route(request: web.Request) -> web.Response:
    """Any other method or path under /admin: 404 (when off, nothing hints it exists)."""
    authorise(request)
    raise errors.NotFound()


async def config_in_effect(request: web.Request) -> web.Response:
    """``GET /admin/config``: the config in effect (secrets masked), its hash, since when."""
    services = authorise(request)
    reloader = request.app[RELOADER]
    return json_response(
        AdminConfig(
            hash=reloader.hash,
            loaded_at=dt.datetime.fromtimestamp(reloader.loaded_at, dt.UTC),
            config=masked_config(services.config),
        )
    )
