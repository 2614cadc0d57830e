"""The load benchmark: the gateway against a bare proxy and the upstream itself.

``python -m bench.run`` (``make bench``) measures three configurations with one load
generator, on this machine, in one run:

* **B0** — the fake upstream (``bench.upstream``) called directly;
* **B1** — a bare aiohttp pass-through proxy (``bench.bare_proxy``) in front of it;
* **G** — the full gateway (``python -m gateway serve``) in front of it, with a private
  database, a Redis of its own and 10,000 warm API keys.

See ``bench/README.md`` for what is measured and how.
"""
