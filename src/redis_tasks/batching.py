"""Group commit for the worker's writes: calls of one script that come together share one trip.

A worker finishing many short tasks would otherwise pay a round trip, a socket write and a
wake-up of its event loop per task. Here the calls made while a pipeline is in flight wait and
go together in the next one, as one run of a script that handles many (``FINISH``). Each call
keeps its own owner check and its own reply; a run is atomic as a whole. A lone call goes at
once, on the next turn of the loop. Other scripts' calls (``run``: the worker's claims) ride in
the same pipeline, so a worker that finishes tasks and claims the next ones makes one trip.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
from redis.exceptions import NoScriptError

from .connection import AsyncClient
from .direct import AsyncDirectLane

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
        self._lane = AsyncDirectLane.for_client(client)  # None: redis-py's pipelines serve
        self._script = script  # an AsyncScript: its sha, and its source to load it again
        self._keys = keys
        self._pending: dict[tuple[Any, ...], list[tuple[list[Any], asyncio.Future[Any]]]] = {}
        self._singles: list[tuple[Any, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, head: list[Any], item: list[Any]) -> Any:
        """The reply for ``item``; items with the same ``head`` share a script run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(tuple(head), []).append((item, future))
        self._schedule()
        return await future

    async def run(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """The reply of one call of another script (an AsyncScript), sent in the next pipeline."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._singles.append((script, keys, args, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending or self._singles:
                pending, self._pending = self._pending, {}
                singles, self._singles = self._singles, []
                runs = [
                    (list(head), calls[i : i + MAX_BATCH])
                    for head, calls in pending.items()
                    for i in range(0, len(calls), MAX_BATCH)
                ]
                commands = [
                    (self._script, self._keys, [*h, len(c), *(x for item, _ in c for x in item)])
                    for h, c in runs
                ] + [(script, keys, args) for script, keys, args, _ in singles]
                futures = [[future for _, future in calls] for _, calls in runs]
                try:
                    replies = await self._send(commands)
                except BaseException as exc:  # the trip failed: every caller of it sees why
                    for group in [*futures, *([s[3]] for s in singles)]:
                        _fail(group, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for group, reply in zip(futures, replies[: len(runs)], strict=True):
                    if isinstance(reply, Exception):
                        _fail(group, reply)
                        continue
                    for future, value in zip(group, reply, strict=True):
                        _resolve(future, value)
                for (*_, future), reply in zip(singles, replies[len(runs) :], strict=True):
                    if isinstance(reply, Exception):
                        _fail([future], reply)
                    else:
                        _resolve(future, reply)
        finally:
            self._flusher = None

    async def _send(self, commands: list[tuple[Any, list[Any], list[Any]]]) -> list[Any]:
        """One pipeline of EVALSHA calls; those that met an unloaded script (a restarted or
        flushed server) are sent again once it is loaded."""
        client = self._client_ref()
        if client is None:
            raise redis.ConnectionError("the event loop's Redis client is closed")
        replies = await self._pipeline(client, [self._evalsha(*command) for command in commands])
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            for script in {id(commands[i][0]): commands[i][0] for i in missing}.values():
                script.sha = await self._load(client, script.script)
            again = await self._pipeline(client, [self._evalsha(*commands[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _load(self, client: AsyncClient, source: str) -> str:
        """Load a script, down the same lane as the calls: redis-py 8.1's asyncio pool lends
        an idle connection that the server closed (its check is off while maintenance
        notifications are "auto"), the lane checks its own."""
        if self._lane is None:
            return str(await client.script_load(source))
        (sha,) = await self._lane.pipeline([("SCRIPT", "LOAD", source)])
        if isinstance(sha, Exception):
            raise sha
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    @staticmethod
    def _evalsha(script: Any, keys: list[Any], args: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _pipeline(self, client: AsyncClient, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands in one trip, down the direct lane where there is one (direct.py)."""
        if self._lane is not None:
            return await self._lane.pipeline(commands)
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # else its caller was cancelled (shutdown)
        future.set_result(value)


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
