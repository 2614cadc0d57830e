"""The ``jobs:``, ``idempotency:`` and ``webhooks:`` sections: asynchronous image jobs,
retried requests, and the webhooks sent when a job ends."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from gateway.config.section import Section, doc

__all__ = ["IdempotencyConfig", "JobsConfig", "WebhooksConfig"]

_Positive = Annotated[float, Meta(gt=0)]


class JobsConfig(Section, frozen=True, kw_only=True):
    concurrency: Annotated[
        int,
        Meta(ge=1),
        doc("Jobs one process works at once (each backend's max_concurrency still holds)."),
    ] = 16
    visibility_timeout_seconds: Annotated[
        _Positive,
        doc(
            "A job whose process stopped reporting for this long (killed, hung) is taken "
            "over by another process and run again."
        ),
    ] = 60.0
    max_attempts: Annotated[
        int, Meta(ge=1), doc("Runs of one job at most; an interrupted run counts.")
    ] = 3
    queue_timeout_seconds: Annotated[
        _Positive,
        doc("A job no worker picked up within this fails with queue_timeout, charged nothing."),
    ] = 600.0
    sweep_interval_seconds: Annotated[
        _Positive,
        doc("How often each process fails jobs queued too long and settles jobs left unsettled."),
    ] = 5.0
    shutdown_grace_seconds: Annotated[
        float,
        Meta(ge=0),
        doc(
            "After SIGTERM, running jobs get this long to finish; then they go back on the "
            "queue, for another process to start at once (their attempt counts)."
        ),
    ] = 10.0
    work: Annotated[
        bool, doc("false: this process takes job submissions but never works jobs.")
    ] = True


class IdempotencyConfig(Section, frozen=True, kw_only=True):
    ttl_hours: Annotated[
        _Positive, doc("How long the answer to a request with an Idempotency-Key is kept.")
    ] = 24.0
    in_flight_seconds: Annotated[
        _Positive,
        doc(
            "How long a key stays taken by a request that never finished (its process died): "
            "retries get 409 until then. Keep it above the slowest backend's timeout."
        ),
    ] = 600.0


class WebhooksConfig(Section, frozen=True, kw_only=True):
    allow_http: Annotated[
        bool, doc("true: webhook URLs may be http:// (otherwise https:// only).")
    ] = False
    max_attempts: Annotated[
        int, Meta(ge=1), doc("Deliveries of one webhook at most, the first included.")
    ] = 6
    backoff_seconds: Annotated[
        _Positive,
        doc("The wait before the first retry; doubled per retry, jittered by +-50 %."),
    ] = 5.0
    timeout_seconds: Annotated[_Positive, doc("A delivery's whole exchange at most.")] = 10.0
    rotation_grace_hours: Annotated[
        float,
        Meta(ge=0),
        doc(
            "After POST /v1/webhooks/secret, webhooks are signed with the previous secret "
            "too for this long (two signatures), so receivers can switch; 0: not at all."
        ),
    ] = 24.0
    poll_interval_seconds: Annotated[
        _Positive,
        doc(
            "How often each process looks for due webhooks it was not told about (retries "
            "of a process that died); a job ending in the process wakes its sender at once."
        ),
    ] = 5.0
    secret_key: Annotated[
        str,
        doc(
            "The server-side key users' webhook secrets are derived from (32+ bytes; from "
            "the environment). Empty: derived from the first of auth.jwt_secrets, so "
            "rotating that secret changes every webhook secret."
        ),
    ] = ""
