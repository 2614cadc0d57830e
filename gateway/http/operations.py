"""Every operation of the gateway, declared once: the router (:mod:`gateway.http.routes`)
serves this table and the API description (:mod:`gateway.http.openapi`) is built from it."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway import errors
from gateway.http import (
    accounts,
    admin,
    admin_reports,
    credits_api,
    jobs_api,
    keys_api,
    sessions_api,
    webhooks_api,
)
from gateway.http.contract import (
    ACCOUNT_DISABLED,
    INVALID_REQUEST,
    NOT_FOUND,
    SERVICE_UNAVAILABLE,
    THROTTLED,
    Answer,
    Auth,
    DocFacts,
    Failure,
    Operation,
    Param,
)
from gateway.http.docs import openapi_json
from gateway.http.edits import create_variations, edit_images
from gateway.http.files import FILES_ROUTE, serve_file
from gateway.http.health import healthz, list_models, metrics, readyz
from gateway.http.images import generate_images
from gateway.http.ratelimit_headers import RATE_LIMIT_HEADERS
from gateway.http.schemas import accounts as account_types
from gateway.http.schemas import admin as admin_types
from gateway.http.schemas import credits as credit_types
from gateway.http.schemas import edits as edit_types
from gateway.http.schemas import health as health_types
from gateway.http.schemas import images as image_types
from gateway.http.schemas import jobs as job_types
from gateway.http.schemas import keys as key_types
from gateway.http.schemas import usage as usage_types
from gateway.http.schemas import webhooks as webhook_types
from gateway.http.schemas.errors import Error
from gateway.http.usage_api import read_usage
from gateway.http.usage_export import export_usage

__all__ = ["OPERATIONS", "RATE_LIMIT_HEADERS"]

_UUID = {"type": "string", "format": "uuid"}
#: A query filter by id: empty is no filter (as a form with the field left blank sends).
_UUID_FILTER = {"type": "string", "anyOf": [{"format": "uuid"}, {"maxLength": 0}]}
_DATE = {"type": "string", "format": "date"}
_ID = Param("id", "path", _UUID, "A UUID; anything else is 404.", required=True)
_A_KEY_ID = "0b7e6f1c-3d2a-4e59-8c1b-2f4a6d8e9c01"
_A_USER_ID = "6a1f3c9e-2b7d-4f80-a5c4-1e9d8b7c6a50"
_CREDENTIALS = {"email": "ada@example.com", "password": "correct horse battery"}


def _token_example(facts: DocFacts) -> dict[str, Any]:
    return {
        "access_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6Ii4uLiJ9.e30.c2ln",
        "token_type": "bearer",
        "expires_in": facts.config.auth.token_ttl_seconds,
    }


def _page_params(noun: str) -> tuple[Param, ...]:
    return (
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": admin_types.MAX_PAGE},
            f"{noun} per page (default {admin_types.DEFAULT_PAGE}).",
        ),
        Param(
            "after",
            "query",
            _UUID_FILTER,
            "The last id of the previous page (`has_more`); empty: the first page.",
        ),
    )


def _session_operations() -> tuple[Operation, ...]:
    return (
        Operation(
            "POST",
            "/v1/auth/logout",
            sessions_api.logout,
            "logout",
            "accounts",
            "Revoke the access token this request carries",
            Auth.ACCESS_TOKEN,
            answers=(Answer(204, "Revoked: the token is refused from now on (401)."),),
            description="Other tokens of the account keep working; change the password to"
            " end them all.",
        ),
        Operation(
            "POST",
            "/v1/auth/password",
            sessions_api.change_password,
            "changePassword",
            "accounts",
            "Change the password; every earlier access token stops working",
            Auth.ACCESS_TOKEN,
            answers=(
                Answer(
                    200,
                    "A new access token (the one sent is revoked with all the others).",
                    account_types.Token,
                    _token_example,
                ),
            ),
            failures=(
                Failure(
                    403,
                    (errors.AccountDisabled, errors.WrongPassword),
                    "`current_password` is wrong (`wrong_password`), or the account is disabled.",
                    param="current_password",
                ),
                THROTTLED,
            ),
            body=account_types.PasswordChange,
            body_example={
                "current_password": "correct horse battery",
                "new_password": "battery staple horse correct",
            },
            description="Wrong current passwords count as failed logins of the account.",
        ),
        Operation(
            "POST",
            "/v1/auth/password-reset",
            sessions_api.reset_password,
            "resetPassword",
            "accounts",
            "Set a new password with a one-time reset link's token",
            Auth.NONE,
            answers=(Answer(204, "Set; every earlier access token stops working."),),
            failures=(
                Failure(
                    400,
                    (errors.InvalidRequest, errors.InvalidResetToken),
                    "A bad field, or the link was used already or is over an hour old"
                    " (`invalid_reset_token`).",
                    param="token",
                ),
                THROTTLED,
            ),
            body=account_types.PasswordReset,
            body_example={
                "token": "Xq3Z9pLm2Rt7Vw4Ks8Dn1Bc6Fh0Jg5Ya7Ue2Qo",
                "new_password": "a new passphrase",
            },
            description="The link (`/console/reset?token=...`) comes from `gateway users"
            " reset-password` or `POST /admin/users/{id}/password-reset`; it works once,"
            " within an hour. Limited per client IP.",
        ),
    )


def _admin_account_operations() -> tuple[Operation, ...]:
    return (
        Operation(
            "POST",
            "/admin/users",
            admin.create_user,
            "adminCreateUser",
            "admin",
            "Create a user, with a password-reset link if asked",
            Auth.ADMIN_TOKEN,
            answers=(Answer(201, "The user (and the link).", admin_types.CreatedUser),),
            failures=(Failure(409, (errors.EmailTaken,), "A user with this email exists."),),
            body=admin_types.NewUser,
            body_example={"email": "ada@example.com", "reset_link": True},
            description="The user has no password until the link is used. Audited.",
        ),
        Operation(
            "POST",
            "/admin/users/{id}/password-reset",
            admin.issue_reset_link,
            "adminPasswordReset",
            "admin",
            "A one-time password-reset link for a user",
            Auth.ADMIN_TOKEN,
            answers=(
                Answer(
                    201,
                    "The link: one use, within an hour; mailed too when `email.smtp_url` is set.",
                    admin_types.ResetLinkIssued,
                ),
            ),
            parameters=(_ID,),
            description="Audited (never the link itself).",
        ),
        Operation(
            "GET",
            "/admin/audit",
            admin_reports.read_audit_log,
            "adminAuditLog",
            "admin",
            "The audit log, newest first",
            Auth.ADMIN_TOKEN,
            answers=(Answer(200, "A page of entries.", admin_types.AuditLog),),
            failures=(INVALID_REQUEST,),
            parameters=(
                Param(
                    "actor",
                    "query",
                    {"type": "string"},
                    "Only changes by this actor (`admin-token`, `cli`).",
                ),
                Param(
                    "target",
                    "query",
                    _UUID_FILTER,
                    "Only changes to this user or key; empty: every change.",
                ),
                *_page_params("Entries"),
            ),
        ),
    )


_IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "1 to 255 visible ASCII characters, the caller's own for `idempotency.ttl_hours`: a"
    " repeat of the same request gets the first answer again (`Idempotent-Replayed: true`),"
    " with no second upstream call and no second charge. 5xx, 409 and 429 answers are not"
    " kept, so their retry runs.",
)
#: What an image request's model and admission can answer (generations and jobs alike).
_ADMISSION_FAILURES = (
    Failure(
        404,
        (errors.ModelNotFound,),
        "The model is not one of `GET /v1/models`.",
        param="model",
    ),
    Failure(
        429,
        (errors.RateLimitExceeded, errors.DailyQuotaExceeded),
        "Over the key's rate limit (requests in any 60 s) or its daily image quota.",
        headers=(*RATE_LIMIT_HEADERS, "Retry-After"),
    ),
    Failure(
        402,
        (errors.InsufficientCredits,),
        "The user's credits (this month's allowance and purchased ones) do not cover `n`"
        " images at the model's price; the message says the balance and the price.",
        headers=("x-credits-remaining",),
        param="n",
    ),
)
_IDEMPOTENCY_FAILURES = (
    Failure(
        409,
        (errors.IdempotencyKeyInUse,),
        "A request with this `Idempotency-Key` is still running: retry after `Retry-After`.",
        headers=("Retry-After",),
        param="Idempotency-Key",
    ),
    Failure(
        422,
        (errors.IdempotencyKeyReused,),
        "This `Idempotency-Key` was used with a different request (method, path or body).",
        param="Idempotency-Key",
    ),
)


def _generation_example(facts: DocFacts) -> dict[str, Any]:
    return {"prompt": "a lighthouse at dawn", "n": 1, "size": facts.example_size}


def _generation(path: str, operation_id: str, alias: str) -> Operation:
    return Operation(
        "POST",
        path,
        generate_images,
        operation_id,
        "images",
        "Generate images" + alias,
        Auth.API_KEY,
        answers=(
            Answer(
                200,
                "The images (base64 in the request's `output_format`, PNG by default, or links)."
                " Only images delivered are charged.",
                image_types.GenerationResponse,
                lambda facts: {
                    "created": 1767225600,
                    "model": facts.config.default_model,
                    "data": [{"b64_json": "iVBORw0KGgo=", "revised_prompt": None}],
                    "usage": {"images": 1},
                },
                headers=(
                    *RATE_LIMIT_HEADERS,
                    "X-Gateway-Backend",
                    "Server-Timing",
                    "x-credits-remaining",
                ),
            ),
            Answer(
                200,
                "With `stream: true`: the images as Server-Sent Events, in OpenAI's format: per"
                " image up to `partial_images` `image_generation.partial_image` events, then its"
                " `image_generation.completed` event (charged as it is sent); a failure after"
                " the first event is an `error` event. `Server-Timing`: until the first event.",
                headers=(*RATE_LIMIT_HEADERS, "X-Gateway-Backend", "Server-Timing"),
                events=(
                    ("image_generation.partial_image", image_types.PartialImageEvent),
                    ("image_generation.completed", image_types.CompletedImageEvent),
                    ("error", Error),
                ),
            ),
            Answer(
                202,
                "With `Prefer: respond-async`: the job made instead (as `POST /v1/images/jobs`).",
                job_types.Job,
                _job_example,
                headers=("Location", "Preference-Applied"),
            ),
        ),
        failures=(
            Failure(
                400,
                (errors.InvalidRequest, errors.UpstreamRefused, errors.ContentPolicyViolation),
                "A bad field (`param` names it; a parameter value the model's backend does not"
                " accept, or `stream` for a backend that cannot stream, lists what it accepts),"
                " or the backend refused the request itself: `content_policy_violation`, or"
                " `invalid_request` naming the param it blamed. Nothing is charged, and no other"
                " backend is tried.",
                param="n",
            ),
            *_ADMISSION_FAILURES,
            *_IDEMPOTENCY_FAILURES,
            Failure(
                502,
                (errors.UpstreamError,),
                "The backend failed or sent something malformed; nothing is charged.",
            ),
            Failure(
                504,
                (errors.UpstreamTimeout,),
                "The backend passed its `timeout_seconds`; nothing is charged.",
            ),
        ),
        body=image_types.GenerationRequest,
        body_example=_generation_example,
        parameters=(
            _IDEMPOTENCY_KEY,
            Param(
                "Prefer",
                "header",
                {"type": "string"},
                "`respond-async` (RFC 7240): make a job instead (202, as `POST"
                " /v1/images/jobs`; `Preference-Applied: respond-async`).",
            ),
        ),
        description="OpenAI's Images API: the official SDKs work unchanged. The key's rate"
        " limit and daily quota are checked and the images reserved in one atomic step;"
        " the rate-limit headers come with every 200 and 429. `quality`, `style`,"
        " `background`, `output_format`, `output_compression` and `moderation` are checked"
        " against what the model's backend accepts (400 naming the param otherwise) and sent"
        " upstream in its own terms; `size: auto` is the backend's default size.",
    )


_JOB_ID = Param("id", "path", {"type": "string"}, "A job id (`job_...`).", required=True)
_A_JOB_ID = "job_4GkQ7pLm2Rt7Vw4Ks8Dn1B"


def _upload(
    path: str,
    handler: Any,
    operation_id: str,
    summary: str,
    body: type[edit_types.EditRequest] | type[edit_types.VariationRequest],
    description: str,
) -> Operation:
    """An edit or a variation: a generation's answers, from a ``multipart/form-data``
    body; an edit streams ``image_edit`` events, a variation does not stream."""
    generation = _generation(path, operation_id, "")
    answers = []
    for answer in generation.answers:
        if answer.events and body is edit_types.VariationRequest:
            continue
        if answer.events:
            answer = dataclasses.replace(
                answer,
                description=answer.description.replace("image_generation.", "image_edit."),
                events=tuple(
                    (name.replace("image_generation.", "image_edit."), schema)
                    for name, schema in answer.events
                ),
            )
        answers.append(answer)
    return Operation(
        "POST",
        path,
        handler,
        operation_id,
        "images",
        summary,
        Auth.API_KEY,
        answers=tuple(answers),
        failures=(
            *generation.failures,
            Failure(
                413,
                (errors.PayloadTooLarge,),
                "A file over `server.max_upload_bytes` (`param` names it), or the whole body"
                " over 17 such files plus `server.max_body_bytes`: refused as the bytes"
                " arrive, before the body is read whole.",
                param="image",
            ),
        ),
        body=body,
        body_media_type="multipart/form-data",
        parameters=generation.parameters,
        description=description,
    )


def _upload_operations() -> tuple[Operation, ...]:
    return (
        _upload(
            "/v1/images/edits",
            edit_images,
            "createImageEdit",
            "Edit images",
            edit_types.EditRequest,
            "OpenAI's image edits (`client.images.edit`): `image` or `image[]` (1 to 16 PNG,"
            " JPEG or WebP files) and an optional `mask` (a PNG with an alpha channel, the"
            " size of the first image; its transparent pixels are what may change), each"
            " checked as an image before any backend sees it. Limits, usage, jobs"
            " (`Prefer: respond-async`), `Idempotency-Key`, the parameters (checked against"
            " what the model's backend accepts) and `stream: true` as for generations. A"
            " model whose backend cannot edit is 400 `param: model`.",
        ),
        _upload(
            "/v1/images/variations",
            create_variations,
            "createImageVariation",
            "Make variations of an image",
            edit_types.VariationRequest,
            "OpenAI's image variations (`client.images.create_variation`): one PNG `image`."
            " Limits, usage, jobs and `Idempotency-Key` as for generations; a model whose"
            " backend cannot make variations is 400 `param: model`.",
        ),
    )


def _job_example(facts: DocFacts) -> dict[str, Any]:
    return {
        "id": _A_JOB_ID,
        "object": "image.job",
        "status": "queued",
        "created_at": 1767225600,
        "model": facts.config.default_model,
        "n": 1,
        "metadata": {"order": "1234"},
    }


def _job_operations() -> tuple[Operation, ...]:
    admitted = _ADMISSION_FAILURES
    job_answer = Answer(200, "The job.", job_types.Job, _job_example)
    return (
        Operation(
            "POST",
            "/v1/images/jobs",
            jobs_api.create_job,
            "createImageJob",
            "jobs",
            "Generate images in the background",
            Auth.API_KEY,
            answers=(
                Answer(
                    202,
                    "The job, queued; `Location` is where to read it.",
                    job_types.Job,
                    _job_example,
                    headers=("Location",),
                ),
            ),
            failures=(*admitted, *_IDEMPOTENCY_FAILURES),
            parameters=(_IDEMPOTENCY_KEY,),
            body=job_types.JobRequest,
            body_example=lambda facts: {
                **_generation_example(facts),
                "metadata": {"order": "1234"},
            },
            description="The body of `POST /v1/images/generations` (without `stream`: a job"
            " does not stream), plus `metadata`. The"
            " request counts against the rate limit and reserves `n` images at once; when"
            " the job ends only the images delivered are charged.",
        ),
        Operation(
            "GET",
            "/v1/images/jobs",
            jobs_api.list_jobs,
            "listImageJobs",
            "jobs",
            "The caller's jobs, newest first",
            Auth.API_KEY,
            answers=(Answer(200, "A page of jobs.", job_types.JobList),),
            parameters=(
                Param(
                    "status",
                    "query",
                    {"type": "string", "enum": list(job_types.JOB_STATUSES)},
                    "Only jobs in this status.",
                ),
                Param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": job_types.MAX_LIST_LIMIT},
                    "Jobs per page (default 20).",
                ),
                Param(
                    "after", "query", {"type": "string"}, "The last job id of the previous page."
                ),
            ),
        ),
        Operation(
            "GET",
            "/v1/images/jobs/{id}",
            jobs_api.get_job,
            "getImageJob",
            "jobs",
            "A job, with its images once it succeeded",
            Auth.API_KEY,
            answers=(job_answer,),
            failures=(NOT_FOUND,),
            parameters=(_JOB_ID,),
            description="Another user's job is 404.",
        ),
        Operation(
            "POST",
            "/v1/images/jobs/{id}/cancel",
            jobs_api.cancel_job,
            "cancelImageJob",
            "jobs",
            "Cancel a job",
            Auth.API_KEY,
            answers=(job_answer,),
            failures=(NOT_FOUND,),
            parameters=(_JOB_ID,),
            description="A queued job never runs; a running one is stopped. Nothing is charged"
            " for a cancelled job. A finished job is answered unchanged.",
        ),
    )


def _created_key_answer(description: str) -> Answer:
    return Answer(
        201,
        description,
        key_types.CreatedKey,
        lambda facts: {
            "id": _A_KEY_ID,
            "name": "laptop",
            "key": f"{facts.config.keys.prefix}Xq3Z9pLm2Rt7Vw4Ks8Dn1Bc6Fh0Jg5Ya7Ue2Qo",
            "prefix": f"{facts.config.keys.prefix}Xq3Z...e2Qo",
            "created_at": "2026-01-01T12:00:00Z",
            "expires_at": None,
        },
    )


OPERATIONS: tuple[Operation, ...] = (
    # The data plane (API keys).
    _generation("/v1/images/generations", "createImage", ""),
    _generation("/v1/generate", "generate", " (an alias of /v1/images/generations)"),
    *_upload_operations(),
    *_job_operations(),
    Operation(
        "GET",
        "/v1/models",
        list_models,
        "listModels",
        "images",
        "The model names clients may send",
        Auth.API_KEY,
        answers=(Answer(200, "The models.", image_types.ModelList),),
    ),
    # The account plane (access tokens).
    Operation(
        "POST",
        "/v1/auth/register",
        accounts.register,
        "register",
        "accounts",
        "Create an account",
        Auth.NONE,
        answers=(
            Answer(
                201,
                "The new user, on the default plan.",
                account_types.User,
                lambda facts: {
                    "id": _A_USER_ID,
                    "email": "ada@example.com",
                    "plan": facts.config.default_plan,
                    "created_at": "2026-01-01T12:00:00Z",
                },
            ),
        ),
        failures=(
            THROTTLED,
            Failure(409, (errors.EmailTaken,), "An account with this email exists."),
        ),
        body=account_types.Credentials,
        body_example=_CREDENTIALS,
        description="Limited per client IP (`auth.register_per_minute_per_ip`).",
    ),
    Operation(
        "POST",
        "/v1/auth/login",
        accounts.login,
        "login",
        "accounts",
        "Get an access token",
        Auth.NONE,
        answers=(Answer(200, "A bearer access token (JWT).", account_types.Token, _token_example),),
        failures=(
            ACCOUNT_DISABLED,
            THROTTLED,
            Failure(
                401,
                (errors.InvalidCredentials,),
                "Unknown email or wrong password (the same answer, in the same time).",
            ),
        ),
        body=account_types.Login,
        body_example=_CREDENTIALS,
        description="Limited per client IP and, after repeated failures, per account"
        " (1 s, 2 s, 4 s ... between attempts).",
    ),
    *_session_operations(),
    Operation(
        "GET",
        "/v1/me",
        accounts.me,
        "me",
        "accounts",
        "The caller's account, its plan's limits and today's usage",
        Auth.ACCESS_TOKEN,
        answers=(Answer(200, "The account.", account_types.Me),),
    ),
    Operation(
        "POST",
        "/v1/keys",
        keys_api.create_key,
        "createKey",
        "keys",
        "Create an API key",
        Auth.ACCESS_TOKEN,
        answers=(_created_key_answer("The new key: the only time it is shown whole."),),
        failures=(
            Failure(
                409,
                (errors.TooManyKeys,),
                lambda facts: (
                    "The account holds `auth.max_keys_per_user`"
                    f" ({facts.config.auth.max_keys_per_user}) active keys."
                ),
            ),
        ),
        body=key_types.NewKey,
        body_example={"name": "laptop"},
    ),
    Operation(
        "GET",
        "/v1/keys",
        keys_api.list_keys,
        "listKeys",
        "keys",
        "The caller's API keys (never the keys themselves)",
        Auth.ACCESS_TOKEN,
        answers=(Answer(200, "The keys.", key_types.KeyList),),
    ),
    Operation(
        "DELETE",
        "/v1/keys/{id}",
        keys_api.revoke_key,
        "revokeKey",
        "keys",
        "Revoke a key, in every gateway process at once",
        Auth.ACCESS_TOKEN,
        answers=(Answer(204, "Revoked."),),
        failures=(NOT_FOUND,),
        parameters=(_ID,),
        description="Someone else's key, or an unknown one, is 404.",
    ),
    Operation(
        "POST",
        "/v1/keys/{id}/rotate",
        keys_api.rotate_key,
        "rotateKey",
        "keys",
        "Replace a key with a new one",
        Auth.ACCESS_TOKEN,
        answers=(_created_key_answer("The new key: the only time it is shown whole."),),
        failures=(
            NOT_FOUND,
            Failure(
                409,
                (errors.KeyAlreadyRotated,),
                "The key was already rotated: rotate its successor.",
            ),
        ),
        body=key_types.Rotation,
        body_required=False,
        body_example={"grace_seconds": 3600},
        parameters=(_ID,),
        description="The new key keeps the old one's name, expiry and limits; the old one"
        " works until `grace_seconds` pass. An inactive or expired key is 404; a key"
        " rotated before is 409.",
    ),
    Operation(
        "GET",
        "/v1/usage",
        read_usage,
        "readUsage",
        "usage",
        "Images and credits per key per UTC day (or by day, or by key), live counts included",
        Auth.ACCESS_TOKEN,
        answers=(
            Answer(
                200,
                "The days that have images.",
                usage_types.Usage,
                {
                    "data": [
                        {"date": "2026-01-01", "api_key_id": _A_KEY_ID, "images": 12, "credits": 48}
                    ],
                    "total": 12,
                    "credits": 48,
                },
            ),
        ),
        failures=(
            INVALID_REQUEST,
            Failure(404, (errors.NotFound,), "`key_id` is not one of the caller's keys."),
        ),
        parameters=(
            Param("start", "query", _DATE, "First day; default: 29 days before `end`."),
            Param("end", "query", _DATE, "Last day; default: today (UTC)."),
            Param("key_id", "query", _UUID, "Only this key's usage."),
            Param(
                "group_by",
                "query",
                {"type": "string", "enum": list(usage_types.GROUPINGS)},
                "`day`: one row per day (the keys summed, `api_key_id` null); `key`: one row"
                " per key (the days summed, `date` null). Default: per key per day.",
            ),
        ),
        description=f"The range may cover at most {usage_types.MAX_DAYS} days.",
    ),
    Operation(
        "GET",
        "/v1/credits",
        credits_api.read_credits,
        "readCredits",
        "credits",
        "The caller's credits: this month's allowance left, purchased credits, the total",
        Auth.API_KEY_OR_TOKEN,
        answers=(
            Answer(
                200,
                "The balances. Charges take the allowance first; purchased credits never expire.",
                credit_types.CreditsBalance,
                {
                    "monthly": {
                        "balance": 60,
                        "allowance": 100,
                        "resets_at": "2026-02-01T00:00:00Z",
                    },
                    "purchased": {"balance": 500},
                    "total": 560,
                },
            ),
        ),
        description="`allowance` is null when the plan has no credit limit.",
    ),
    Operation(
        "GET",
        "/v1/credits/ledger",
        credits_api.read_ledger,
        "readCreditLedger",
        "credits",
        "Every change of the caller's credits, newest first",
        Auth.API_KEY_OR_TOKEN,
        answers=(
            Answer(
                200,
                "A page of entries. Changes reach the ledger within one usage flush.",
                credit_types.CreditLedger,
                {
                    "data": [
                        {
                            "id": 42,
                            "kind": "charge",
                            "amount": -8,
                            "monthly_delta": -8,
                            "purchased_delta": 0,
                            "created_at": "2026-01-05T10:00:00Z",
                            "api_key_id": _A_KEY_ID,
                            "reference": "3f2a9c1e6b0d4e8f9a7c5b3d1e0f2a4c",
                            "reason": None,
                        }
                    ],
                    "has_more": False,
                },
            ),
        ),
        parameters=(
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": credit_types.MAX_LEDGER_PAGE},
                f"Entries per page (default {credit_types.DEFAULT_LEDGER_PAGE}).",
            ),
            Param(
                "before",
                "query",
                {"type": "integer", "minimum": 1},
                "Only entries older than this `id` (the last of the previous page).",
            ),
        ),
    ),
    Operation(
        "POST",
        "/v1/webhooks/secret",
        webhooks_api.create_webhook_secret,
        "createWebhookSecret",
        "accounts",
        "A new secret to verify job webhooks with",
        Auth.ACCESS_TOKEN,
        answers=(
            Answer(
                201,
                "The secret: the only time it is shown. It replaces the previous one, which"
                " still signs webhooks (a second signature) until"
                " `previous_secret_expires_at`.",
                webhook_types.WebhookSecret,
                {
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    "previous_secret_expires_at": 1767312000,
                },
            ),
        ),
        description="Jobs with a `webhook_url` send, when they end, a POST signed with"
        " this secret (Standard Webhooks: `webhook-id`, `webhook-timestamp`,"
        " `webhook-signature`).",
    ),
    # Operators.
    Operation(
        "GET",
        "/admin/users",
        admin.find_users,
        "adminFindUsers",
        "admin",
        "Find a user by email, or page through all of them, oldest first",
        Auth.ADMIN_TOKEN,
        answers=(Answer(200, "A page of users.", admin_types.AdminUserList),),
        failures=(INVALID_REQUEST,),
        parameters=(
            Param("email", "query", {"type": "string"}, "Find one user by this exact email."),
            Param(
                "email_like",
                "query",
                {"type": "string"},
                "Only users whose email contains this (any case).",
            ),
            *_page_params("Users"),
        ),
    ),
    Operation(
        "GET",
        "/admin/users/{id}",
        admin.get_user,
        "adminGetUser",
        "admin",
        "A user with its keys, today's images and credits",
        Auth.ADMIN_TOKEN,
        answers=(Answer(200, "The user.", admin_types.AdminUserDetail),),
        parameters=(_ID,),
    ),
    Operation(
        "PATCH",
        "/admin/users/{id}",
        admin.patch_user,
        "adminUpdateUser",
        "admin",
        "Change a user's plan or disable it",
        Auth.ADMIN_TOKEN,
        answers=(Answer(200, "The user, changed.", admin_types.AdminUser),),
        body=admin_types.AdminUserChange,
        body_example=lambda facts: {"plan": facts.config.default_plan},
        parameters=(_ID,),
        description="Audited; takes effect in every gateway process at once.",
    ),
    Operation(
        "PATCH",
        "/admin/keys/{id}",
        admin.patch_key,
        "adminUpdateKey",
        "admin",
        "Override a key's limits, or disable it",
        Auth.ADMIN_TOKEN,
        answers=(Answer(200, "The key, changed.", admin_types.AdminKey),),
        body=admin_types.AdminKeyChange,
        body_example={"requests_per_minute": 120},
        parameters=(_ID,),
        description="Audited; takes effect in every gateway process at once.",
    ),
    Operation(
        "POST",
        "/admin/users/{id}/credits",
        admin.change_credits,
        "adminChangeCredits",
        "admin",
        "Add purchased credits to a user (or take them away)",
        Auth.ADMIN_TOKEN,
        answers=(
            Answer(
                200,
                "The user's balances after the change (`Idempotent-Replayed: true` for a"
                " repeat, which changed nothing).",
                credit_types.CreditsBalance,
            ),
        ),
        failures=(
            Failure(
                422,
                (errors.IdempotencyKeyReused,),
                "This `Idempotency-Key` was used for a different change.",
                param="Idempotency-Key",
            ),
            SERVICE_UNAVAILABLE,
        ),
        body=credit_types.CreditChange,
        body_example={"amount": 500, "reason": "invoice 2026-0042"},
        parameters=(
            _ID,
            Param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
                "Required: a retry with the same key changes the credits once.",
                required=True,
            ),
        ),
        description="A positive `amount` is a grant, a negative one an adjustment (it may"
        " not take more purchased credits than the user has). Audited; in the ledger.",
    ),
    Operation(
        "GET",
        "/admin/usage",
        admin_reports.usage_for_range,
        "adminUsage",
        "admin",
        "Per-user and per-key totals for a range of UTC days, most images first",
        Auth.ADMIN_TOKEN,
        answers=(Answer(200, "The range's usage.", admin_types.AdminUsage),),
        failures=(
            INVALID_REQUEST,
            SERVICE_UNAVAILABLE,
        ),
        parameters=(
            Param("start", "query", _DATE, "The first day (default: today, UTC)."),
            Param("end", "query", _DATE, "The last day (default: today, UTC)."),
            Param("date", "query", _DATE, "One day: the same as `start` = `end` = it."),
        ),
        description=f"The range may cover at most {usage_types.MAX_DAYS} days; today's"
        " counts are written through first.",
    ),
    Operation(
        "GET",
        "/admin/config",
        admin.config_in_effect,
        "adminConfig",
        "admin",
        "The config in effect, secrets masked, and its hash",
        Auth.ADMIN_TOKEN,
        answers=(Answer(200, "The config in effect.", admin_types.AdminConfig),),
        description="What start-up or the last reload (SIGHUP, `gateway reload`) applied:"
        " keys that cannot change while running keep their start-up values.",
    ),
    *_admin_account_operations(),
    Operation(
        "GET",
        "/admin/usage/export",
        export_usage,
        "adminExportUsage",
        "admin",
        "Every key's images and credits per UTC day, streamed as CSV or JSON Lines",
        Auth.ADMIN_TOKEN,
        answers=(
            Answer(
                200,
                "One row per user, key and day: `user_id, email, api_key_id, date, images,"
                " credits` (a header line first in CSV; one object per line in JSON Lines),"
                " by user, key and day. Credits: what the key's charges and refunds came to"
                " that day.",
                media_type="text/csv",
                raw_schema={"type": "string"},
                other_media_types=("application/jsonl",),
            ),
        ),
        failures=(INVALID_REQUEST, SERVICE_UNAVAILABLE),
        parameters=(
            Param("start", "query", _DATE, "First day, YYYY-MM-DD.", required=True),
            Param("end", "query", _DATE, "Last day (at most 366 days in all).", required=True),
            Param(
                "format",
                "query",
                {"type": "string", "enum": ["csv", "jsonl"], "default": "csv"},
                "`csv` or `jsonl` (`application/jsonl`).",
            ),
        ),
    ),
    # Health.
    Operation(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        "operations",
        "The process is up",
        Auth.NONE,
        answers=(Answer(200, "Up.", health_types.Health, {"status": "ok"}),),
    ),
    Operation(
        "GET",
        "/readyz",
        readyz,
        "readyz",
        "operations",
        "Postgres and Redis are reachable",
        Auth.NONE,
        answers=(
            Answer(200, "Ready.", health_types.Readiness),
            Answer(
                503, "Not ready, or draining: the body names what is down.", health_types.NotReady
            ),
        ),
    ),
    Operation(
        "GET",
        "/metrics",
        metrics,
        "metrics",
        "operations",
        "Prometheus metrics, summed over every worker process",
        Auth.NONE,
        answers=(
            Answer(
                200,
                "Prometheus text format. Keep it off public routes.",
                media_type="text/plain",
                raw_schema={"type": "string"},
            ),
        ),
    ),
    # Stored images (response_format "url"): the signed link is the credential.
    Operation(
        "GET",
        FILES_ROUTE,
        serve_file,
        "getFile",
        "images",
        "A stored image, by its signed link (no API key: the link is the credential)",
        Auth.NONE,
        answers=(
            Answer(
                200,
                "The image's exact bytes, with its Content-Type, Content-Length, ETag and"
                " `Cache-Control: private, max-age=<seconds the link has left>`. HEAD works;"
                " a single `Range` answers 206.",
                media_type="image/*",
                raw_schema={"type": "string", "format": "binary"},
            ),
        ),
        failures=(
            Failure(
                403,
                (errors.InvalidSignature, errors.UrlExpired),
                "The link was tampered with (`invalid_signature`) or is past `expires`"
                " (`url_expired`).",
            ),
            Failure(404, (errors.NotFound,), "No such file: deleted after the retention."),
            Failure(416, (errors.RangeNotSatisfiable,), "The `Range` lies outside the file."),
            Failure(503, (errors.StorageUnavailable,), "The object store cannot be reached."),
        ),
        parameters=(
            Param("file_id", "path", {"type": "string"}, "The file's id.", required=True),
            Param(
                "expires",
                "query",
                {"type": "integer"},
                "When the link ends (unix seconds).",
                required=True,
            ),
            Param("signature", "query", {"type": "string"}, "The link's HMAC.", required=True),
        ),
    ),
    # The API description.
    Operation(
        "GET",
        "/openapi.json",
        openapi_json,
        "openapi",
        "operations",
        "This document",
        Auth.NONE,
        answers=(Answer(200, "OpenAPI 3.1.", raw_schema={"type": "object"}),),
    ),
)
