"""``server.metrics_port``: ``/metrics`` on a port of its own, and 404 on the public one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import ConfigError, parse_config
from tests.support.gateway import MakeKey
from tests.support.processes import free_port, post, running_gateway


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_metrics_are_served_on_their_own_port_only(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey, workers: int
):
    metrics_port = free_port()
    extra = {"server": {"metrics_port": metrics_port, "workers": workers}}
    key = await make_key()
    async with (
        running_gateway(tmp_path, raw_config, extra) as (url, _process),
        aiohttp.ClientSession() as session,
    ):
        assert await post(session, url, key.key) == 200
        async with session.get(f"{url}/metrics") as public:
            assert public.status == 404
            assert (await public.json())["error"]["code"] == "not_found"
        async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as private:
            assert private.status == 200
            assert private.content_type == "text/plain"
            text = await private.text()
        counted = 'gateway_requests_total{code="",route="/v1/images/generations",status="200"} 1.0'
        assert counted in text
        async with session.get(f"http://127.0.0.1:{metrics_port}/healthz") as other:
            assert other.status == 404  # nothing else there


def test_the_metrics_port_must_differ_from_the_public_one(raw_config: dict[str, Any]):
    with pytest.raises(ConfigError, match=r"^server\.metrics_port: must differ from port$"):
        parse_config({**raw_config, "server": {"port": 9000, "metrics_port": 9000}}, {})
