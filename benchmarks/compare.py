"""django-redis-tasks against its peers: django-tasks-redis, django-tasks-rq, django-tasks-db,
threadmill.

Run through ``scripts/bench`` (it builds the benchmark virtualenv first)::

    scripts/bench            # the full comparison, then the report and the plot
    scripts/bench --quick    # a smoke run with small sizes
    scripts/bench --leak     # instead: worker RSS after 10,000 and after 1,000,000 tasks

Each system runs in its own child process (Django settings are per process), with its own
private ``redis-server`` (a free port and a temp dir; never the shared one on 6379) or temp
SQLite file, and its own documented worker command in subprocesses. The figures are in
``measures.py``; this file runs the children, then writes ``benchmarks/results.md``,
``benchmarks/results.json`` and ``benchmarks/results.png``. threadmill needs Python 3.14: its
child runs on ``.venvs/bench314`` (or ``$REDIS_TASKS_BENCH_PYTHON314``), built by
``scripts/bench`` when it finds a Python 3.14, and is left out (said on stderr) without one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]


@dataclass(frozen=True)
class Spec:
    """How a figure is shown and judged."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    decimals: int = 0
    target: float | None = None


SPECS = [
    Spec("enqueue", "enqueue, task.enqueue() loop", "tasks/s", True, target=10_000),
    Spec("bulk", "bulk enqueue (see 'bulk' below)", "tasks/s", True, target=50_000),
    Spec("drain_sync", "drain, sync no-op, 1 process", "tasks/s", True, target=5000),
    Spec("drain_async", "drain, async no-op, 1 process", "tasks/s", True, target=5000),
    Spec("drain_p2", "drain, sync no-op, 2 processes", "tasks/s", True),
    Spec("drain_p4", "drain, sync no-op, 4 processes", "tasks/s", True),
    Spec("drain_best", "drain, best of 1/2/4 processes", "tasks/s", True, target=8000),
    Spec("sleep_sync", "500 x time.sleep(10 ms), 1 process", "s", False, 3, target=0.15),
    Spec("sleep_async", "500 x asyncio.sleep(10 ms), 1 process", "s", False, 3, target=0.15),
    Spec("idle_p50", "latency p50, idle worker", "ms", False, 2, target=1),
    Spec("idle_p99", "latency p99, idle worker", "ms", False, 2, target=3),
    Spec("urgent_p50", "latency p50, priority 100, 10k backlog", "ms", False, 2),
    Spec("urgent_p99", "latency p99, priority 100, 10k backlog", "ms", False, 2, target=20),
    Spec("mem_queued", "memory per queued task", "bytes", False, target=500),
    Spec("mem_result", "memory per finished result", "bytes", False, target=600),
]


def leak_specs(total: int) -> list[Spec]:
    return [
        Spec("rss_10000", "worker RSS after 10,000 tasks", "MiB", False, 1),
        Spec(f"rss_{total}", f"worker RSS after {total:,} tasks", "MiB", False, 1),
        Spec("rss_growth", f"RSS after {total:,} / after 10,000", "x", False, 3, target=1.10),
        Spec("leak_seconds", f"time for the {total:,}-task run", "s", False),
    ]


SYSTEM_KEYS = ["redis_tasks", "tasks_redis", "tasks_rq", "tasks_db", "threadmill"]
NEEDS_314 = {"threadmill"}  # systems whose newest release requires Python 3.14


def interpreter(system_key: str) -> str | None:
    """The Python a system's child (and so its workers) runs on: this one, or for a system
    that needs 3.14, the 3.14 virtualenv; None when there is none."""
    if system_key not in NEEDS_314 or sys.version_info >= (3, 14):
        return sys.executable
    path = Path(
        os.environ.get("REDIS_TASKS_BENCH_PYTHON314") or ROOT / ".venvs/bench314/bin/python"
    )
    return str(path) if path.exists() else None


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- the child: one system ----------------------------------------------------------------


