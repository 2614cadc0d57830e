"""``/v1/images/jobs``: a generation request run in the background, and the job it makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from gateway.http.schemas.images import GenerationRequest, ImageData, ImageUsage

__all__ = [
    "JOB_STATUSES",
    "MAX_LIST_LIMIT",
    "MAX_METADATA_ENTRIES",
    "MAX_METADATA_VALUE",
    "Job",
    "JobError",
    "JobList",
    "JobRequest",
]

MAX_METADATA_ENTRIES = 16
MAX_METADATA_VALUE = 512
MAX_METADATA_KEY = 64
MAX_WEBHOOK_URL = 2048
MAX_LIST_LIMIT = 100
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobRequest(GenerationRequest):
    """A generation request (the body of ``POST /v1/images/generations``), run in the
    background; unknown fields are ignored."""

    response_format: Annotated[
        Literal["b64_json", "url"] | None,
        Meta(
            description="`url` (the default for jobs): each image stored, and a signed link"
            " to it in the job, made afresh each time the job is read; `b64_json`: the"
            " images in the job."
        ),
    ] = "url"
    webhook_url: (
        Annotated[
            str, Meta(min_length=1, max_length=MAX_WEBHOOK_URL, description="Not delivered yet.")
        ]
        | None
    ) = None
    metadata: (
        Annotated[
            dict[
                Annotated[str, Meta(min_length=1, max_length=MAX_METADATA_KEY)],
                Annotated[str, Meta(max_length=MAX_METADATA_VALUE)],
            ],
            Meta(
                max_length=MAX_METADATA_ENTRIES,
                description=f"Up to {MAX_METADATA_ENTRIES} string values of up to"
                f" {MAX_METADATA_VALUE} characters, returned with the job.",
            ),
        ]
        | None
    ) = None

    stored_text: ClassVar[tuple[str, ...]] = (
        "prompt",
        "negative_prompt",
        "webhook_url",
        "metadata",
    )
    messages: ClassVar[Mapping[str, str]] = {
        **GenerationRequest.messages,
        "webhook_url": f"'webhook_url' must be a URL of at most {MAX_WEBHOOK_URL} characters.",
        "metadata": f"'metadata' must be an object of at most {MAX_METADATA_ENTRIES} string"
        f" values of at most {MAX_METADATA_VALUE} characters (names of 1 to"
        f" {MAX_METADATA_KEY} characters).",
    }


class JobError(msgspec.Struct):
    code: str
    message: str


class Job(msgspec.Struct, omit_defaults=True):
    id: Annotated[str, Meta(description="`job_` and 22 letters and digits.")]
    object: Literal["image.job"]
    status: JobStatus
    created_at: Annotated[int, Meta(description="Unix time.")]
    model: str
    n: int
    metadata: dict[str, str]
    data: list[ImageData] | None = None
    usage: ImageUsage | None = None
    completed_at: int | None = None
    error: JobError | None = None


class JobList(msgspec.Struct):
    object: Literal["list"]
    data: list[Job]
    has_more: bool
