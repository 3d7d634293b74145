"""Group commit for the worker's writes: calls of one script that come together share one trip.

A worker finishing many short tasks would otherwise pay a round trip, a socket write and a
wake-up of its event loop per task. Here the calls made while a pipeline is in flight wait and
go together in the next one, as one run of a script that handles many (the finish script). Each
call keeps its own owner check and its own reply; a run is atomic as a whole. A lone call goes
at once, on the next turn of the loop. Other calls (``run``: the worker's claims) ride in the
same pipeline, so a worker that finishes tasks and claims the next ones makes one trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .sender import AsyncSender, Call

# Items per script run: bounded, so that one run stays short (Redis serves nobody else meanwhile)
# and its argument lists stay far below Lua's limits.
MAX_BATCH = 256

Build = Callable[[Sequence[Sequence[Any]]], Call]


class ScriptBatcher:
    """Merges calls on one event loop's sender (one batcher per loop)."""

    def __init__(self, sender: AsyncSender) -> None:
        self.sender = sender
        self._merged: dict[Hashable, tuple[Build, list[tuple[Sequence[Any], asyncio.Future[Any]]]]]
        self._merged = {}
        self._singles: list[tuple[Call, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def merged(self, group: Hashable, item: Sequence[Any], build: Build) -> Any:
        """This item's reply from one run of ``build(items)`` over the items of ``group`` sent
        together (the run replies with a list, one entry per item)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._merged.setdefault(group, (build, []))[1].append((item, future))
        self._schedule()
        return await future

    async def run(self, call: Call) -> Any:
        """The reply of another call, sent in the next pipeline."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._singles.append((call, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._merged or self._singles:
                merged, self._merged = self._merged, {}
                singles, self._singles = self._singles, []
                runs = [
                    (build, entries[i : i + MAX_BATCH])
                    for build, entries in merged.values()
                    for i in range(0, len(entries), MAX_BATCH)
                ]
                calls = [build([item for item, _ in entries]) for build, entries in runs]
                calls += [call for call, _ in singles]
                waiting = [[future for _, future in entries] for _, entries in runs]
                waiting += [[future] for _, future in singles]
                try:
                    replies = await self.sender.pipeline(calls)
                except BaseException as exc:  # the trip failed: every caller of it sees why
                    for futures in waiting:
                        _fail(futures, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for at, (futures, reply) in enumerate(zip(waiting, replies, strict=True)):
                    if isinstance(reply, Exception):
                        _fail(futures, reply)
                    elif at < len(runs):
                        for future, value in zip(futures, reply, strict=True):
                            _resolve(future, value)
                    else:
                        _resolve(futures[0], reply)
        finally:
            self._flusher = None


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # else its caller was cancelled (shutdown)
        future.set_result(value)


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
