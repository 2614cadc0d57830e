"""The hot path's client on a Redis Cluster: one pipelined connection per primary.

Each call goes to the primary that owns its first key's hash slot (every script's keys
share a hash tag, so that is every key's slot), over that node's
:class:`~gateway.redis.pipelined.PipelinedRedis`: the same single write per event-loop
iteration and in-order replies as on one Redis, so a request still costs exactly one
round trip. The slot map comes from ``CLUSTER SLOTS`` and is kept right as the
cluster changes:

* ``MOVED <slot> <node>`` (a slot migrated, a replica promoted): the call is sent to
  that node, the slot map is refreshed in the background;
* ``ASK <slot> <node>`` (a slot being migrated, this key already gone): the call is
  sent to that node behind ``ASKING``, the map unchanged;
* ``TRYAGAIN`` (a migration has the script's keys on both nodes for a moment) and
  ``CLUSTERDOWN``: sent again shortly, a few times, within the call's timeout;
* a primary that cannot be reached (killed, failing over): the call never left this
  process, so after a refresh it goes to the slot's new owner; until a replica is
  promoted the call fails with :class:`~gateway.redis.pipelined.NotSent`.

A call whose connection is lost after it was sent is never resent (it may have run):
it fails as on one Redis, and the slot map is refreshed for the next calls.

Why not redis-py's ``RedisCluster`` here: it checks a pooled connection out per
command, as ``Redis`` does. Measured on this machine (``python -m bench.cluster_client``,
a one-key script, 100 calls in flight over a local 3-primary cluster): about 7 us of
CPU per call and 60,000 calls/s through this client, against about 90 us and 10,000
calls/s through ``RedisCluster``: what :mod:`gateway.redis.pipelined` removed on one
Redis, again. The slower paths use ``RedisCluster``
(:func:`gateway.redis.client.create_redis`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.redis.pipelined import NotSent, PipelinedRedis, ScriptText, encode_command

__all__ = ["RoutedRedis", "RoutedScript"]

log = logging.getLogger(__name__)

#: Redirections and retries one call may follow before its error is raised.
MAX_REDIRECTS = 8
#: Wait before sending again after ``TRYAGAIN``/``CLUSTERDOWN`` (doubling each time).
RETRY_PAUSE_S = 0.01
#: The slot map is read at most this often when nodes keep failing.
REFRESH_PAUSE_S = 0.1

_Text = str | int | float


class RoutedRedis:
    """Pipelined connections to a Redis Cluster's primaries, found from ``urls`` (one
    ``redis://`` or ``rediss://`` URL per known node, as
    :func:`gateway.config.urls.cluster_nodes` gives them)."""

    def __init__(self, urls: list[str], *, timeout: float) -> None:
        first = urlsplit(urls[0])
        credentials = first.netloc.rpartition("@")[0]
        self._url_format = f"{first.scheme}://{credentials}{'@' if credentials else ''}{{}}/" + (
            f"?{first.query}" if first.query else ""
        )
        self._timeout = timeout
        self._seeds = [urlsplit(url).netloc.rpartition("@")[2] for url in urls]
        self._nodes: dict[str, PipelinedRedis] = {}
        self._slots: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")
        self._closed = False

    def script(self, source: str) -> RoutedScript:
        return RoutedScript(self, source)

    def node(self, address: str) -> PipelinedRedis:
        """The pipelined connection to ``host:port``."""
        client = self._nodes.get(address)
        if client is None:
            if self._closed:
                raise NotSent("the Redis client is closed")
            client = PipelinedRedis(self._url_format.format(address), timeout=self._timeout)
            self._nodes[address] = client
        return client

    async def call(self, key: str, *parts: str | bytes | int | float) -> Any:
        """Send a command to the node that owns ``key``'s slot; its reply."""
        return await self.send(key_slot(key.encode()), encode_command(parts))

    async def send(self, slot: int, payload: bytes, *, script: str | None = None) -> Any:
        """Send one encoded command to the owner of ``slot``, following redirections.

        ``script``: the source of the script ``payload`` calls, loaded on the node that
        answers ``NOSCRIPT`` (the slot's owner, or the node an ``ASK`` sent it to).
        """
        address = self._slots[slot]
        if address is None:
            await self.refresh()
            address = self._slots[slot]
            if address is None:
                raise NotSent(f"no node of the Redis Cluster serves slot {slot}")
        asking = False
        pause = RETRY_PAUSE_S
        for _ in range(MAX_REDIRECTS):
            client = self.node(address)
            try:
                if asking:
                    return await client.send_asking(payload)
                return await client.send(payload)
            except NoScriptError:
                if script is None:
                    raise
                await client.call("SCRIPT", "LOAD", script)  # it did not run: send again
                script = None
            except NotSent:
                # It never left: the node is gone. Its slots may have a new owner.
                await self.refresh(wait=True)
                moved_to = self._slots[slot]
                if moved_to is None or moved_to == address:
                    raise
                address, asking = moved_to, False
            except ResponseError as exc:
                message = str(exc)
                if message.startswith("MOVED "):
                    address = message.rsplit(" ", 1)[1]
                    self._slots[slot] = address
                    asking = False
                    self._refresh_soon()
                elif message.startswith("ASK "):
                    address = message.rsplit(" ", 1)[1]
                    asking = True
                elif message.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                    await asyncio.sleep(pause)
                    pause *= 2
                else:
                    raise
            except (RedisConnectionError, RedisTimeoutError):
                self._refresh_soon()  # sent, maybe run: not resent, but look again
                raise
        raise NotSent(f"slot {slot} is still moving after {MAX_REDIRECTS} redirections")

    # -- the slot map ----------------------------------------------------------------

    def _refresh_soon(self) -> None:
        if self._refreshing is None and not self._closed:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)

    async def refresh(self, *, wait: bool = True) -> None:
        """Read the slot map again (one read at a time, shared by whoever waits)."""
        loop = asyncio.get_running_loop()
        if self._refreshing is None and loop.time() - self._refreshed_at < REFRESH_PAUSE_S:
            return
        self._refresh_soon()
        if wait and self._refreshing is not None:
            await asyncio.shield(self._refreshing)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        self._refreshed_at = asyncio.get_running_loop().time()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("could not read the Redis Cluster's slot map: %s", error)

    async def _refresh(self) -> None:
        candidates = list(dict.fromkeys([*self._seeds, *self._nodes]))
        error: BaseException | None = None
        for address in candidates:
            try:
                reply = await self.node(address).call("CLUSTER", "SLOTS")
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                error = exc
                continue
            host = address.rsplit(":", 1)[0]
            slots = self._slots
            for start, end, primary, *_ in reply:
                owner = f"{(primary[0] or host.encode()).decode()}:{int(primary[1])}"
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = owner
            return
        raise NotSent(f"no node of the Redis Cluster answers: {error}")

    async def aclose(self) -> None:
        """Close every connection; later calls fail with :class:`NotSent`."""
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        for client in list(self._nodes.values()):
            await client.aclose()


class RoutedScript(ScriptText):
    """A Lua script sent to the node of its first key's slot; loaded there on
    ``NOSCRIPT`` (a node just added or promoted)."""

    def __init__(self, client: RoutedRedis, source: str) -> None:
        super().__init__(source)
        self._client = client

    async def __call__(self, keys: tuple[str, ...], args: Sequence[_Text]) -> Any:
        return await self._client.send(
            key_slot(keys[0].encode()), self.payload(keys, args), script=self.source
        )
