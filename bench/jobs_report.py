"""The jobs scenario's section of ``BENCHMARKS.md``: rendered, and kept apart from the
other sections (between two markers) so that each run rewrites only its own."""

from __future__ import annotations

import math

from bench.jobs_scenario import TARGET_MS, JobsOutcome

__all__ = ["BEGIN", "END", "join", "render", "split"]

BEGIN = "<!-- jobs scenario: written by python -m bench.run --scenario jobs -->"
END = "<!-- end of the jobs scenario -->"

_ROWS = [
    ("sync", "sync call: request to answer"),
    ("submit", "job: submit to 202"),
    ("to start", "job: submit to a worker starting it (`started_at`)"),
    ("to done", "job: submit to its result recorded (`completed_at`)"),
    ("webhook", "job: submit to its webhook received (end to end)"),
    ("submit (throughput phase)", "submit to 202, clients submitting without waiting"),
]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def render(outcome: JobsOutcome, command: str, date: str, machine: str) -> str:
    o = outcome
    lines = [
        BEGIN,
        "# Jobs: a generation as a job against the same generation done synchronously",
        "",
        f"Run {date} with `{command}`. Machine: {machine}.",
        "",
        "Settings: " + "; ".join(f"{k}: {v}" for k, v in o.settings.items()) + ".",
        "",
        "| measure | samples | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, label in _ROWS:
        samples = o.samples.get(name, [])
        lines.append(f"| {label} | {len(samples)} | {_ms(o.p(name, 50))} | {_ms(o.p(name, 99))} |")
    lines += [
        "",
        f"Throughput: {o.syncs_per_s:.1f} sync calls/s; {o.submits_per_s:.1f} job submits/s"
        " (closed loop, the same clients).",
        "",
        f"Target: a job's end-to-end p99 (to its webhook) within {TARGET_MS:.0f} ms of the sync"
        f" call's: {_ms(o.p('webhook', 99))} - {_ms(o.p('sync', 99))} ="
        f" {_ms(o.gap_p99_ms)} ms: **{'met' if o.passed else 'not met'}**.",
    ]
    if o.errors:
        lines += ["", f"Errors ({len(o.errors)}): " + "; ".join(sorted(set(o.errors))[:10])]
    lines.append(END)
    return "\n".join(lines) + "\n"


def split(text: str) -> tuple[str, str | None]:
    """``text`` without the jobs section, and that section (None if it has none)."""
    head, found, rest = text.partition(BEGIN)
    if not found:
        return text, None
    section, ended, tail = rest.partition(END)
    if not ended:
        return head, BEGIN + rest
    return head.rstrip("\n") + "\n" + tail.lstrip("\n"), BEGIN + section + END + "\n"


def join(text: str, section: str | None) -> str:
    """The report with the jobs section at its end."""
    if section is None:
        return text
    return text.rstrip("\n") + "\n\n" + section
