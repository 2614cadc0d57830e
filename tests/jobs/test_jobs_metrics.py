"""The jobs' metrics on /metrics: jobs by status, queue depth, time queued and running,
attempts (webhook deliveries by outcome: tests/jobs/test_webhooks.py)."""

from __future__ import annotations

from tests.support.gateway import Gateway, MakeGateway, MakeKey
from tests.support.http import bearer
from tests.support.jobs import JOBS, submit, wait_for_job
from tests.support.metrics import metric_total


async def _metrics(gateway: Gateway) -> str:
    response = await gateway.client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def test_jobs_by_status_queue_depth_times_and_attempts(
    make_app: MakeGateway, make_key: MakeKey
):
    submitter = await make_app({"jobs": {"work": False}})  # nobody works the queue yet
    key = await make_key()
    ids = [(await (await submit(submitter.client, key.key)).json())["id"] for _ in range(3)]
    await submitter.client.post(f"{JOBS}/{ids[0]}/cancel", headers=bearer(key.key))
    runner = submitter.services.jobs
    assert runner is not None
    await runner.sweep()
    text = await _metrics(submitter)
    assert metric_total(text, "gateway_jobs_total", status="canceled") == 1
    assert metric_total(text, "gateway_jobs_unfinished", status="queued") == 2
    assert metric_total(text, "gateway_jobs_unfinished", status="running") == 0
    assert metric_total(text, "gateway_job_queue_depth") == 3  # the canceled one's entry too

    worker = await make_app()
    for job_id in ids[1:]:
        assert (await wait_for_job(worker.client, key.key, job_id))["status"] == "succeeded"
    worker_runner = worker.services.jobs
    assert worker_runner is not None
    await worker_runner.sweep()
    text = await _metrics(worker)
    assert metric_total(text, "gateway_jobs_total", status="succeeded") == 2
    assert metric_total(text, "gateway_job_attempts_total") == 2
    assert metric_total(text, "gateway_job_queued_seconds_count") == 2
    assert metric_total(text, "gateway_job_running_seconds_count") == 2
    assert metric_total(text, "gateway_jobs_unfinished", status="queued") == 0
    assert metric_total(text, "gateway_job_queue_depth") == 0
