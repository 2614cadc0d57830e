"""Helpers for the tests, one small module per purpose; no fixtures live here.

``conftest.py`` files hold the fixtures and import what they build on from here; test
modules import their helpers from here too, never from a conftest.

* :mod:`tests.support.paths`: the repository's root and the config cases.
* :mod:`tests.support.config`: the test configuration, the servers it points at, merging.
* :mod:`tests.support.gateway`: in-process gateways and the keys tests issue.
* :mod:`tests.support.accounts`: users registered and logged in through the API.
* :mod:`tests.support.http`: the documented error shape and other response checks.
* :mod:`tests.support.raw_http`: HTTP/1.1 over a raw socket, for what clients refuse to send.
* :mod:`tests.support.metrics`: reading ``/metrics`` text.
* :mod:`tests.support.usage`: usage rows in Postgres, today's date.
* :mod:`tests.support.waiting`: waiting for something to come true.
* :mod:`tests.support.processes`: real ``gateway serve`` processes.
* :mod:`tests.support.cli`: the ``gateway`` command run as a subprocess.
* :mod:`tests.support.smtp`: a local SMTP sink (aiosmtpd) keeping what it is sent.
* :mod:`tests.support.redis`: private redis-servers a test may stop, flush or lock.
* :mod:`tests.support.upstreams`: a fake upstream in the gateway's own wire format.
* :mod:`tests.support.providers`: fake upstreams in each provider's wire format.
* :mod:`tests.support.backend_cases`: each backend type paired with its provider's fake.
"""
