"""Every Redis key and channel name the gateway writes, in one place.

Keys one script touches share a hash tag, so no script crosses a Redis Cluster slot:
``<prefix>{s<N>}:`` for the limits, usage and credits (one of :data:`SHARDS` shards
chosen from the *user* id, so that a user's credit balance and the counters of each of
the user's keys share a slot and one script checks and charges them all),
``<prefix>key:{<hash>}`` for the key cache, ``<prefix>{jobs}:`` for the job queue,
``<prefix>idem:{<user id>}:`` for idempotency keys.
"""

from __future__ import annotations

__all__ = [
    "SHARDS",
    "RedisLayout",
    "denied_token_entry",
    "idempotency_entry",
    "job_cancel_channel",
    "job_stream",
    "key_entry",
    "key_invalidation_channel",
    "throttle_prefix",
]

#: Number of hash-tag shards. Fixed: every process must agree on it.
SHARDS = 16


class RedisLayout:
    """Names of the Redis keys the limiter and the usage flusher share."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._tags = [f"{prefix}{{s{shard}}}:" for shard in range(SHARDS)]

    @staticmethod
    def shard_of(user_id: str) -> int:
        """The shard of everything counted for the user (its keys' counters, its credits).

        From the user, never the key: a user's keys and balance must share a slot."""
        return int(user_id[:8], 16) % SHARDS

    def tag(self, shard: int) -> str:
        return self._tags[shard]

    def counter_prefix(self, shard: int) -> str:
        return f"{self._tags[shard]}img:"

    def counter(self, user_id: str, key_id: str, day: int) -> str:
        return f"{self.counter_prefix(self.shard_of(user_id))}{key_id}:{day}"

    def usage_prefix(self, shard: int) -> str:
        """Prefix of the shard's per-day usage by model and backend (a hash per key and
        day, beside its counter; see admit.lua)."""
        return f"{self._tags[shard]}use:"

    def usage(self, user_id: str, key_id: str, day: int) -> str:
        return f"{self.usage_prefix(self.shard_of(user_id))}{key_id}:{day}"

    def credits(self, user_id: str) -> str:
        """The user's balances (a hash: month, monthly, purchased); see credit scripts."""
        return f"{self._tags[self.shard_of(user_id)]}cr:{user_id}"

    def ledger(self, shard: int) -> str:
        """The shard's credit-ledger entries not yet written to Postgres (a stream of
        packed entries: ``gateway/limits/scripts/ledger_entry.lua``)."""
        return f"{self._tags[shard]}ledger:e"

    def earlier_ledger(self, shard: int) -> str:
        """The stream gateways before packed entries appended to (ten fields an entry):
        still flushed, so that a rolling update loses none. A separate key, so that a
        gateway of that release (during the update, or after going back to it) never
        meets an entry it cannot read."""
        return f"{self._tags[shard]}ledger"

    def pending(self, shard: int) -> str:
        return f"{self._tags[shard]}pending"

    def lease(self, shard: int) -> str:
        return f"{self._tags[shard]}flush-lease"

    def settled(self, shard: int, member: str) -> str:
        """The marker of a reservation given back (release.lua, settle.lua)."""
        return f"{self._tags[shard]}settled:{member}"


def key_entry(prefix: str, key_hash: str) -> str:
    """The key cache's Redis entry of one API key (its own hash tag)."""
    return f"{prefix}key:{{{key_hash}}}"


def key_invalidation_channel(prefix: str) -> str:
    """The pub/sub channel on which processes tell each other to drop cached keys."""
    return f"{prefix}keys:invalidate"


def throttle_prefix(prefix: str) -> str:
    """Where the login and registration throttles keep their counters."""
    return f"{prefix}throttle:"


def denied_token_entry(prefix: str, token_digest: str) -> str:
    """An access token revoked by logging out (its SHA-256), kept until it would expire."""
    return f"{prefix}token-denied:{token_digest}"


def job_stream(prefix: str) -> str:
    """The stream of jobs to run (its consumer group is every gateway process)."""
    return f"{prefix}{{jobs}}:stream"


def job_cancel_channel(prefix: str) -> str:
    """The pub/sub channel on which a cancelled job's id reaches the process running it."""
    return f"{prefix}jobs:cancel"


def idempotency_entry(prefix: str, user_id: str, key_digest: str) -> str:
    """A user's idempotency key (its SHA-256): the request it was taken for, its answer."""
    return f"{prefix}idem:{{{user_id}}}:{key_digest}"
