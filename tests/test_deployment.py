"""The deployment configurations of docs/deployment.md that the cluster and failover tests do
not cover: an ACL user limited to the backend's keys, and Sentinel with passwords."""

from __future__ import annotations

import io
import json
from typing import Any

import redis
from django.core.management import call_command

from redis_tasks.compat import TaskResultStatus, task_backends
from tests import tasks
from tests.helpers import burst
from tests.redis_server import RedisServer
from tests.topologies import SentinelGroup

# docs/deployment.md, "TLS and ACL users", exactly.
ACL = "tasks on >s3cret resetkeys ~redis_tasks:* resetchannels +@all -@dangerous +info +config|get"


def test_an_acl_user_limited_to_the_backend_keys_runs_everything(settings: Any) -> None:
    with RedisServer() as server:
        with redis.Redis(port=server.port) as admin:
            admin.execute_command("ACL", "SETUSER", *ACL.split())
            admin.set("outside", "untouched")
        settings.TASKS = {**settings.TASKS, "acl": {
            "BACKEND": "redis_tasks.backend.RedisBackend",
            "LOCATION": f"redis://tasks:s3cret@127.0.0.1:{server.port}/0",
        }}  # fmt: skip
        result = tasks.add.using(backend="acl").enqueue(2, 3)
        burst("acl")
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
        assert task_backends["acl"].store.server_risks()  # CONFIG GET allowed: no AOF here
        out = io.StringIO()
        call_command("redis_tasks", "--backend=acl", "--json", "status", stdout=out)
        assert json.loads(out.getvalue())[0]["totals"]["successful"] == 1
        with redis.Redis(port=server.port, username="tasks", password="s3cret") as user:
            try:
                user.get("outside")
            except redis.exceptions.NoPermissionError:
                pass
            else:
                raise AssertionError("the ACL user read a key outside redis_tasks:*")


def test_sentinel_with_passwords(settings: Any) -> None:
    with SentinelGroup(1, "secured", password="master-pw", sentinel_password="sentinel-pw") as g:
        settings.TASKS = {**settings.TASKS, "secured": {
            "BACKEND": "redis_tasks.backend.RedisBackend",
            "LOCATION": "redis://:master-pw@secured/0",
            "sentinels": g.addresses,
            "sentinel_kwargs": {"password": "sentinel-pw"},
        }}  # fmt: skip
        result = tasks.add.using(backend="secured").enqueue(4, 5)
        burst("secured")
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 9
