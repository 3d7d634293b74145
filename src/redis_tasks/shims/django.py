"""Where this package reaches below the public API of Django's task framework (and its
signals), and nowhere else; tests/test_shims.py checks each of these against the installed
Django and fails loudly if one changes shape.

- A ``TaskResult`` is a frozen dataclass that the framework's own backends update in place
  (status, times, the return value in ``_return_value``, which has no public setter):
  ``update`` and ``set_return_value`` do the same.
- ``new_result`` builds a ``TaskResult`` from values already in the form its constructor would
  normalise them to (arguments as JSON gives them back), without that second pass: measured,
  the constructor cost a bulk enqueue a quarter of its client CPU per task (6.1 -> 8.1 us,
  ``enqueue_many`` of no-op tasks) and a single ``enqueue()`` ~6 us. The contract test checks
  that it builds what the constructor builds.
- ``Signal._live_receivers`` names the receivers a send would call, split into sync and async:
  the worker decides from them whether receivers may run on its event loop, and a bulk enqueue
  looks them up once for all its tasks (``signalling.py``). ``Signal.receivers`` holds one
  entry per connected receiver, its lookup key first: ``connected`` fingerprints it, so that the
  worker's answer is worked out again only when a receiver is connected or disconnected
  (looking the receivers up twice per task cost the async drain 6%).
- A stored task whose options no longer pass the backend's validation (QUEUES or the allowed
  priorities changed since it was queued) is still read back, as it was stored: ``unvalidated``
  builds that variant without running the validation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.dispatch import Signal

from ..compat import TaskResult


def new_result(**values: Any) -> Any:
    """``TaskResult(**values)`` for values already normalised (its ``__post_init__`` only
    normalises ``args`` and ``kwargs``), with ``_return_value`` at its default."""
    result = object.__new__(TaskResult)
    for name, value in values.items():
        object.__setattr__(result, name, value)
    object.__setattr__(result, "_return_value", None)
    return result


def update(result: Any, **values: Any) -> None:
    """Set fields of a frozen ``TaskResult``, as the framework's backends do."""
    for name, value in values.items():
        object.__setattr__(result, name, value)


def set_return_value(result: Any, value: Any) -> None:
    object.__setattr__(result, "_return_value", value)


def live_receivers(signal: Signal, sender: Any) -> tuple[list[Any], list[Any]] | None:
    """The sync and the async receivers a send from ``sender`` would call; None where this
    Django does not say (the caller then takes the public path)."""
    try:
        sync_receivers, async_receivers = signal._live_receivers(sender)
    except (AttributeError, TypeError, ValueError):
        return None
    return list(sync_receivers), list(async_receivers)


def connected(signal: Signal) -> tuple[Any, ...] | None:
    """The lookup keys of the receivers connected now; None where this Django does not say."""
    try:
        return tuple(entry[0] for entry in signal.receivers)
    except (AttributeError, TypeError, IndexError):
        return None


def unvalidated(task: Any, **changes: Any) -> Any:
    """``dataclasses.replace(task, **changes)`` without the backend's validation."""
    clone = object.__new__(type(task))
    for f in dataclasses.fields(task):
        object.__setattr__(clone, f.name, changes.get(f.name, getattr(task, f.name)))
    return clone
