"""The overview's charts, drawn as inline SVG on the server: no JavaScript, nothing to build.

Two per backend, from its last hour (``redis_tasks.series``): tasks started, succeeded and
failed per minute, and the depth (tasks waiting and running) as sampled each minute. This
module only does the geometry (a ``Chart`` of paths, ticks and hover targets, in the SVG's own
units); ``templates/redis_tasks_dashboard/chart.html`` writes the markup, with a title and a
text summary for screen readers and the totals as data attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.text import slugify

from ..series import COUNTS, DEPTH, LastHour, Minute

# The SVG's coordinate system (it scales to its box): plot area inside margins for the labels.
WIDTH, HEIGHT = 480, 150
LEFT, RIGHT, TOP, BOTTOM = 34, 8, 8, 20
LABELS = {"started": "Started", "succeeded": "Succeeded", "failed": "Failed",
          "waiting": "Waiting", "running": "Running"}  # fmt: skip


@dataclass(frozen=True)
class Line:
    name: str
    label: str
    path: str  # SVG path data; '' when nothing to draw
    total: int | None  # a count's sum over the hour
    latest: int | None  # a depth's newest sample
    end: tuple[float, float] | None  # its newest point, marked with a dot


@dataclass(frozen=True)
class Tick:
    at: float  # y (horizontal grid lines) or x (time labels), in SVG units
    label: str
    anchor: str = "end"  # text-anchor of the label


@dataclass(frozen=True)
class Column:
    """A minute's hover target: its tooltip says the minute's numbers."""

    left: float
    title: str


@dataclass(frozen=True)
class Chart:
    kind: str  # "throughput" or "depth"
    dom_id: str
    title: str
    summary: str
    lines: tuple[Line, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    columns: tuple[Column, ...]
    column_width: float
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def plot_height(self) -> int:
        return self.bottom - self.top


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at or above ``value``: round axis labels."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


class _Frame:
    """Minutes and values to SVG units."""

    def __init__(self, count: int, top_value: int) -> None:
        self.step = (WIDTH - RIGHT - LEFT) / max(count - 1, 1)
        self.top_value = top_value

    def x(self, index: int) -> float:
        return round(LEFT + index * self.step, 1)

    def y(self, value: float) -> float:
        return round(HEIGHT - BOTTOM - value / self.top_value * (HEIGHT - BOTTOM - TOP), 1)


def _path(frame: _Frame, values: Sequence[int | None]) -> str:
    """Segments over consecutive known values (an unknown one, a minute without a depth
    sample, leaves a gap); a lone value is a zero-length segment, drawn as a dot."""
    parts: list[str] = []
    run = 0  # points in the segment being drawn
    for i, value in enumerate([*values, None]):
        if value is None:
            if run == 1:
                parts.append("l0 0")
            run = 0
        else:
            parts.append(f"{'L' if run else 'M'}{_number(frame.x(i))} {_number(frame.y(value))}")
            run += 1
    return " ".join(parts)


def _end(frame: _Frame, values: Sequence[int | None]) -> tuple[float, float] | None:
    i = next((i for i in range(len(values) - 1, -1, -1) if values[i] is not None), None)
    return None if i is None else (frame.x(i), frame.y(values[i] or 0))


def _chart(hour: LastHour, kind: str, names: Sequence[str], alias: str) -> Chart:
    minutes = hour.minutes
    series = {name: [m.value(name) for m in minutes] for name in names}
    peak = max((v or 0 for values in series.values() for v in values), default=0)
    top = nice_ceiling(max(peak, 1))
    frame = _Frame(len(minutes), top)
    counts = kind == "throughput"
    lines = tuple(
        Line(name, LABELS[name], _path(frame, series[name]),
             total=hour.total(name) if counts else None,
             latest=None if counts else hour.latest(name),
             end=_end(frame, series[name]))
        for name in names
    )  # fmt: skip
    y_values = (0, top // 2, top) if top % 2 == 0 else (0, top)
    last = len(minutes) - 1
    x_ticks = tuple(
        Tick(frame.x(i), "now" if i == last else _clock(minutes[i].at), anchor)
        for i, anchor in ((0, "start"), (last // 2, "middle"), (last, "end"))
    )
    columns = tuple(
        Column(round(frame.x(i) - frame.step / 2, 1), _tooltip(m, names))
        for i, m in enumerate(minutes)
        if any(m.value(n) for n in names) or (not counts and m.waiting is not None)
    )
    if counts:
        title = f"Tasks per minute, last hour, backend {alias}"
        summary = ", ".join(f"{line.label.lower()} {line.total}" for line in lines)
        summary = f"In the last hour: {summary}; at most {peak} in a minute."
    else:
        title = f"Queue depth, last hour, backend {alias}"
        latest = ", ".join(f"{ln.label.lower()} {ln.latest}" for ln in lines
                           if ln.latest is not None)  # fmt: skip
        summary = f"Latest: {latest}; at most {peak}." if latest else "No depth known."
    return Chart(
        kind=kind,
        dom_id=f"rtd-chart-{slugify(alias) or 'backend'}-{kind}",
        title=title,
        summary=summary,
        lines=lines,
        y_ticks=tuple(Tick(frame.y(v), str(v)) for v in y_values),
        x_ticks=x_ticks,
        columns=columns,
        column_width=round(frame.step, 1),
    )


def _tooltip(minute: Minute, names: Sequence[str]) -> str:
    values = ", ".join(f"{LABELS[n].lower()} {minute.value(n)}" for n in names
                       if minute.value(n) is not None)  # fmt: skip
    return f"{_clock(minute.at)}: {values or 'no sample'}"


def throughput(hour: LastHour, alias: str) -> Chart:
    """Tasks started, succeeded and failed per minute."""
    return _chart(hour, "throughput", COUNTS, alias)


def depth(hour: LastHour, alias: str) -> Chart:
    """Tasks waiting and running, as sampled once a minute (the overview puts its own counts
    in the current minute: ``LastHour.with_depth_now``)."""
    return _chart(hour, "depth", DEPTH, alias)
