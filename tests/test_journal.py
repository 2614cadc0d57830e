"""The reservation journal: images admitted by a process that died undelivered come back.

The process-level proof (a real gateway killed with SIGKILL) is in test_faults.py; these
tests drive the journal and the settling script directly, against the real Redis.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from gateway.keys.cache import KeyRecord
from gateway.limits.admission import ADMITTED, Admission
from gateway.limits.journal import ADMITTING, Journal
from gateway.usage.flusher import PostgresSeeds
from tests.conftest import Gateway, MakeKey, today, usage_rows


def _record(key_id: str, user_id: str) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        user_id=user_id,
        plan="pro",
        key_active=True,
        user_active=True,
        expires_at=None,
        requests_per_minute=1000,
        images_per_day=1000,
        max_images_per_request=10,
    )


def _admission_like(gateway: Gateway, journal: Journal) -> Admission:
    """Another process's admission: the same Redis data, its own journal."""
    services = gateway.services
    return Admission(services.redis, services.layout, PostgresSeeds(services.pool), journal=journal)


async def test_a_dead_process_reservations_are_given_back_once(
    gateway: Gateway, make_key: MakeKey, db, tmp_path: Path
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    shared = survivor._journal
    assert shared is not None
    dead = Journal(shared.directory)
    dead.open()
    assert dead.path is not None
    assert dead.path.exists()
    doomed = _admission_like(gateway, dead)

    delivered = await doomed.admit(record, 3, "r1")
    doomed.delivered(delivered)  # sent: stays charged
    admitted = await doomed.admit(record, 4, "r2")  # admitted, never answered
    replied_never = await doomed.admit(record, 2, "r3")  # Redis ran it; the reply was lost
    assert admitted.outcome == replied_never.outcome == ADMITTED
    # The process died between sending the script and reading its reply: rewind that
    # slot to what the journal held while the reply was on its way.
    lost = dead.entry(replied_never.ticket)
    dead.end(replied_never.ticket)
    ticket = dead.begin(lost.key_id, lost.images, lost.member)
    assert dead.entry(ticket).state == ADMITTING
    assert dead.entry(ticket).day == -1
    dead.begin(str(key.key_id), 5, "member-that-never-reached-redis")

    dead.abandon()  # the process is gone: its lock with it, the file stays
    assert dead.path.exists()

    given_back = await survivor.settle_orphans()
    assert given_back == 4 + 2  # not the delivered 3, not the 5 that never reached Redis
    assert not dead.path.exists()
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 3}

    # Settling is once only, whoever repeats it.
    for entry in (lost, dataclasses.replace(lost, state=ADMITTING, day=-1)):
        assert await survivor.settle(entry) == 0


async def test_a_live_process_journal_is_left_alone(gateway: Gateway, make_key: MakeKey, db):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    assert survivor._journal is not None
    alive = Journal(survivor._journal.directory)
    alive.open()
    try:
        other = _admission_like(gateway, alive)
        decision = await other.admit(record, 2, "r1")  # in flight in a live process
        assert await survivor.settle_orphans() == 0
        assert alive.path is not None
        assert alive.path.exists()
        await gateway.flush()
        assert await usage_rows(db, key.key_id) == {today(): 2}
        other.delivered(decision)
    finally:
        alive.close()
    assert not alive.path.exists()


async def test_a_failed_upstream_call_settles_the_journal(
    gateway: Gateway, make_key: MakeKey, fake_upstream, make_gateway
):
    from tests.conftest import upstream_config

    fake_upstream.mode = "fail"
    remote = await make_gateway(upstream_config(fake_upstream, retries=0))
    journal = remote.services.admission._journal
    assert journal is not None
    key = await make_key("pro")
    assert (await remote.generate(key.key, model="remote")).status >= 500
    assert (await remote.generate(key.key)).status == 200
    assert journal.in_use == 0


async def test_a_journal_being_created_is_not_taken_for_a_dead_one(
    gateway: Gateway, tmp_path: Path
):
    survivor = gateway.services.admission
    assert survivor._journal is not None
    directory = survivor._journal.directory
    half_made = directory / f"{os.getpid()}-half.journal"
    half_made.write_bytes(b"")  # created, not yet locked and written by its process
    try:
        await survivor.settle_orphans()
        assert half_made.exists()
    finally:
        half_made.unlink(missing_ok=True)
