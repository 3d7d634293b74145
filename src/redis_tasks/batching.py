"""Group commit for the worker's writes: calls of one script that come together share one trip.

A worker finishing many short tasks would otherwise pay a round trip, a socket write and a
wake-up of its event loop per task. Here the calls made while a pipeline is in flight wait and
go together in the next one, as one run of a script that handles many (``FINISH``). Each call
keeps its own owner check and its own reply; a run is atomic as a whole. A lone call goes at
once, on the next turn of the loop.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
from redis.exceptions import NoScriptError

from .connection import AsyncClient

# Calls per script run: bounded, so that one run stays short (Redis serves nobody else meanwhile)
# and its argument lists stay far below Lua's limits.
MAX_BATCH = 256


class ScriptBatcher:
    """Merges the calls of one batch script on one event loop's client.

    The script takes ``KEYS`` and ``ARGV`` = ``head``, the number of items, then the fields of
    each item (a fixed number per item), and returns one reply per item."""

    def __init__(self, client: AsyncClient, script: Any, keys: list[str]) -> None:
        # Weak: the store keeps batchers per client in a WeakKeyDictionary, and a batcher must
        # not keep a closed loop's client alive.
        self._client_ref = weakref.ref(client)
        self._script = script  # an AsyncScript: its sha, and its source to load it again
        self._keys = keys
        self._pending: dict[tuple[Any, ...], list[tuple[list[Any], asyncio.Future[Any]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, head: list[Any], item: list[Any]) -> Any:
        """The reply for ``item``; items with the same ``head`` share a script run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(tuple(head), []).append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, {}
                runs = [
                    (list(head), calls[i : i + MAX_BATCH])
                    for head, calls in pending.items()
                    for i in range(0, len(calls), MAX_BATCH)
                ]
                try:
                    replies = await self._send(
                        [[*h, len(c), *(x for item, _ in c for x in item)] for h, c in runs]
                    )
                except BaseException as exc:  # the trip failed: every caller of it sees why
                    for _, calls in runs:
                        _fail(calls, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, calls), reply in zip(runs, replies, strict=True):
                    if isinstance(reply, Exception):
                        _fail(calls, reply)
                        continue
                    for (_, future), value in zip(calls, reply, strict=True):
                        if not future.done():  # else its caller was cancelled (shutdown)
                            future.set_result(value)
        finally:
            self._flusher = None

    async def _send(self, argvs: list[list[Any]]) -> list[Any]:
        """One pipeline of EVALSHA calls; those that met an unloaded script (a restarted or
        flushed server) are sent again once it is loaded."""
        client = self._client_ref()
        if client is None:
            raise redis.ConnectionError("the event loop's Redis client is closed")
        numkeys = len(self._keys)
        pipe = client.pipeline(transaction=False)
        for argv in argvs:
            pipe.execute_command("EVALSHA", self._script.sha, numkeys, *self._keys, *argv)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._script.sha = await client.script_load(self._script.script)
            again = client.pipeline(transaction=False)
            for i in missing:
                again.execute_command("EVALSHA", self._script.sha, numkeys, *self._keys, *argvs[i])
            for i, reply in zip(missing, await again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies


def _fail(calls: list[tuple[list[Any], asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in calls:
        if not future.done():
            future.set_exception(exc)
