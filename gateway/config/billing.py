"""The ``billing:`` section: usage and credit events for a billing system, if wanted."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from gateway.config.section import Section, doc, says

__all__ = ["BillingConfig"]

_Positive = Annotated[float, Meta(gt=0)]


class BillingConfig(Section, frozen=True, kw_only=True):
    events_url: Annotated[
        str,
        Meta(
            pattern=r"\A(https?://[^\s]+)?\Z",
            extra=says("must be an http(s):// URL (or empty: off)"),
        ),
        doc(
            "Where usage and credit events are POSTed as CloudEvents (a JSON batch, "
            "application/cloudevents-batch+json; OpenMeter and others ingest it). Every "
            "change of a key's daily image count that the usage flush writes, and every "
            "credit ledger entry, is one event with a stable id. The egress policy applies. "
            "Empty: no events."
        ),
    ] = ""
    source: Annotated[
        str,
        Meta(min_length=1, max_length=200),
        doc("The events' CloudEvents `source` (with `id`, what makes an event unique)."),
    ] = "image-gateway"
    batch_size: Annotated[int, Meta(ge=1, le=1000), doc("Events per POST at most.")] = 100
    interval_seconds: Annotated[
        _Positive, doc("How often each process looks for events to send.")
    ] = 5.0
    timeout_seconds: Annotated[_Positive, doc("One POST's whole exchange at most.")] = 10.0
    max_backoff_seconds: Annotated[
        _Positive,
        doc(
            "A batch the receiver refused is sent again after 5 s, doubled per attempt "
            "(jittered), up to this: events wait in Postgres, never dropped."
        ),
    ] = 300.0
