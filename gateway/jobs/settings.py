"""The ``jobs:`` section of the config (asynchronous image jobs)."""

from __future__ import annotations

import dataclasses

__all__ = ["JobsConfig"]


@dataclasses.dataclass(frozen=True, slots=True)
class JobsConfig:
    #: Jobs one process works at once (each backend's ``max_concurrency`` still holds).
    concurrency: int = 16
    #: A running job whose process stopped reporting for this long is run again elsewhere.
    visibility_timeout_seconds: float = 60.0
    #: Runs of one job at most (a crash or a lost worker counts as one).
    max_attempts: int = 3
    #: A job no worker picked up within this fails with ``queue_timeout``, charged nothing.
    queue_timeout_seconds: float = 600.0
    #: How often each process looks for jobs to time out, settle or put back on the queue.
    sweep_interval_seconds: float = 5.0
    #: False: this process submits jobs but never works them.
    work: bool = True
