"""Idempotency keys: a request retried with the same ``Idempotency-Key`` gets the first
answer again instead of running twice (``store.py``; the HTTP side is
``gateway/http/idempotency.py``)."""
