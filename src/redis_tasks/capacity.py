"""The worker's capacity: how many tasks may start now, in one place.

A worker runs at most ``size`` tasks at once. A consumer reserves every free slot before it
claims (so one claim takes as many tasks as can run), hands back what the claim did not fill,
and each task releases its slot when its body is over. ``--max-tasks`` bounds the slots ever
taken. A sync task past its timeout cannot be stopped (Python cannot kill a thread): its slot
is released, but its thread is *abandoned* and still runs; the slots count those threads until
they return, and too many of them mean the worker should be replaced (exit code 3).

Everything but ``thread_returned`` runs on the worker's event loop, without awaits between a
test and a change, so no lock is needed there; an abandoned thread reports its return from its
own thread, under a lock.
"""

from __future__ import annotations

import asyncio
import threading


class Slots:
    def __init__(self, size: int, max_tasks: int | None = None, max_abandoned: int | None = None):
        if size < 1:
            raise ValueError("a worker needs at least one slot")
        self.size = size
        self.max_tasks = max_tasks
        self.max_abandoned = size if max_abandoned is None else max_abandoned
        self.free = size
        self.taken = 0  # slots ever taken for tasks (claims not answered yet included)
        self.unanswered = 0  # slots reserved for claims not answered yet
        self.closed = False
        self._changed = asyncio.Event()
        self._abandoned = 0
        self._abandoned_lock = threading.Lock()

    @property
    def limit_reached(self) -> bool:
        """Every slot --max-tasks allows was taken by a task (no claim can still give some back)."""
        return self.max_tasks is not None and self.taken >= self.max_tasks and self.unanswered == 0

    async def reserve(self) -> int:
        """Wait for free slots and take all of them (as many as --max-tasks still allows); 0 once
        closed or once the limit is reached. Reservations of other consumers whose claim has not
        answered yet may still come back unused: the limit counts only once none is out."""
        while not self.closed:
            room = self.free
            if self.max_tasks is not None:
                if self.limit_reached:
                    return 0
                room = min(room, self.max_tasks - self.taken)
            if room > 0:
                self.free -= room
                self.taken += room
                self.unanswered += room
                return room
            self._changed.clear()
            await self._changed.wait()
        return 0

    def claimed(self, reserved: int, tasks: int) -> None:
        """A claim made with ``reserved`` slots brought ``tasks`` tasks (0 if it failed): the
        rest of the reservation comes back."""
        self.unanswered -= reserved
        self.taken -= reserved - tasks
        self.free += reserved - tasks
        self._changed.set()  # waiters look again: capacity, or the limit, has changed

    def take_one(self) -> bool:
        """One slot now, if one is free (and --max-tasks allows it), without waiting: for a
        task handed to the worker while it waited, which goes back to its queue otherwise
        (another consumer of the worker may have taken the slots meanwhile)."""
        if self.closed or self.free < 1:
            return False
        if self.max_tasks is not None and self.taken >= self.max_tasks:
            return False
        self.free -= 1
        self.taken += 1
        return True

    def release(self) -> None:
        """A task's body is over: its slot may take the next task."""
        self.free += 1
        self._changed.set()

    def close(self) -> None:
        """No more reservations (the worker is stopping); waiters get 0."""
        self.closed = True
        self._changed.set()

    # --- sync threads given up on -----------------------------------------------------------

    def abandoned(self) -> bool:
        """A sync task's thread is given up on (its timeout passed, or shutdown); its slot is
        released separately. Returns whether there are now more such threads than allowed."""
        with self._abandoned_lock:
            self._abandoned += 1
            return self._abandoned > self.max_abandoned

    def thread_returned(self) -> None:
        """An abandoned thread's call returned at last (called in that thread)."""
        with self._abandoned_lock:
            self._abandoned -= 1

    @property
    def abandoned_threads(self) -> int:
        with self._abandoned_lock:
            return self._abandoned
