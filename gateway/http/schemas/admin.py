"""The admin API's bodies. A field left out of a change is left as it is (``UNSET``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gateway.http.schemas.base import Instant, RequestBody
from gateway.http.schemas.credits import CreditsBalance
from gateway.http.schemas.keys import Key
from gateway.http.schemas.usage import UsageDay

__all__ = [
    "DEFAULT_PAGE",
    "MAX_LIMIT",
    "MAX_PAGE",
    "AdminConfig",
    "AdminKey",
    "AdminKeyChange",
    "AdminUsage",
    "AdminUser",
    "AdminUserChange",
    "AdminUserDetail",
    "AdminUserList",
    "AuditEntry",
    "AuditLog",
    "CreatedUser",
    "KeyImages",
    "NewUser",
    "ResetLinkIssued",
    "UserImages",
    "admin_user_of",
]

MAX_LIMIT = 10**9
#: Rows of a page of users or audit entries: by default, and at most.
DEFAULT_PAGE, MAX_PAGE = 100, 1000
_IS_ACTIVE = "'is_active' must be true or false."
_OVERRIDE = Meta(description="`null` clears the override (the plan's limit applies).")
_LIMIT_MESSAGE = f" must be a whole number from 1 to {MAX_LIMIT} (or null)."


class AdminUserChange(RequestBody):
    plan: str | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET

    messages: ClassVar[Mapping[str, str]] = {
        "plan": "'plan' must be one of: {plans}.",
        "is_active": _IS_ACTIVE,
    }
    schema_extra: ClassVar[Mapping[str, Any]] = {
        "anyOf": [{"required": ["plan"]}, {"required": ["is_active"]}]
    }


class AdminKeyChange(RequestBody):
    requests_per_minute: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_LIMIT)] | UnsetType | None, _OVERRIDE
    ] = UNSET
    images_per_day: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_LIMIT)] | UnsetType | None, _OVERRIDE
    ] = UNSET
    is_active: bool | UnsetType = UNSET

    messages: ClassVar[Mapping[str, str]] = {
        "requests_per_minute": "'requests_per_minute'" + _LIMIT_MESSAGE,
        "images_per_day": "'images_per_day'" + _LIMIT_MESSAGE,
        "is_active": _IS_ACTIVE,
    }
    schema_extra: ClassVar[Mapping[str, Any]] = {
        "anyOf": [
            {"required": ["requests_per_minute"]},
            {"required": ["images_per_day"]},
            {"required": ["is_active"]},
        ]
    }


class AdminUser(msgspec.Struct):
    id: uuid.UUID
    email: str
    plan: str
    is_active: bool
    created_at: Instant
    updated_at: Instant


class AdminUserList(msgspec.Struct):
    data: list[AdminUser]
    #: More users follow: ask again with ``after`` = the last id of this page.
    has_more: bool


class AdminUserDetail(AdminUser):
    keys: list[Key]
    usage_today: Annotated[int, Meta(ge=0)]
    #: The user's balances, as ``GET /v1/credits`` answers them.
    credits: CreditsBalance


class AdminKey(Key):
    user_id: uuid.UUID
    requests_per_minute: int | None
    images_per_day: int | None


class UserImages(msgspec.Struct):
    user_id: uuid.UUID
    email: str
    images: Annotated[int, Meta(ge=0)]
    #: Credits charged for those images.
    credits: int = 0


class KeyImages(msgspec.Struct):
    api_key_id: uuid.UUID
    user_id: uuid.UUID
    images: Annotated[int, Meta(ge=0)]
    credits: int = 0


class ModelImages(msgspec.Struct):
    #: The model asked for ("" for usage recorded before models were).
    model: str
    images: Annotated[int, Meta(ge=0)]
    credits: int = 0


class AdminUsage(msgspec.Struct):
    start: dt.date
    end: dt.date
    users: Annotated[list[UserImages], Meta(description="Most images first.")]
    keys: Annotated[list[KeyImages], Meta(description="The top keys: most images first.")]
    total: Annotated[int, Meta(ge=0)]
    models: Annotated[list[ModelImages], Meta(description="Most images first.")] = []
    #: Credits charged for all the images.
    credits: int = 0
    #: With ``group_by`` (day, key or model): the rows summed that way; else null.
    data: list[UsageDay] | None = None


class AuditEntry(msgspec.Struct):
    id: uuid.UUID
    actor: str
    action: str
    target_id: uuid.UUID
    details: dict[str, Any]
    created_at: Instant


class AuditLog(msgspec.Struct):
    data: Annotated[list[AuditEntry], Meta(description="Newest first.")]
    #: Older entries follow: ask again with ``after`` = the last id of this page.
    has_more: bool


class NewUser(RequestBody):
    email: Annotated[
        str,
        Meta(
            max_length=254,
            pattern=r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$",
            description="Trimmed and lower-cased.",
            extra_json_schema={"format": "email"},
        ),
    ]
    plan: str | UnsetType = UNSET
    reset_link: Annotated[
        bool,
        Meta(description="Also make a one-time password-reset link (mailed if SMTP is set)."),
    ] = False

    messages: ClassVar[Mapping[str, str]] = {
        "email": "'email' must be a valid email address.",
        "plan": "'plan' must be one of: {plans}.",
        "reset_link": "'reset_link' must be true or false.",
    }


class ResetLinkIssued(msgspec.Struct):
    url: Annotated[str, Meta(description="`/console/reset?token=...`: works once.")]
    expires_at: Instant
    #: Sent to the user's email too (``email.smtp_url`` is set).
    emailed: bool


class CreatedUser(AdminUser):
    reset_link: ResetLinkIssued | None


class AdminConfig(msgspec.Struct):
    """The config in effect: as loaded at start-up or by the last reload (SIGHUP)."""

    #: SHA-256 (hex) of the whole config, secrets included (``gateway_config_info``).
    hash: str
    #: When it was loaded.
    loaded_at: Instant
    #: Every key, secrets shown as ``********`` (empty when unset), URLs without passwords.
    config: dict[str, Any]


def admin_user_of(user: Mapping[str, Any]) -> AdminUser:
    return AdminUser(
        id=user["id"],
        email=user["email"],
        plan=user["plan"],
        is_active=user["is_active"],
        created_at=user["created_at"],
        updated_at=user["updated_at"],
    )
