"""Group commit for the worker's writes: calls of one script that come together share one trip.

A worker finishing many short tasks would otherwise pay a round trip, a socket write and a
wake-up of its event loop per task. Here the calls made while a pipeline is in flight wait and
go together in the next one. Each call is still its own atomic script with its own reply, so
nothing about a single write changes (its owner check, its all-or-nothing); only the trip is
shared. A lone call goes at once, on the next turn of the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError


class ScriptBatcher:
    """Pipelines the calls of one Lua script on one event loop's client."""

    def __init__(self, client: redis.asyncio.Redis, script: Any) -> None:
        self._client = client
        self._script = script  # an AsyncScript: its sha, and its source to load it again
        self._pending: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(([len(keys), *keys, *args], future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    replies = await self._send([argv for argv, _ in batch])
                except BaseException as exc:  # the trip failed: every caller of it sees why
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if future.done():  # its caller was cancelled (shutdown): nobody waits
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._flusher = None

    async def _send(self, calls: list[list[Any]]) -> list[Any]:
        """One pipeline of EVALSHA calls; calls that met an unloaded script (a restarted or
        flushed server) are sent again once it is loaded."""
        pipe = self._client.pipeline(transaction=False)
        for argv in calls:
            pipe.execute_command("EVALSHA", self._script.sha, *argv)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._script.sha = await self._client.script_load(self._script.script)
            again = self._client.pipeline(transaction=False)
            for i in missing:
                again.execute_command("EVALSHA", self._script.sha, *calls[i])
            for i, reply in zip(missing, await again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies
