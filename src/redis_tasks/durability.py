"""Enqueues that return only once replicas (``WAIT``) or the master's AOF (``WAITAOF``) hold them.

Redis replicates asynchronously: an enqueue acknowledged by the master and not yet sent to a
replica is lost if the master dies and a replica takes its place (Sentinel, Cluster), and one
not yet fsynced to the AOF is lost if the master's machine loses power. With ``wait_replicas``
and/or ``wait_aof`` the enqueue script and the waits go down one connection in one
non-transactional pipeline, since WAIT and WAITAOF count the writes of the connection that
sends them; on a cluster the waits go to the shard of the instance's keys, on the same
connection as the script.

``wait_aof`` waits for the master's own fsync only (``WAITAOF 1 0``). Waiting for the replicas'
fsyncs too (``WAITAOF 1 N``) costs about a second per enqueue, since a replica reports its
fsynced offset once a second (measured on Valkey 8.1); ``wait_replicas`` asks instead that the
replicas have received the write. Figures: docs/deployment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from .connection import in_cluster, on_node_of
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


def _pipeline(client: Any, script: Any, keys: list[str], args: list[Any],
              waits: list[list[Any]]) -> Any:  # fmt: skip
    pipe = client.pipeline(transaction=False)
    # execute_command: redis-py refuses pipe.evalsha() on a cluster, not the command itself.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    for wait in waits:
        pipe.execute_command(*wait, **on_node_of(client, keys[0]))
    return pipe


def _script_missing(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


def enqueue(client: Any, bound: Any, keys: list[str], args: list[Any],
            waits: list[list[Any]]) -> tuple[Any, list[Any]]:  # fmt: skip
    """Run the enqueue script (``bound``: the store's script bound to ``client``), then the
    waits (at least one: without, the store sends the script down its direct lane), on the
    same connection; return the script's reply and the waits' (which may be exceptions).
    Raises the script's own error."""
    script = bound.func
    for _ in range(2):
        reply, *acks = _pipeline(client, script, keys, args, waits).execute(raise_on_error=False)
        if not _script_missing(reply):
            break
        # A restarted server or a new master: load the script there; nothing was written.
        client.execute_command("SCRIPT", "LOAD", script.script, **on_node_of(client, keys[0]))
    if isinstance(reply, Exception):
        raise reply
    return reply, acks


async def aenqueue(client: Any, bound: Any, keys: list[str], args: list[Any],
                   waits: list[list[Any]]) -> tuple[Any, list[Any]]:  # fmt: skip
    if not waits:
        return await bound(keys=keys, args=args), []
    if in_cluster(client):  # a new asyncio cluster client learns the slots on first use
        await client.initialize()
    script = bound.func
    for _ in range(2):
        pipe = _pipeline(client, script, keys, args, waits)
        reply, *acks = await pipe.execute(raise_on_error=False)
        if not _script_missing(reply):
            break
        await client.execute_command("SCRIPT", "LOAD", script.script, **on_node_of(client, keys[0]))
    if isinstance(reply, Exception):
        raise reply
    return reply, acks


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
    only after the script queued the tasks)."""
    if not acks:  # no `wait_replicas` nor `wait_aof`: nothing to confirm
        return
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
