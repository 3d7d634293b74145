"""Enqueues that return only once replicas (``WAIT``) or the AOF (``WAITAOF``) hold them.

Redis replicates asynchronously: an enqueue acknowledged by the master and not yet sent to a
replica is lost if the master dies and a replica takes its place (Sentinel, Cluster). With
``wait_replicas`` / ``wait_aof`` the enqueue script and the wait go down one connection in one
non-transactional pipeline, since WAIT counts the writes of the connection that sends it; on
a cluster the wait is sent to the shard of the instance's keys, so it shares their connection.
Costs and measured figures: docs/deployment.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from .connection import on_node_of
from .exceptions import DurabilityNotConfirmed
from .options import BackendOptions


def wait_command(options: BackendOptions) -> list[Any] | None:
    """The WAIT or WAITAOF command the options ask for after each enqueue, or None."""
    timeout_ms = max(int(options.wait_timeout * 1000), 1)  # 0 would block for ever
    if options.wait_aof:
        return ["WAITAOF", 1, options.wait_replicas, timeout_ms]
    if options.wait_replicas:
        return ["WAIT", options.wait_replicas, timeout_ms]
    return None


def _queue(pipe: Any, client: Any, script: Any, keys: list[str], args: list[Any],
           wait: list[Any]) -> None:  # fmt: skip
    # execute_command: redis-py refuses pipe.evalsha() on a cluster, not the command itself.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    pipe.execute_command(*wait, **on_node_of(client, keys[0]))


def _script_missing(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


def enqueue(client: Any, bound: Any, keys: list[str], args: list[Any],
            wait: list[Any] | None) -> tuple[Any, Any]:  # fmt: skip
    """Run the enqueue script (``bound``: the store's script bound to ``client``), then
    ``wait`` if any on the same connection; return both replies (the wait's may be an
    exception, or None without a wait). Raises the script's own error."""
    if wait is None:
        return bound(keys=keys, args=args), None
    script = bound.func
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        _queue(pipe, client, script, keys, args, wait)
        reply, acked = pipe.execute(raise_on_error=False)
        if not _script_missing(reply):
            break
        # A restarted server or a new master: load the script there; nothing was written.
        client.execute_command("SCRIPT", "LOAD", script.script, **on_node_of(client, keys[0]))
    if isinstance(reply, Exception):
        raise reply
    return reply, acked


async def aenqueue(client: Any, bound: Any, keys: list[str], args: list[Any],
                   wait: list[Any] | None) -> tuple[Any, Any]:  # fmt: skip
    if wait is None:
        return await bound(keys=keys, args=args), None
    script = bound.func
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        _queue(pipe, client, script, keys, args, wait)
        reply, acked = await pipe.execute(raise_on_error=False)
        if not _script_missing(reply):
            break
        await client.execute_command("SCRIPT", "LOAD", script.script, **on_node_of(client, keys[0]))
    if isinstance(reply, Exception):
        raise reply
    return reply, acked


def check(alias: str, options: BackendOptions, acked: Any, requests: Sequence[Any]) -> None:
    """Raise DurabilityNotConfirmed unless the wait's reply shows what the options ask (called
    only after the script queued the tasks)."""
    if not (options.wait_aof or options.wait_replicas):
        return
    wanted = options.wait_replicas
    if isinstance(acked, Exception):
        shortfall = f"the wait failed ({acked})"
    elif options.wait_aof:
        local, replicas = (int(x) for x in acked)
        if local >= 1 and replicas >= wanted:
            return
        shortfall = (f"the master's AOF {'has' if local else 'has not'} synced them and "
                     f"{replicas} of {wanted} replicas' AOFs have")  # fmt: skip
    else:
        if int(acked) >= wanted:
            return
        shortfall = f"only {int(acked)} of {wanted} replicas confirmed them"
    task_ids = [r.task_id for r in requests]
    ids = ", ".join(task_ids[:3]) + (f" and {len(task_ids) - 3} more" if len(task_ids) > 3 else "")
    raise DurabilityNotConfirmed(
        f"Task backend {alias!r} queued {len(task_ids)} task(s) ({ids}) on the Redis master, "
        f"but {shortfall} within {options.wait_timeout}s. They will run unless the master fails "
        "before they reach a replica; do not enqueue them again (they would run twice), check "
        "them with get_result(). Check the replicas ('INFO replication' on the master).",
        task_ids,
    )
