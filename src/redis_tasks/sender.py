"""Sending script calls to Redis: one sync and one asyncio sender, for every script.

A ``Call`` is a script with its KEYS and ARGV, built by a plain function in ``calls.py``. The
senders run it by its SHA (``EVALSHA``) and, where the server does not know the script (a
restarted or flushed server, a new master after a failover: nothing ran), load it and send it
again: that is handled here once, for every script and every transport. The transport is the
client's direct lane where it has one (``shims/redis_py.py``), else redis-py's own path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, TypeAlias

import redis
import redis.asyncio
from redis.exceptions import NoScriptError

from .scripts import Script
from .shims.redis_py import AsyncDirectLane, DirectLane

SyncClient: TypeAlias = "redis.Redis | redis.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.RedisCluster"


def in_cluster(client: Any) -> bool:
    return isinstance(client, redis.RedisCluster | redis.asyncio.RedisCluster)


def on_node_of(client: Any, key: str) -> dict[str, Any]:
    """Keyword arguments sending a keyless command (WAIT, CONFIG, TIME) to the node that holds
    ``key``: on a cluster redis-py would otherwise pick a node at random."""
    if in_cluster(client):
        return {"target_nodes": client.get_node_from_key(key)}
    return {}


class Call(NamedTuple):  # made per enqueue: a tuple costs less than a dataclass
    script: Script
    keys: Sequence[str]
    args: Sequence[Any]

    def command(self) -> tuple[Any, ...]:
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


class SyncSender:
    def __init__(self, client: SyncClient, lane: DirectLane | None = None) -> None:
        self.client = client
        self.lane = lane

    def run(self, call: Call) -> Any:
        """The script's reply; its error reply is raised (redis.ResponseError)."""
        try:
            return self._send(call.command())
        except NoScriptError:
            self._load(call)
            return self._send(call.command())

    def run_then(self, call: Call, after: Sequence[Sequence[Any]]) -> tuple[Any, list[Any]]:
        """The script, then ``after`` (keyless commands such as WAIT, at least one) on the same
        connection in one trip; the script's reply (its error raised) and the others' (errors
        as values)."""
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            # execute_command: redis-py refuses pipe.evalsha() on a cluster, not the command.
            pipe.execute_command(*call.command())
            for command in after:
                pipe.execute_command(*command, **on_node_of(self.client, call.keys[0]))
            reply, *others = pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            self._load(call)
        if isinstance(reply, Exception):
            raise reply
        return reply, others

    def _send(self, command: tuple[Any, ...]) -> Any:
        if self.lane is not None:
            return self.lane(*command)
        return self.client.execute_command(*command)  # type: ignore[no-untyped-call]

    def _load(self, call: Call) -> None:
        source = call.script.source
        if self.lane is not None:
            self.lane("SCRIPT", "LOAD", source)
        else:
            where = on_node_of(self.client, call.keys[0])
            self.client.execute_command("SCRIPT", "LOAD", source, **where)  # type: ignore[no-untyped-call]


class AsyncSender:
    """The asyncio sender: calls (and keyless commands after them) in one pipeline."""

    def __init__(self, client: AsyncClient, lane: AsyncDirectLane | None = None) -> None:
        self.client = client
        self.lane = lane

    async def run(self, call: Call) -> Any:
        (reply,) = await self.pipeline([call])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def run_then(self, call: Call, after: Sequence[Sequence[Any]]) -> tuple[Any, list[Any]]:
        """The script, then ``after`` (maybe none), as ``SyncSender.run_then``."""
        reply, *others = await self.pipeline([call], after)
        if isinstance(reply, Exception):
            raise reply
        return reply, others

    async def pipeline(
        self, calls: Sequence[Call], after: Sequence[Sequence[Any]] = ()
    ) -> list[Any]:
        """Every call's reply (an error reply as its exception), then the replies of ``after``,
        in one trip; the calls that met an unloaded script are sent again once it is loaded
        (with ``after``, whose replies must follow the script on the same connection)."""
        key = calls[0].keys[0] if calls and calls[0].keys else None
        commands = [call.command() for call in calls]
        afters = [tuple(command) for command in after]
        replies = await self._send(commands, afters, key)
        missing = [i for i, reply in enumerate(replies[: len(calls)]) if _no_script(reply)]
        if missing:
            for script in {calls[i].script.sha: calls[i].script for i in missing}.values():
                await self._load(script.source, key)
            again = await self._send([commands[i] for i in missing], afters, key)
            for i, reply in zip(missing, again, strict=False):
                replies[i] = reply
            replies[len(calls) :] = again[len(missing) :]
        return replies

    async def _send(
        self, commands: list[tuple[Any, ...]], after: list[tuple[Any, ...]], key: str | None
    ) -> list[Any]:
        if self.lane is not None:
            return await self.lane.pipeline([*commands, *after])
        if in_cluster(self.client):  # a new asyncio cluster client learns the slots on first use
            await self.client.initialize()
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        for command in after:
            pipe.execute_command(*command, **({} if key is None else on_node_of(self.client, key)))
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _load(self, source: str, key: str | None) -> None:
        """Load a script, down the same lane as the calls: redis-py 8.1's asyncio pool lends
        an idle connection that the server closed (its check is off while maintenance
        notifications are "auto"), the lane checks its own."""
        if self.lane is not None:
            (reply,) = await self.lane.pipeline([("SCRIPT", "LOAD", source)])
            if isinstance(reply, Exception):
                raise reply
            return
        where = {} if key is None else on_node_of(self.client, key)
        await self.client.execute_command("SCRIPT", "LOAD", source, **where)


def _no_script(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
