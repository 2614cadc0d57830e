"""Submitting jobs and waiting for them to end, over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.http import bearer

__all__ = ["FINISHED", "JOBS", "submit", "wait_for_job"]

JOBS = "/v1/images/jobs"
FINISHED = ("succeeded", "failed", "canceled")


async def submit(client: Any, key: str, base: str = "", **body: Any) -> Any:
    """``POST /v1/images/jobs`` (``client`` a TestClient, or an aiohttp session and
    ``base`` the server's URL); the response."""
    body.setdefault("prompt", "a lighthouse at dawn")
    body.setdefault("size", "256x256")
    return await client.post(f"{base}{JOBS}", json=body, headers=bearer(key))


async def wait_for_job(
    client: Any, key: str, job_id: str, base: str = "", *, timeout: float = 20.0
) -> dict[str, Any]:
    """The job once it has ended (or fails the test after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get(f"{base}{JOBS}/{job_id}", headers=bearer(key))
            assert response.status == 200, await response.text()
            job: dict[str, Any] = await response.json()
            if job["status"] in FINISHED:
                return job
            await asyncio.sleep(0.05)
