"""Workflows of ordinary tasks: chains, groups and chords (docs/workflows.md).

    from redis_tasks.workflows import chain, chord, group, step

    chain(step(fetch, url), step(parse), step(store)).enqueue()     # each gets the last's value
    group(step(resize, image, size) for size in (64, 128, 256)).enqueue()
    chord([step(count_words, page) for page in pages], step(total)).enqueue()

A chain's step receives the previous step's return value as its first argument (``step(...,
previous=False)`` opts out); a chord's callback receives the list of its members' return values,
in order. Every task of a workflow is enqueued with its own id known at once, and the script that
stores a task's final outcome advances its workflow in the same atomic step (lua/lib/
workflow.lua): a chain's next step is queued, a chord's callback fires exactly once when the last
member ends. A failed step stops its chain (the later steps are recorded FAILED with
TaskCancelled, never run); a chord with a failed member does not run its callback, which is
recorded FAILED with ChordMemberFailed naming the member.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import transaction

from . import calls, signatures
from .compat import Task, TaskResultDoesNotExist, task_backends
from .exceptions import BackendUnavailable, QueueFull

if TYPE_CHECKING:
    from .backend import RedisBackend


@dataclass(frozen=True)
class Step:
    """One task call of a workflow: the task (with its ``using()`` options) and its arguments."""

    task: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    previous: bool = True  # in a chain: the previous step's value comes first


def step(task: Any, *args: Any, previous: bool = True, **kwargs: Any) -> Step:
    """A call of ``task`` in a workflow. In a chain, the step's function gets the previous
    step's return value as its first argument, before ``args``, unless ``previous=False``
    (the chain's first step gets none)."""
    if not isinstance(task, Task):
        raise TypeError(
            f"step() takes a task (a function decorated with @task), not {task!r}; decorate "
            "it, or pass the task rather than the function it wraps"
        )
    return Step(task, args, kwargs, previous)


@dataclass(frozen=True)
class Workflow:
    """A chain, group or chord, ready to enqueue."""

    kind: str  # "chain", "group" or "chord"
    steps: tuple[Step, ...]
    callback: Step | None = None

    def enqueue(self) -> WorkflowHandle:
        """Queue it, all or none (with ``enqueue_on_commit`` inside a transaction: when it
        commits, and never if it rolls back)."""
        backend = _backend_of(self)
        plan = _plan(self, backend)
        if backend.in_commit_scope():
            alias = backend.config.enqueue_on_commit
            transaction.on_commit(lambda: _send(backend, plan), using=alias)
        else:
            _send(backend, plan)
        return plan.handle

    async def aenqueue(self) -> WorkflowHandle:
        return await sync_to_async(self.enqueue)()


def chain(*steps: Step) -> Workflow:
    """Steps run one after another, each given the previous one's return value."""
    return Workflow("chain", _steps(steps))


def group(steps: Iterable[Step]) -> Workflow:
    """Members run side by side."""
    return Workflow("group", _steps(steps))


def chord(members: Iterable[Step], callback: Step) -> Workflow:
    """Members side by side, then ``callback`` exactly once, given their values in order."""
    return Workflow("chord", _steps(members), _step(callback))


def _step(value: Any) -> Step:
    if not isinstance(value, Step):
        raise TypeError(f"a workflow is made of step(task, *args) calls, not {value!r}")
    return value


def _steps(values: Iterable[Any]) -> tuple[Step, ...]:
    steps = tuple(_step(v) for v in values)
    if not steps:
        raise ValueError("a workflow needs at least one step")
    return steps


def _redis(alias: str) -> RedisBackend:
    from .backend import RedisBackend

    backend = task_backends[alias]
    if not isinstance(backend, RedisBackend):
        raise ValueError(f"workflows need a RedisBackend, not {type(backend).__name__}")
    return backend


def _backend_of(workflow: Workflow) -> RedisBackend:
    aliases = {s.task.backend for s in (*workflow.steps, *filter(None, [workflow.callback]))}
    if len(aliases) != 1:
        raise ValueError(
            f"the tasks of one workflow must share a backend, not {', '.join(sorted(aliases))}"
        )
    return _redis(aliases.pop())


@dataclass
class _Plan:
    handle: WorkflowHandle
    record: dict[str, str]
    requests: list[Any]


def _request(backend: Any, s: Step, previous: bool) -> tuple[Any, Any]:
    """The result and the request of one step, as the enqueue makes them; with ``previous``
    its arguments leave room for the previous step's value (its limit key read with it)."""
    key = getattr(s.task, "limit_key", None)
    if previous and key is not None and key not in s.kwargs:
        raise ValueError(
            f"a step that takes the previous step's value shifts its positional arguments: "
            f"pass its limit_key {key!r} by keyword, step({s.task.name}, ..., {key}=...)"
        )
    [result], [request] = backend.prepare_many(s.task, [(s.args, s.kwargs)])
    if previous and request.signature:  # signed with the mark that it takes a first argument
        request = request._replace(signature=signatures.sign(
            request.task_id, request.path, request.args_json, request.kwargs_json, previous=True
        ))  # fmt: skip
    return result, request


def _spec(request: Any, previous: bool) -> dict[str, str]:
    """A task queued later by the finish script (lib/write_task.lua takes these fields)."""
    return {
        "id": request.task_id, "queue": request.queue, "priority": str(request.priority),
        "run_after": "" if request.run_after_us is None else str(request.run_after_us),
        "path": request.path, "args": request.args_json, "kwargs": request.kwargs_json,
        "max_attempts": "" if request.max_attempts is None else str(request.max_attempts),
        "sig": request.signature or "", "limits": request.limits or "",
        "previous": "1" if previous else "",
    }  # fmt: skip


def _plan(workflow: Workflow, backend: Any) -> _Plan:
    workflow_id = os.urandom(16).hex()
    if workflow.kind == "chain":
        made = [_request(backend, s, i > 0 and s.previous) for i, s in enumerate(workflow.steps)]
        now = [made[0][1]._replace(workflow=f"{workflow_id}|0")]
        specs = [_spec(r, i > 0 and workflow.steps[i].previous) for i, (_, r) in enumerate(made)]
        specs = specs[1:]
        callback_id = None
    else:
        made = [_request(backend, s, False) for s in workflow.steps]
        now = [r._replace(workflow=f"{workflow_id}|{i}") for i, (_, r) in enumerate(made)]
        specs, callback_id = [], None
        if workflow.callback is not None:
            _, callback = _request(backend, workflow.callback, True)
            specs, callback_id = [_spec(callback, True)], callback.task_id
    ids = [r.task_id for _, r in made]
    o = backend.config
    record = {
        "kind": workflow.kind, "ids": json.dumps(ids), "specs": json.dumps(specs),
        "total": str(len(ids)), "state": "RUNNING", "backend": backend.alias,
        "ttl": "" if o.ttl is None else str(int(o.ttl * 1000)),
        "result_ttl": "" if o.result_ttl is None else str(o.result_ttl),
        "callback": callback_id or "",
    }  # fmt: skip
    handle = WorkflowHandle(workflow_id, workflow.kind, backend.alias, ids, callback_id)
    return _Plan(handle, record, now)


def _send(backend: Any, plan: _Plan) -> None:
    if not backend.config.tracing:
        return _send_now(backend, plan)
    from . import tracing

    # One send span for the whole workflow: its first tasks carry it now, its later steps and
    # its chord's callback when the script queues them (their specs hold it).
    with tracing.sending(plan.requests[0].queue, plan.handle.all_ids) as carried:
        if carried is not None:
            plan.requests = [r._replace(trace=carried) for r in plan.requests]
            specs = [{**spec, "trace": carried} for spec in json.loads(plan.record["specs"])]
            plan.record["specs"] = json.dumps(specs)
        return _send_now(backend, plan)


def _send_now(backend: Any, plan: _Plan) -> None:
    store = backend.store
    call = calls.workflow(store.keys, store.settings, plan.handle.id, plan.record, plan.requests)
    try:
        reply = store.connections.sender.run(call)
    except Exception as exc:
        import redis

        if isinstance(exc, redis.RedisError):
            raise store.unavailable(exc) from exc
        raise
    outcome = calls.enqueued(reply)
    if isinstance(outcome, calls.Enqueued):  # members an identical unique task stands for
        for at, existing in enumerate(outcome.existing):
            if existing is not None:
                plan.handle.task_ids[at] = existing
        return
    if isinstance(outcome, calls.EnqueueRefused):
        if outcome.waiting is not None:
            raise QueueFull(
                f"Task backend {backend.alias!r} is full: {outcome.waiting} tasks wait; the "
                f"workflow's {len(plan.requests)} would pass maxsize. Nothing was queued."
            )
        raise BackendUnavailable(f"Id {outcome.taken_id!r} is taken; nothing was queued.")


@dataclass
class WorkflowHandle:
    """A queued workflow, readable from any process (``WorkflowHandle.get(id)``)."""

    id: str
    kind: str
    backend: str
    task_ids: list[str]  # a chain's steps, or a group's or chord's members, in order
    callback_id: str | None = None

    @classmethod
    def get(cls, workflow_id: str, backend: str = "default") -> WorkflowHandle:
        store = _redis(backend).store
        record = store.connections.sync.hgetall(store.keys.workflow(workflow_id))
        if not record:
            raise TaskResultDoesNotExist(
                f"No workflow {workflow_id!r} in task backend {backend!r} (never queued here, "
                "or it finished longer than result_ttl ago)."
            )
        fields = {_text(k): _text(v) for k, v in record.items()}
        return cls(workflow_id, fields["kind"], backend, json.loads(fields["ids"]),
                   fields.get("callback") or None)  # fmt: skip

    @property
    def all_ids(self) -> list[str]:
        return [*self.task_ids, *([self.callback_id] if self.callback_id else [])]

    def state(self) -> str:
        """RUNNING, SUCCESSFUL or FAILED (a step or member failed)."""
        store = _redis(self.backend).store
        state = store.connections.sync.hget(store.keys.workflow(self.id), "state")
        if state is None:
            raise TaskResultDoesNotExist(f"No workflow {self.id!r} (expired?).")
        return _text(state)

    def results(self) -> list[Any]:
        """Each task's result, in order (a chain's steps, or the members then the callback);
        None for a task not queued yet (a later step, a chord's callback)."""
        backend = _redis(self.backend)
        found: list[Any] = []
        for task_id in self.all_ids:
            try:
                found.append(backend.get_result(task_id))
            except TaskResultDoesNotExist:
                found.append(None)
        return found

    def final_id(self) -> str | None:
        """The task whose end is the workflow's: a chain's last step, a chord's callback (a
        group has none: every member's)."""
        if self.kind == "chain":
            return self.task_ids[-1]
        return self.callback_id

    def cancel(self) -> int:
        """Cancel each of its tasks that has not ended (as ``redis_tasks cancel`` does: a
        waiting one never runs, a running one is cancelled by its worker); a chain's later
        steps and a chord's callback are then recorded cancelled by the workflow itself. The
        number of tasks cancelled."""
        from .ops import Inspector, OperationRefused

        inspector = Inspector(_redis(self.backend))
        cancelled = 0
        for task_id in self.all_ids:
            try:
                inspector.cancel(task_id)
            except OperationRefused:  # ended already, or not queued yet
                continue
            cancelled += 1
        return cancelled

    def wait(self, timeout: float | None = None) -> list[Any]:
        """Block until the workflow has ended (without polling: see waiting.py); its results,
        as ``results()``. Raises ``WaitTimeout`` after ``timeout`` seconds."""
        from .waiting import wait_for_workflow

        wait_for_workflow(self, timeout)
        return self.results()

    async def await_(self, timeout: float | None = None) -> list[Any]:
        return await sync_to_async(self.wait, thread_sensitive=False)(timeout)


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()
