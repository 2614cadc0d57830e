"""Register, log in, the caller's account."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from gateway.http.schemas.base import Instant, RequestBody

__all__ = [
    "MAX_EMAIL",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "Credentials",
    "Login",
    "Me",
    "PasswordChange",
    "PasswordReset",
    "PlanLimits",
    "TodayUsage",
    "Token",
    "User",
]

MIN_PASSWORD, MAX_PASSWORD = 8, 128
MAX_EMAIL = 254
EMAIL_MESSAGE = "'email' must be a valid email address."


class Credentials(RequestBody):
    email: Annotated[
        str,
        Meta(
            max_length=MAX_EMAIL,
            pattern=r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$",
            description="Trimmed and lower-cased.",
            extra_json_schema={"format": "email"},
        ),
    ]
    password: Annotated[str, Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]

    messages: ClassVar[Mapping[str, str]] = {
        "email": EMAIL_MESSAGE,
        "password": f"'password' must be a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters.",
    }


class Login(RequestBody):
    """Any strings: a wrong email or password is a 401, not a 400."""

    email: str
    password: str

    messages: ClassVar[Mapping[str, str]] = {
        "email": "'email' and 'password' are required strings.",
        "password": "'email' and 'password' are required strings.",
    }
    names_field: ClassVar[bool] = False


_NEW_PASSWORD = Annotated[str, Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
_NEW_PASSWORD_MESSAGE = (
    f"'new_password' must be a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters."
)


class PasswordChange(RequestBody):
    current_password: Annotated[str, Meta(max_length=1024)]
    new_password: _NEW_PASSWORD

    messages: ClassVar[Mapping[str, str]] = {
        "current_password": "'current_password' is a required string.",
        "new_password": _NEW_PASSWORD_MESSAGE,
    }


class PasswordReset(RequestBody):
    token: Annotated[
        str, Meta(min_length=1, max_length=256, description="The `token` of the reset link.")
    ]
    new_password: _NEW_PASSWORD

    messages: ClassVar[Mapping[str, str]] = {
        "token": "'token' must be the token of a password-reset link.",
        "new_password": _NEW_PASSWORD_MESSAGE,
    }


class User(msgspec.Struct):
    id: uuid.UUID
    email: str
    plan: str
    created_at: Instant


class Token(msgspec.Struct):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: Annotated[int, Meta(ge=1, description="Seconds.")]


class PlanLimits(msgspec.Struct):
    requests_per_minute: Annotated[int, Meta(ge=0)]
    images_per_day: Annotated[int, Meta(ge=0)]
    max_images_per_request: Annotated[int, Meta(ge=0)]


class TodayUsage(msgspec.Struct):
    today: Annotated[int, Meta(ge=0)]


class Me(msgspec.Struct):
    id: uuid.UUID
    email: str
    plan: str
    is_active: bool
    created_at: Instant
    limits: PlanLimits
    usage: TodayUsage
