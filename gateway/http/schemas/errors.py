"""The error envelope: every error, in OpenAI's shape."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.errors import GatewayError

__all__ = ["ERROR_TYPES", "Error", "ErrorDetail", "error_envelope", "error_example"]

ERROR_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "rate_limit_error",
    "insufficient_quota",
    "server_error",
)


class ErrorDetail(msgspec.Struct, forbid_unknown_fields=True):
    message: Annotated[str, Meta(min_length=1)]
    type: Annotated[str, Meta(extra_json_schema={"enum": list(ERROR_TYPES)})]
    param: Annotated[str | None, Meta(description="The request field at fault, if one is.")]
    code: str


class Error(msgspec.Struct):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail


def error_envelope(error: GatewayError) -> Error:
    return Error(ErrorDetail(error.message, error.type, error.param, error.code))


def error_example(kind: type[GatewayError], param: str | None = None) -> dict[str, Any]:
    """``kind``'s default answer, as the API sends it (for the API description)."""
    detail = ErrorDetail(kind.default_message, kind.type, param, kind.code)
    return {"error": msgspec.structs.asdict(detail)}
