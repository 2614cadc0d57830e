"""Webhooks (Standard Webhooks) sent when a job ends.

- ``signing.py``: users' secrets (derived, never stored) and the signature.
- ``store.py``: the SQL (secrets' nonces, due webhooks, the delivery log).
- ``sender.py``: the loop in every process that delivers due webhooks, with retries.

The HTTP edge is ``gateway/http/webhooks_api.py`` (``POST /v1/webhooks/secret``).
"""