def child(system_key: str, sizes_json: str, scaling: bool, leak: int, out: str) -> None:
    from benchmarks.measures import Measures, Sizes
    from benchmarks.systems import SYSTEMS

    raw = json.loads(sizes_json)
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    sizes = Sizes(**fields)
    system = SYSTEMS[system_key]()
    system.start()
    try:
        import django

        django.setup()
        system.setup()
        measures = Measures(system, sizes)
        if leak:
            measures.leak(leak)
            results = measures.results
        else:
            results = measures.run(scaling)
        document = {
            "values": results.values,
            "notes": results.notes,
            "label": system.label,
            "version": system.version(),
            "settings": system.settings_text()
            + (f"; the drains: `--concurrency {sizes.concurrency}`" if measures.ours else ""),
            "bulk_how": system.bulk_how,
            "memory_unit": system.memory_unit,
            "django": django.get_version(),
            "python": platform.python_version(),
        }
        Path(out).write_text(json.dumps(document, indent=1))
    finally:
        system.stop()


def run_child(
    system_key: str, sizes: Any, scaling: bool, leak: int, env: dict[str, str]
) -> dict[str, Any]:
    out = HERE / f".results-{system_key}.json"
    python = interpreter(system_key)
    if python is None:
        raise FileNotFoundError(f"{system_key} needs Python 3.14: no .venvs/bench314")
    command = [
        python,
        str(HERE / "compare.py"),
        "--child",
        system_key,
        "--sizes",
        json.dumps(dataclasses.asdict(sizes)),
        "--child-out",
        str(out),
    ]
    if scaling:
        command.append("--scaling")
    if leak:
        command += ["--leak-tasks", str(leak)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **env})
    document: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    document["seconds"] = time.perf_counter() - started
    return document


