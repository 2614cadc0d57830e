"""The log format: the access log's direct path writes exactly what ``logging`` writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import LoggingConfig
from gateway.logs import AccessLog, _utc_time, configure_logging
from tests.support.gateway import MakeKey

ACCESS = logging.getLogger("gateway.access")
FIELDS = {
    "request_id": "req-1",
    "method": "POST",
    "route": "/v1/images/generations",
    "status": 200,
    "code": None,
    "latency_ms": 1.25,
    "key_id": uuid.UUID("0b4f3c56-8d1e-4f7a-9c2b-1d2e3f405162"),
    "model": 'm "quoted" ü',
    "images": 2,
}


@pytest.fixture(autouse=True)
def pinned_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A pinned clock; the logging setup as it was, after the test."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, ACCESS.disabled
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0625)
    yield
    root.handlers[:], ACCESS.disabled = saved[0], saved[2]
    root.setLevel(saved[1])


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_access_line_is_the_line_logging_would_write(
    capsys: pytest.CaptureFixture[str], log_format: str
):
    configure_logging(LoggingConfig(format=log_format))
    access_log = AccessLog(ACCESS)
    assert access_log.enabled()
    access_log.write("POST /v1/images/generations 200", FIELDS)
    ACCESS.info("%s %s %d", "POST", "/v1/images/generations", 200, extra=FIELDS)
    direct, logged = capsys.readouterr().err.splitlines()
    assert direct == logged
    if log_format == "json":
        assert direct.startswith(
            '{"time":"2023-11-14T22:13:20.062+00:00","level":"info","logger":"gateway.access",'
            '"message":"POST /v1/images/generations 200","request_id":"req-1",'
        )


def test_access_lines_reach_other_handlers_as_records(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    configure_logging(LoggingConfig())
    logging.getLogger().addHandler(caplog.handler)
    AccessLog(ACCESS).write("GET /healthz 200", {"request_id": "req-2"})
    [record] = caplog.records
    assert (record.name, record.getMessage(), record.__dict__["request_id"]) == (
        "gateway.access",
        "GET /healthz 200",
        "req-2",
    )
    assert '"request_id":"req-2"' in capsys.readouterr().err


def test_no_access_lines_when_the_access_log_is_off(capsys: pytest.CaptureFixture[str]):
    configure_logging(LoggingConfig(access_log=False))
    assert not AccessLog(ACCESS).enabled()


def test_log_times_are_those_datetime_writes():
    rng = random.Random(3)
    for created in [1_700_000_000.9999995, 1_700_000_000.0005, 1_700_000_000.9995] + [
        rng.uniform(1.6e9, 2e9) for _ in range(20_000)
    ]:
        expected = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
        assert _utc_time(created) == expected, created


async def test_lines_finished_in_one_loop_turn_are_written_in_order(
    capsys: pytest.CaptureFixture[str],
):
    import asyncio

    configure_logging(LoggingConfig(format="json"))
    access_log = AccessLog(ACCESS)
    for request_id in ("turn-1", "turn-2", "turn-3"):
        access_log.write("POST /v1/images/generations 200", {**FIELDS, "request_id": request_id})
    await asyncio.sleep(0)  # the end of the turn
    lines = capsys.readouterr().err.splitlines()
    assert [line.split('"request_id":"')[1].split('"')[0] for line in lines] == [
        "turn-1",
        "turn-2",
        "turn-3",
    ]


async def test_lines_wait_for_the_flush_interval_or_a_full_batch(
    capsys: pytest.CaptureFixture[str],
):
    configure_logging(LoggingConfig(format="json"))
    access_log = AccessLog(ACCESS, flush_seconds=60, max_pending=3)
    for request_id in ("batch-1", "batch-2"):
        access_log.write("POST /v1/images/generations 200", {**FIELDS, "request_id": request_id})
    await asyncio.sleep(0)
    assert capsys.readouterr().err == ""  # not yet: the batch is neither due nor full
    access_log.write("POST /v1/images/generations 200", {**FIELDS, "request_id": "batch-3"})
    access_log.write("POST /v1/images/generations 200", {**FIELDS, "request_id": "batch-4"})
    written = capsys.readouterr().err.splitlines()  # the third line filled the batch
    assert [line.split('"request_id":"')[1].split('"')[0] for line in written] == [
        "batch-1",
        "batch-2",
        "batch-3",
    ]
    access_log.flush()  # as the server does when it stops
    assert '"request_id":"batch-4"' in capsys.readouterr().err


async def test_a_stopped_gateway_has_written_every_access_line(
    tmp_path: Path, raw_config: dict[str, Any], make_key: MakeKey
):
    """Lines still in the batch when the server stops are written on the way out."""
    import signal

    import aiohttp

    from tests.support.processes import post, running_gateway

    key = await make_key("pro")
    async with running_gateway(tmp_path, raw_config) as (url, process):
        async with aiohttp.ClientSession() as session:
            statuses = [await post(session, url, key.key) for _ in range(5)]
        assert statuses == [200] * 5
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    [log_path] = tmp_path.glob("gateway-*.log")
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    generations = [
        line
        for line in lines
        if line.get("logger") == "gateway.access" and line.get("route") == "/v1/images/generations"
    ]
    assert [line["status"] for line in generations] == [200] * 5
