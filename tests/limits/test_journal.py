"""The reservation journal: images admitted by a process that died undelivered come back.

The process-level proof (a real gateway killed with SIGKILL) is in ops/test_faults.py; these
tests drive the journal and the settling script directly, against the real Redis.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.keys.cache import KeyRecord
from gateway.limits.admission import Admission, Refund
from gateway.limits.decision import ADMITTED
from gateway.limits.journal import ADMITTING, Journal
from gateway.redis.pipelined import PipelinedRedis
from gateway.usage.flusher import PostgresSeeds
from gateway.usage.labels import usage_label
from tests.support.config import REDIS_URL
from tests.support.gateway import Gateway, MakeKey
from tests.support.processes import free_port
from tests.support.usage import model_usage_rows, today, usage_rows


def _record(key_id: str, user_id: str, monthly_credits: int | None = None) -> KeyRecord:
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
        monthly_credits=monthly_credits,
    )


AdmissionLike = Callable[..., Admission]


@pytest.fixture
async def admission_like(gateway: Gateway) -> AsyncIterator[AdmissionLike]:
    """Another process's admission: the same Redis data (unless ``redis_url`` says
    otherwise), its own connection and the given journal."""
    services = gateway.services
    clients: list[PipelinedRedis] = []

    def make(journal: Journal, redis_url: str = REDIS_URL) -> Admission:
        clients.append(PipelinedRedis(redis_url, timeout=1))
        seeds = PostgresSeeds(services.pool)
        return Admission(services.redis, services.layout, seeds, hot=clients[-1], journal=journal)

    yield make
    for client in clients:
        await client.aclose()


def _another_process_journal(gateway: Gateway) -> Journal:
    """An open journal beside the gateway's own, as another process on the host has."""
    own = gateway.services.admission._journal
    assert own is not None
    journal = Journal(own.directory)
    journal.open()
    return journal


async def test_a_dead_process_reservations_are_given_back_once(
    gateway: Gateway, make_key: MakeKey, db, admission_like: AdmissionLike
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    dead = _another_process_journal(gateway)
    assert dead.path is not None
    assert dead.path.exists()
    doomed = admission_like(dead)

    delivered = await doomed.admit(record, 3)
    doomed.delivered(delivered)  # sent: stays charged
    admitted = await doomed.admit(record, 4)  # admitted, never answered
    replied_never = await doomed.admit(record, 2)  # Redis ran it; the reply was lost
    assert admitted.outcome == replied_never.outcome == ADMITTED
    # The process died between sending the script and reading its reply: rewind that
    # slot to what the journal held while the reply was on its way.
    lost = dead.entry(replied_never.ticket)
    dead.end(replied_never.ticket)
    ticket = dead.begin(lost.key_id, lost.images, lost.member, lost.user_id)
    assert dead.entry(ticket).state == ADMITTING
    assert dead.entry(ticket).day == -1
    dead.begin(str(key.key_id), 5, "member-that-never-reached-redis", str(key.user_id))

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


async def test_a_dead_process_reserved_credits_are_given_back_once(
    gateway: Gateway, make_key: MakeKey, admission_like: AdmissionLike
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id), monthly_credits=100)
    survivor = gateway.services.admission
    dead = _another_process_journal(gateway)
    doomed = admission_like(dead)

    delivered = await doomed.admit(record, 3, price=2)
    doomed.delivered(delivered)  # sent: its 6 credits stay charged
    admitted = await doomed.admit(record, 4, price=2)  # 8 credits, never answered
    replied_never = await doomed.admit(record, 2, price=2)  # 4 credits, the reply lost
    assert replied_never.credits_remaining == 100 - 6 - 8 - 4
    lost = dead.entry(replied_never.ticket)
    assert (lost.price, lost.purchased, lost.month) == (2, 0, replied_never.month)
    dead.end(replied_never.ticket)
    dead.begin(lost.key_id, lost.images, lost.member, lost.user_id, lost.price)
    dead.abandon()

    assert await survivor.settle_orphans() == 4 + 2
    after = await survivor.admit(record, 1, price=1)
    assert after.credits_remaining == 100 - 6 - 1
    assert admitted.member != replied_never.member


