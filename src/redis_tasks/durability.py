"""Enqueues that return only once replicas (``WAIT``) or the master's AOF (``WAITAOF``) hold them.

Redis replicates asynchronously: an enqueue acknowledged by the master and not yet sent to a
replica is lost if the master dies and a replica takes its place (Sentinel, Cluster), and one
not yet fsynced to the AOF is lost if the master's machine loses power. With ``wait_replicas``
and/or ``wait_aof`` the enqueue script and the waits go down one connection in one
non-transactional pipeline, since WAIT and WAITAOF count the writes of the connection that
sends them (``SyncSender.run_then`` / ``AsyncSender.run_then``); on a cluster the waits go to the
shard of the instance's keys, on the same connection as the script.

``wait_aof`` waits for the master's own fsync only (``WAITAOF 1 0``). Waiting for the replicas'
fsyncs too (``WAITAOF 1 N``) costs about a second per enqueue, since a replica reports its
fsynced offset once a second (measured on Valkey 8.1); ``wait_replicas`` asks instead that the
replicas have received the write. Figures: docs/deployment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .exceptions import DurabilityNotConfirmed
from .options import BackendOptions


def wait_commands(options: BackendOptions) -> list[list[Any]]:
    """The WAITAOF and WAIT commands the options ask for after each enqueue (maybe none)."""
    timeout_ms = max(int(options.wait_timeout * 1000), 1)  # 0 would block for ever
    commands: list[list[Any]] = []
    if options.wait_aof:
        commands.append(["WAITAOF", 1, 0, timeout_ms])
    if options.wait_replicas:
        commands.append(["WAIT", options.wait_replicas, timeout_ms])
    return commands


def _shortfall(options: BackendOptions, command: list[Any], ack: Any) -> str | None:
    """What a wait's reply says is missing, or None if it confirmed what was asked."""
    if isinstance(ack, Exception):
        return f"{command[0]} failed ({ack})"
    if command[0] == "WAITAOF":
        return None if int(ack[0]) >= 1 else "the master's AOF did not fsync them"
    if int(ack) >= options.wait_replicas:
        return None
    return f"only {int(ack)} of {options.wait_replicas} replicas confirmed them"


def check(alias: str, options: BackendOptions, acks: list[Any], requests: Sequence[Any]) -> None:
    """Raise DurabilityNotConfirmed unless every wait confirmed what the options ask (called
    only after the script queued the tasks; without waits, nothing to confirm)."""
    problems = [
        problem
        for command, ack in zip(wait_commands(options), acks, strict=False)
        if (problem := _shortfall(options, command, ack)) is not None
    ]
    if not problems:
        return
    task_ids = [r.task_id for r in requests]
    ids = ", ".join(task_ids[:3]) + (f" and {len(task_ids) - 3} more" if len(task_ids) > 3 else "")
    raise DurabilityNotConfirmed(
        f"Task backend {alias!r} queued {len(task_ids)} task(s) ({ids}) on the Redis master, "
        f"but {' and '.join(problems)} within {options.wait_timeout}s. They will run unless "
        "the master fails first; do not enqueue them again (they would run twice), check them "
        "with get_result(). Check the replicas and persistence ('INFO replication', "
        "'INFO persistence' on the master).",
        task_ids,
    )
