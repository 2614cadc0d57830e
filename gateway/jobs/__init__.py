"""Asynchronous image jobs: submitted over HTTP, queued on a Redis stream, worked by any
gateway process, recorded in Postgres.

- ``store.py``: the ``image_jobs`` table (SQL functions taking a connection).
- ``queue.py``: the Redis stream and its consumer group.
- ``settlement.py``: how a job's quota reservation is settled exactly once.
- ``runner.py``: the workers in each process, the sweeper, cancellation.

The HTTP edge is ``gateway/http/jobs_api.py``; the ``jobs:`` config section is in
``gateway/config/jobs.py``.
"""