def run_floor(runs: int) -> dict[str, Any]:
    """``floor.py`` in its own process (it sets Django up for its own server)."""
    out = HERE / ".results-floor.json"
    command = [sys.executable, str(HERE / "floor.py"), "--runs", str(runs), "--json", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    document: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return document


# --- the report -----------------------------------------------------------------------------


def floor_section(floor: dict[str, Any], ours: dict[str, list[float]]) -> str:
    """The floor beside the figures of ours that it bounds."""
    from benchmarks.floor import FIGURES, summary

    lines = [
        "## What this machine allows (`benchmarks/floor.py`, in the same run)",
        "",
        "The backend's own Redis commands (its scripts, with its arguments), sent from a raw "
        "socket with no Python of the backend in the loop, and a wake chain through a second "
        f"process (see floor.py). {floor['machine']}, {floor['when']}, median of "
        f"{floor['runs']} runs. For rates, ours as a share of the floor; for latencies, how "
        "many times the floor ours takes.",
        "",
        "| what | floor | ours (figure above) | ours vs floor |",
        "|---|---|---|---|",
    ]
    for key, label, unit, digits, bound in FIGURES:
        values = floor["figures"][key]
        mine_cell = versus = "-"
        if bound is not None and ours.get(bound):
            mine, edge = statistics.median(ours[bound]), statistics.median(values)
            mine_cell = f"{mine:,.{digits}f} {unit} ({bound})"
            versus = f"{mine / edge:.0%}" if unit == "tasks/s" else f"{mine / edge:.1f}x"
        lines.append(f"| {label} | {summary(values, digits)} {unit} | {mine_cell} | {versus} |")
    return "\n".join(lines)


def cell(spec: Spec, values: list[float] | None) -> str:
    if not values:
        return "n/a"
    return f"{median(values):,.{spec.decimals}f}"


def best_peer(spec: Spec, data: dict[str, Any]) -> tuple[str, float] | None:
    peers = [
        (key, median(data[key]["values"][spec.key]))
        for key in SYSTEM_KEYS[1:]
        if key in data and data[key]["values"].get(spec.key)
    ]
    if not peers:
        return None
    pick = max if spec.higher_is_better else min
    return pick(peers, key=lambda p: p[1])


def verdict(spec: Spec, value: float) -> str:
    if spec.target is None:
        return ""
    met = value >= spec.target if spec.higher_is_better else value <= spec.target
    return "met" if met else "**not met**"


def comparison_table(data: dict[str, Any], specs: list[Spec]) -> str:
    systems = [key for key in SYSTEM_KEYS if key in data]
    head = ["figure", "unit", "target", *(data[k]["label"] for k in systems)]
    head += ["ours vs best peer", "target met (ours)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in specs:
        ours = data.get("redis_tasks", {}).get("values", {}).get(spec.key)
        if not ours and not any(data[k]["values"].get(spec.key) for k in systems):
            continue
        target = ""
        if spec.target is not None:
            target = ("≥ " if spec.higher_is_better else "≤ ") + f"{spec.target:,g}"
        row = [spec.label, spec.unit, target]
        for key in systems:
            values = data[key]["values"].get(spec.key)
            text = cell(spec, values)
            if values and len(values) > 1:
                low = f"{min(values):,.{spec.decimals}f}"
                high = f"{max(values):,.{spec.decimals}f}"
                text += f" ({low}-{high})"
            row.append(text)
        peer = best_peer(spec, data)
        ratio = ""
        if ours and peer and peer[1] > 0 and median(ours) > 0:
            value = median(ours) / peer[1] if spec.higher_is_better else peer[1] / median(ours)
            ratio = f"{value:,.2f}x ({data[peer[0]]['label']})"
        row += [ratio, verdict(spec, median(ours)) if ours else ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def scaling_tables(values: dict[str, list[float]], sizes: Any) -> str:
    out = []
    rows = ["| tasks queued | enqueue (tasks/s) | drain (tasks/s) | p50 (ms) | p99 (ms) | runs |"]
    rows.append("|---|---|---|---|---|---|")
    for depth in sizes.depths:
        key = f"depth{depth}"
        if f"{key}_drain" not in values:
            continue
        rows.append(
            f"| {depth:,} | {median(values[f'{key}_enqueue']):,.0f} | "
            f"{median(values[f'{key}_drain']):,.0f} | {median(values[f'{key}_p50']):.2f} | "
            f"{median(values[f'{key}_p99']):.2f} | {len(values[f'{key}_drain'])} |"
        )
    if len(rows) > 2:
        out.append(
            "Queue depth (django-redis-tasks, 1 worker process; latency of priority-100 "
            "tasks while the worker drains):\n\n" + "\n".join(rows)
        )
    rows = [
        "| queues served | drain, `--queue` each (tasks/s) | drain, every queue (tasks/s) "
        "| idle p50 (ms) | idle p99 (ms) | runs |"
    ]
    rows.append("|---|---|---|---|---|---|")
    for count in sizes.queue_counts:
        key = f"queues{count}"
        if f"{key}_drain" not in values:
            continue
        every = values.get(f"{key}_drain_all")
        rows.append(
            f"| {count} | {median(values[f'{key}_drain']):,.0f} | "
            f"{f'{median(every):,.0f}' if every else 'n/a'} | "
            f"{median(values[f'{key}_p50']):.2f} | {median(values[f'{key}_p99']):.2f} | "
            f"{len(values[f'{key}_drain'])} |"
        )
    if len(rows) > 2:
        out.append(
            "Queues served by one worker process (django-redis-tasks; tasks spread "
            "evenly; the worker names each queue with `--queue`, or serves every queue of the "
            "instance; latency on the last queue, worker idle, `--queue` each):\n\n"
            + "\n".join(rows)
        )
    return "\n\n".join(out)


def plot(data: dict[str, Any], sizes: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    systems = [key for key in SYSTEM_KEYS if key in data]
    labels = [data[k]["label"].replace(" (SQLite)", "\n(SQLite)") for k in systems]
    ours_values = data.get("redis_tasks", {}).get("values", {})
    scaling = any(k.startswith("depth") for k in ours_values)
    fig, axes = plt.subplots(2, 2 if scaling else 1, figsize=(14 if scaling else 8, 10))
    axes = axes.reshape(2, -1)

    def bars(ax: Any, keys: list[tuple[str, str]], ylabel: str, title: str) -> None:
        width = 0.8 / len(keys)
        for i, (key, name) in enumerate(keys):
            heights = [median(data[s]["values"].get(key) or [0]) for s in systems]
            xs = [x + (i - (len(keys) - 1) / 2) * width for x in range(len(systems))]
            ax.bar(xs, heights, width, label=name)
        ax.set_xticks(range(len(systems)), labels, fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
        ax.yaxis.set_minor_formatter(
            FuncFormatter(lambda v, _: f"{v:,g}" if f"{v:g}"[0] in "25" else "")
        )
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)

    bars(
        axes[0, 0],
        [
            ("enqueue", "enqueue loop"),
            ("bulk", "bulk enqueue"),
            ("drain_sync", "drain sync, 1 proc"),
            ("drain_async", "drain async, 1 proc"),
            ("drain_best", "drain, best of 1/2/4 procs"),
        ],
        "tasks/s (log)",
        "Throughput, no-op tasks (higher is better)",
    )
    bars(
        axes[1, 0],
        [
            ("idle_p50", "idle p50"),
            ("idle_p99", "idle p99"),
            ("urgent_p50", "prio 100 under 10k backlog, p50"),
            ("urgent_p99", "prio 100 under 10k backlog, p99"),
        ],
        "ms (log)",
        "Latency enqueue → finished seen (lower is better; RQ: no priority)",
    )

    def scaling_panel(
        ax: Any, prefix: str, xs: list[int], rates: list[tuple[str, str]], latency: str,
        xlabel: str, title: str,
    ) -> None:  # fmt: skip
        """Our rates (left axis) and p50/p99 latency (right axis) by ``{prefix}{x}_{key}``."""
        for key, name in rates:
            ax.plot(xs, [median(ours_values[f"{prefix}{x}_{key}"]) for x in xs], "o-", label=name)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("tasks/s")
        ax.set_ylim(bottom=0)
        twin = ax.twinx()
        for key, style in (("p50", "s--"), ("p99", "^--")):
            twin.plot(
                xs,
                [median(ours_values[f"{prefix}{x}_{key}"]) for x in xs],
                style,
                color="gray",
                label=f"{latency} {key}",
            )
        twin.set_ylabel("ms")
        twin.set_ylim(bottom=0)
        ax.legend(loc="lower left", fontsize=8)
        twin.legend(loc="lower right", fontsize=8)
        ax.set_title(title)

    if scaling:
        scaling_panel(
            axes[0, 1],
            "depth",
            [d for d in sizes.depths if f"depth{d}_drain" in ours_values],
            [("enqueue", "enqueue loop"), ("drain", "drain, 1 proc")],
            "prio-100 latency",
            "tasks queued",
            "django-redis-tasks: by queue depth",
        )
        scaling_panel(
            axes[1, 1],
            "queues",
            [c for c in sizes.queue_counts if f"queues{c}_drain" in ours_values],
            [("drain", "drain, --queue each"), ("drain_all", "drain, every queue")],
            "idle latency",
            "queues served by the worker",
            "django-redis-tasks: by queues served",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def environment() -> str:
    import django
    import redis

    from redis_tasks.testing import server_binary

    server = subprocess.run(
        [server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        import hiredis

        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "no hiredis"
    return (
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"redis-py {redis.__version__} ({parser}); {server}; {os.cpu_count()} CPUs"
    )


def report(
    data: dict[str, Any], sizes: Any, command: str, seconds: float, loads: tuple[float, float]
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmark results: django-redis-tasks and its peers\n",
        "Written by `benchmarks/compare.py`; see `benchmarks/README.md` for what each figure "
        "means and how it is taken.\n",
        f"- Run: {when}, `{command}`, {seconds / 60:.1f} min; load average "
        f"{loads[0]:.2f} before, {loads[1]:.2f} after (the machine is shared).",
        f"- {environment()}.",
        f"- Each figure: median of {sizes.runs} runs, (min-max) beside it. "
        '"ours vs best peer": how many times better django-redis-tasks is than the best '
        "peer on that figure (> 1: ours is better; for rates ours / peer, for times, "
        "latencies and memory peer / ours).",
        "",
        "| system | version | worker, as run | bulk enqueue is | memory is |",
        "|---|---|---|---|---|",
    ]
    for key in SYSTEM_KEYS:
        if key in data:
            d = data[key]
            version = d["version"]
            if d.get("python", platform.python_version()) != platform.python_version():
                version += f" (Python {d['python']})"
            parts.append(
                f"| {d['label']} | {version} | {d['settings']} | {d['bulk_how']} | "
                f"{d['memory_unit']} |"
            )
    parts += ["", comparison_table(data, SPECS), ""]
    for key in SYSTEM_KEYS:
        for name, note in data.get(key, {}).get("notes", {}).items():
            parts.append(f"- {data[key]['label']}, {name}: {note}.")
    ours = data.get("redis_tasks", {}).get("values", {})
    if "floor" in data:
        parts += ["", floor_section(data["floor"], ours)]
    scaling = scaling_tables(ours, sizes)
    if scaling:
        parts += ["", scaling]
    parts += ["", "Every run's value, per system and figure:", "", "```"]
    for key in SYSTEM_KEYS:
        if key in data:
            for figure, values in data[key]["values"].items():
                shown = ", ".join(f"{v:,.4g}" for v in values)
                parts.append(f"{key:12} {figure:18} {shown}")
    parts += ["```", ""]
    return "\n".join(parts)


def main() -> None:
    from benchmarks.measures import Sizes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with small sizes")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3)")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEM_KEYS),
        help="comma-separated, of " + ", ".join(SYSTEM_KEYS),
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="django-redis-tasks' worker --concurrency in the drain figures (default 40)",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip depth/queue scaling")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the machine's floor (floor.py)"
    )
    parser.add_argument(
        "--leak",
        action="store_true",
        help="instead: the worker RSS run over 1,000,000 tasks (results-leak.md; ~15 min)",
    )
    parser.add_argument("--leak-tasks", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--scaling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE), help="where results.* go (benchmarks/)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sizes, args.scaling, args.leak_tasks, args.child_out)
        return

    sizes = Sizes()
    if args.quick:
        sizes = Sizes(
            runs=2,
            enqueue=500,
            bulk=2000,
            drain=1000,
            peer_drain=200,
            sleepers=100,
            samples=50,
            backlog=3000,
            urgent=20,
            depths=(1000, 10_000, 100_000),
            depth_window=2000,
        )
    if args.runs:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    if args.concurrency:
        sizes = dataclasses.replace(sizes, concurrency=args.concurrency)
    command = "scripts/bench " + " ".join(sys.argv[1:])
    loads = os.getloadavg()[0]
    started = time.perf_counter()
    data: dict[str, Any] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.leak:
        leak_run(100_000 if args.quick else 1_000_000, sizes, command, loads, out)
        return
    for key in args.systems.split(","):
        if interpreter(key) is None:
            print(f"== {key}: left out, it needs Python 3.14 (.venvs/bench314)", file=sys.stderr)
            continue
        print(f"== {key}", file=sys.stderr, flush=True)
        data[key] = run_child(key, sizes, not args.no_scaling, 0, {})
        print(f"   ({data[key]['seconds']:.0f} s)", file=sys.stderr, flush=True)
    if not args.no_floor:
        print("== the machine's floor (floor.py)", file=sys.stderr, flush=True)
        data["floor"] = run_floor(sizes.runs)
    seconds = time.perf_counter() - started
    text = report(data, sizes, command.strip(), seconds, (loads, os.getloadavg()[0]))
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    plot(data, sizes, out / "results.png")
    print(text)


def leak_run(total: int, sizes: Any, command: str, load: float, out: Path) -> None:
    """The worker RSS run alone (results-leak.md): results expire after 30 s in it, so that
    Redis holds a bounded number of them."""
    print(f"== redis_tasks, worker RSS over {total:,} tasks", file=sys.stderr, flush=True)
    document = run_child("redis_tasks", sizes, False, total, {"REDIS_TASKS_BENCH_RESULT_TTL": "30"})
    values = document["values"]
    marks = sorted((int(k[4:]), v[0]) for k, v in values.items() if k[4:].isdigit())
    text = "\n".join(
        [
            "# Worker memory over many tasks (django-redis-tasks)\n",
            f"- Run: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, `{command.strip()}`, "
            f"{document['seconds'] / 60:.1f} min; load average {load:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after.",
            f"- {environment()}.",
            "- One `redis_tasks_worker` process (default `--concurrency 10`) runs no-op tasks "
            "fed in `enqueue_many` batches of 10,000 whenever fewer than 10,000 are queued; "
            "results expire after 30 s. RSS is the worker process's `VmRSS`. One run "
            "(it takes as long as draining 1,000,000 tasks).",
            "",
            comparison_table({"redis_tasks": document}, leak_specs(total)),
            "",
            "RSS after each mark: "
            + ", ".join(f"{n:,} tasks: {rss:.1f} MiB" for n, rss in marks)
            + ".",
            "",
        ]
    )
    (out / "results-leak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
