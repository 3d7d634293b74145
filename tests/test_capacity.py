"""The worker's slots (redis_tasks.capacity): reserve, hand back, release, the --max-tasks
bound, closing, and the threads abandoned past their timeout. No Redis needed: the slots are
pure bookkeeping on the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from redis_tasks.capacity import Slots


def run(main: object) -> object:
    return asyncio.run(main)  # type: ignore[arg-type]


def test_a_reservation_takes_every_free_slot_and_gives_back_what_the_claim_did_not_fill() -> None:
    async def main() -> list[int]:
        slots = Slots(4)
        taken = await slots.reserve()
        slots.claimed(taken, 3)  # the claim found 3 tasks: one slot comes back
        again = await slots.reserve()
        slots.claimed(again, 1)
        return [taken, again, slots.free]

    assert run(main()) == [4, 1, 0]


def test_a_reservation_waits_until_a_task_releases_its_slot() -> None:
    async def main() -> tuple[bool, int]:
        slots = Slots(1)
        slots.claimed(await slots.reserve(), 1)
        waiting = asyncio.create_task(slots.reserve())
        await asyncio.sleep(0)
        blocked = not waiting.done()
        slots.release()
        return blocked, await waiting

    assert run(main()) == (True, 1)


def test_max_tasks_is_not_reached_while_a_reservation_may_come_back() -> None:
    """Consumers of several backends share the slots: a claim that finds nothing gives its
    slots back, so another consumer must wait for its answer, not stop at --max-tasks (a
    worker once exited after one task of two this way)."""

    async def main() -> list[int]:
        slots = Slots(2, max_tasks=2)
        seen = [await slots.reserve()]  # consumer A takes both slots for a claim...
        slots.claimed(2, 1)  # ... which brings one task
        seen.append(await slots.reserve())  # consumer B claims with the other slot
        slots.release()  # A's task is done: a slot is free, and one more task may run
        waiting = asyncio.create_task(slots.reserve())
        await asyncio.sleep(0)
        assert not waiting.done() and not slots.limit_reached  # B's claim may come back empty
        slots.claimed(1, 0)  # it does
        seen.append(await waiting)
        slots.claimed(1, 1)
        seen.append(await slots.reserve())  # two tasks claimed: the limit, for good
        assert slots.limit_reached
        return seen

    assert run(main()) == [2, 1, 1, 0]


def test_a_task_handed_over_takes_a_free_slot_or_none() -> None:
    """A task handed to a waiting consumer gets a slot only if one is free now (another
    consumer may hold them all) and --max-tasks allows it; never once closed."""

    async def main() -> list[bool]:
        slots = Slots(2, max_tasks=3)
        first = slots.take_one()
        slots.claimed(await slots.reserve(), 1)  # another consumer took the last free slot
        full = slots.take_one()
        slots.release()
        slots.release()
        limited = [slots.take_one(), slots.take_one()]  # the third task, then the limit
        slots.release()
        slots.close()
        return [first, full, *limited, slots.take_one()]

    assert run(main()) == [True, False, True, False, False]


def test_closing_wakes_a_waiting_reservation_with_nothing() -> None:
    async def main() -> tuple[int, int]:
        slots = Slots(1)
        slots.claimed(await slots.reserve(), 1)
        waiting = asyncio.create_task(slots.reserve())
        await asyncio.sleep(0)
        slots.close()
        return await waiting, await slots.reserve()

    assert run(main()) == (0, 0)


def test_abandoned_threads_are_counted_until_they_return_from_their_own_thread() -> None:
    async def main() -> list[object]:
        slots = Slots(2, max_abandoned=1)
        seen: list[object] = [slots.abandoned(), slots.abandoned_threads]
        seen.append(slots.abandoned())  # a second one: more than allowed
        returned = threading.Thread(target=slots.thread_returned)
        returned.start()
        returned.join()
        seen.append(slots.abandoned_threads)
        return seen

    assert run(main()) == [False, 1, True, 1]


def test_a_worker_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Slots(0)
