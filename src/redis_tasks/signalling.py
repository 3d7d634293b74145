"""Sending the framework's signals from the worker's event loop without a thread hop each.

``Signal.asend`` runs every sync receiver through ``sync_to_async``: a trip to a thread and back
per receiver, which costs more than a no-op task. The framework's own receivers (its task
logger) and ours (metrics) only log or count, so they may run on the loop directly. As soon as
any other sync receiver is connected, ``asend`` keeps its guarantee for it: a receiver that
touches the database must never run on the event loop.
"""

from __future__ import annotations

import functools
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.dispatch import Signal

from .shims import django as django_shim

# Modules whose receivers never block nor touch the database.
LOOP_SAFE_MODULES = ("django.tasks.", "django_tasks.", "redis_tasks.")


def loop_safe(signal: Signal, sender: Any) -> bool:
    """Whether every receiver connected now may be called on the event loop (asked twice per
    task: worked out again only when the receivers connected change)."""
    fingerprint = django_shim.connected(signal)
    if fingerprint is None:
        return _loop_safe(signal, sender)
    return _kept_verdict(signal, sender, fingerprint)


def _loop_safe(signal: Signal, sender: Any) -> bool:
    receivers = django_shim.live_receivers(signal, sender)
    if receivers is None:  # another Django: take the safe road
        return False
    sync_receivers, async_receivers = receivers
    return not async_receivers and all(
        getattr(receiver, "__module__", "").startswith(LOOP_SAFE_MODULES)
        for receiver in sync_receivers
    )


@functools.lru_cache(maxsize=64)
def _kept_verdict(signal: Signal, sender: Any, fingerprint: tuple[Any, ...]) -> bool:
    return _loop_safe(signal, sender)


async def asend(
    signal: Signal, sender: Any, raising: BaseException | None = None, **named: Any
) -> None:
    """Like ``await signal.asend(...)``, with loop-safe receivers called in place, and the
    project's receivers in a thread that closes the database connections they opened (a
    worker has no request cycle to do it). With ``raising``, the receivers are called inside
    an except block for it, so they see it in ``sys.exc_info()`` (the framework's logger, error
    trackers)."""
    if loop_safe(signal, sender):
        _send(signal, sender, raising, named)
    else:
        await sync_to_async(_send_and_close, thread_sensitive=False)(signal, sender, raising, named)


def _send(signal: Signal, sender: Any, raising: BaseException | None, named: Any) -> None:
    if raising is None:
        signal.send(sender=sender, **named)
        return
    try:
        raise raising
    except BaseException:
        signal.send(sender=sender, **named)


def _send_and_close(
    signal: Signal, sender: Any, raising: BaseException | None, named: dict[str, Any]
) -> None:
    try:
        _send(signal, sender, raising, named)
    finally:
        close_old_connections()


def send_each(signal: Signal, sender: Any, name: str, values: list[Any]) -> None:
    """``signal.send(sender, **{name: value})`` for each value in turn, with the receivers
    looked up once for all: ``Signal.send`` resolves its receivers (weak references, a lock,
    the sender's cache) on every call, which cost ``enqueue_many()`` about a fifth of its
    Python per task. Receivers are called as ``send`` calls them, errors propagate as from
    ``send``; with an async receiver connected, each value goes through ``send`` itself."""
    receivers = django_shim.live_receivers(signal, sender)
    if receivers is None or receivers[1]:  # send() awaits async receivers, concurrently
        for value in values:
            signal.send(sender=sender, **{name: value})
        return
    for value in values:
        for receiver in receivers[0]:
            receiver(signal=signal, sender=sender, **{name: value})
