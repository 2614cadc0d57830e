"""Health and readiness."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gateway.http.schemas.errors import ErrorDetail

__all__ = ["Health", "NotReady", "Readiness", "ReadyChecks"]


class Health(msgspec.Struct):
    status: Literal["ok"]


class ReadyChecks(msgspec.Struct):
    postgres: Literal["ok"]
    redis: Literal["ok"]


class Readiness(msgspec.Struct):
    status: Literal["ready"]
    checks: ReadyChecks


class NotReady(msgspec.Struct, kw_only=True):
    """Not ready, or draining: an error in OpenAI's shape, and what is down."""

    status: Literal["unavailable", "draining"]
    checks: Annotated[
        dict[str, str] | UnsetType,
        Meta(description="`ok`, or `unreachable: <error>`; absent when draining."),
    ] = UNSET
    error: ErrorDetail