async def test_a_live_process_journal_is_left_alone(
    gateway: Gateway, make_key: MakeKey, db, admission_like: AdmissionLike
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    alive = _another_process_journal(gateway)
    try:
        other = admission_like(alive)
        decision = await other.admit(record, 2)  # in flight in a live process
        assert await survivor.settle_orphans() == 0
        assert alive.path is not None
        assert alive.path.exists()
        await gateway.flush()
        assert await usage_rows(db, key.key_id) == {today(): 2}
        other.delivered(decision)
    finally:
        alive.close()
    assert not alive.path.exists()


async def test_failed_and_short_upstream_calls_charge_what_was_delivered_and_free_their_slots(
    make_key: MakeKey, fake_upstream, make_gateway, db
):
    from tests.support.upstreams import upstream_config

    remote = await make_gateway(upstream_config(fake_upstream, retries=0))
    journal = remote.services.admission._journal
    assert journal is not None
    key = await make_key("pro")
    fake_upstream.mode = "fail"
    assert (await remote.generate(key.key, model="remote", n=2)).status == 502
    fake_upstream.mode = "short"  # n - 1 images
    short = await remote.generate(key.key, model="remote", n=3)
    assert short.status == 200
    assert len((await short.json())["data"]) == 2
    assert (await remote.generate(key.key)).status == 200
    await remote.flush()
    assert await usage_rows(db, key.key_id) == {today(): 3}
    assert journal.in_use == 0  # nothing left to settle, were the process to die now


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


async def test_a_release_sent_again_gives_back_nothing_more(
    gateway: Gateway, make_key: MakeKey, db
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    admission = gateway.services.admission
    kept = await admission.admit(record, 2)
    admission.delivered(kept)
    failed = await admission.admit(record, 3)
    await admission.release(record, failed, 3)
    # As after a timeout or a reconnect: the same release once more.
    admission.unsent.append(
        Refund(record.user_id, record.key_id, failed.day, failed.member, images=3)
    )
    await admission.retry_unsent()
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}


async def test_a_journal_that_cannot_be_settled_is_set_aside_and_counts_still_flush(
    gateway: Gateway, make_key: MakeKey, db
):
    dead = _another_process_journal(gateway)
    slot = dead.begin("not-a-key-id", 2, "member", "not-a-user-id")
    dead.admitted(slot, 20_000)
    dead.abandon()
    assert dead.path is not None
    key = await make_key("pro")
    assert (await gateway.generate(key.key, n=2)).status == 200
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 2}
    assert not dead.path.exists()
    bad = dead.path.with_name(dead.path.name + ".bad")
    assert bad.exists()
    bad.unlink()


async def test_a_journal_from_before_a_reboot_is_discarded_not_settled(
    gateway: Gateway, make_key: MakeKey, db, admission_like: AdmissionLike
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    dead = _another_process_journal(gateway)
    await admission_like(dead).admit(record, 4)
    assert dead.path is not None
    with dead.path.open("r+b") as f:  # as if written before the machine restarted
        f.seek(8)
        f.write(b"00000000-0000-0000-0000-000000000000")
    dead.abandon()
    assert await survivor.settle_orphans() == 0  # its pages may be stale: charge stays
    assert not dead.path.exists()
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 4}


async def test_a_dead_process_reservations_leave_the_usage_of_their_model_and_backend(
    gateway: Gateway, make_key: MakeKey, db, admission_like: AdmissionLike
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    dead = _another_process_journal(gateway)
    doomed = admission_like(dead)
    sketch = usage_label("sketch", "second")
    delivered = await doomed.admit(record, 3, label=sketch)
    doomed.delivered(delivered)
    await doomed.admit(record, 4, label=sketch)  # never answered
    await doomed.admit(record, 2, label=usage_label("local", "local"))  # nor this one
    dead.abandon()

    assert await survivor.settle_orphans() == 4 + 2
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 3}
    assert await model_usage_rows(db, key.key_id) == {
        (today(), "sketch", "second"): (3, 0),
        (today(), "local", "local"): (0, 0),
    }


async def test_a_journal_of_the_layout_before_labels_is_still_settled(
    gateway: Gateway, make_key: MakeKey, db, admission_like: AdmissionLike
):
    """A process of the previous release, killed mid-upgrade: its slots hold no label."""
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    survivor = gateway.services.admission
    dead = _another_process_journal(gateway)
    admitted = await admission_like(dead).admit(record, 5)
    entry = dead.entry(admitted.ticket)
    dead.abandon()
    assert dead.path is not None
    old = struct.Struct("<BxxxIi40s40s40sIii")  # the slot before labels
    header = dead.path.read_bytes()[:64]
    slot = old.pack(
        ADMITTED, 5, entry.day, entry.key_id.encode(), entry.member.encode(),
        entry.user_id.encode(), 0, -1, -1,
    )  # fmt: skip
    dead.path.write_bytes(b"GWJ3" + header[4:] + slot + bytes(old.size * 3))

    assert await survivor.settle_orphans() == 5
    assert not dead.path.exists()
    await gateway.flush()
    assert await usage_rows(db, key.key_id) == {today(): 0}


def test_a_journal_directory_others_can_write_to_is_refused(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="journal_dir"):
        Journal(shared).open()
    assert list(shared.iterdir()) == []


async def test_an_admission_that_never_left_the_process_frees_its_slot(
    gateway: Gateway, make_key: MakeKey, tmp_path: Path, admission_like: AdmissionLike
):
    key = await make_key("pro")
    record = _record(str(key.key_id), str(key.user_id))
    journal = Journal(tmp_path / "journal")
    journal.open()
    admission = admission_like(journal, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(RedisConnectionError):  # nothing listens there
            await admission.admit(record, 1)
        assert journal.in_use == 0
        assert not admission.doubtful
    finally:
        journal.close()


def test_processes_using_the_same_redis_data_share_a_journal_directory():
    from gateway.limits.journal import default_directory

    same = {
        default_directory(url, "gw:")
        for url in (
            "redis://127.0.0.1:6379/0",
            "redis://127.0.0.1:6379",
            "redis://:secret@127.0.0.1:6379/0",
            "REDIS://127.0.0.1:6379/0",
        )
    }
    assert len(same) == 1
    (directory,) = same
    assert "secret" not in str(directory)
    assert default_directory("redis://127.0.0.1:6379/1", "gw:") != directory
    assert default_directory("redis://127.0.0.1:6380/0", "gw:") != directory
    assert default_directory("redis://127.0.0.1:6379/0", "other:") != directory
