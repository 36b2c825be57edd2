"""The learning chart as SVG geometry, computed on the server (no JavaScript, no library).

Two panels share one time axis: the success rate (0-100 %) above, the
average reward (-1 to 1) below. Each bucket is a point at its middle; a
vertical line marks each change of skill generation or weight version.
`chart.jinja` draws what `build_chart` returns.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from store.learning import LearningSeries

WIDTH, HEIGHT = 960, 380
LEFT, RIGHT, TOP = 64, 24, 28
PANEL, GAP = 130, 44


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    label: str  # the tooltip


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True, slots=True)
class MarkerLine:
    x: float
    kind: str
    label: str


@dataclass(slots=True)
class Panel:
    title: str
    top: float
    bottom: float
    points: list[Point] = field(default_factory=list)
    yticks: list[Tick] = field(default_factory=list)

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(slots=True)
class Chart:
    width: int
    height: int
    left: int
    right: float
    panels: list[Panel]
    xticks: list[Tick]
    markers: list[MarkerLine]
    empty: bool


def _stamp(ts: float, span: float) -> str:
    d = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    if span >= 2 * 86400:
        return d.strftime("%m-%d %H:%M")
    if span < 20:
        return d.strftime("%H:%M:%S.") + f"{d.microsecond // 100_000}"
    return d.strftime("%H:%M:%S" if span < 600 else "%H:%M")


def build_chart(series: LearningSeries) -> Chart:
    w = series.bucket_s
    times = [b.start for b in series.buckets] + [b.start + w for b in series.buckets]
    times += [m.at for m in series.markers]
    lo = min(times) if times else 0.0
    hi = max(times) if times else 1.0
    if hi - lo < w:
        hi = lo + w
    span = hi - lo
    right = WIDTH - RIGHT

    def x(ts: float) -> float:
        return LEFT + (ts - lo) / span * (right - LEFT)

    rate = Panel("success rate", TOP, TOP + PANEL)
    reward = Panel("average reward", TOP + PANEL + GAP, TOP + 2 * PANEL + GAP)

    def y(panel: Panel, v: float, vmin: float, vmax: float) -> float:
        return panel.bottom - (v - vmin) / (vmax - vmin) * (panel.bottom - panel.top)

    for b in series.buckets:
        mid = x(b.start + w / 2)
        when = _stamp(b.start, span)
        rate.points.append(Point(mid, y(rate, b.success_rate, 0, 1),
                                 f"{when}: {b.success_rate:.0%} of {b.sessions} sessions"))
        reward.points.append(Point(mid, y(reward, b.avg_reward, -1, 1),
                                   f"{when}: average reward {b.avg_reward:+.2f} "
                                   f"over {b.sessions} sessions"))
    rate.yticks = [Tick(y(rate, v, 0, 1), f"{v:.0%}") for v in (0, 0.5, 1)]
    reward.yticks = [Tick(y(reward, v, -1, 1), f"{v:+.0f}" if v else "0") for v in (-1, 0, 1)]
    xticks = [Tick(x(lo + span * i / 4), _stamp(lo + span * i / 4, span)) for i in range(5)]
    markers = [MarkerLine(x(m.at), m.kind,
                          ("skills " if m.kind == "skills" else "weights ") + m.value)
               for m in series.markers]
    return Chart(WIDTH, HEIGHT, LEFT, right, [rate, reward], xticks, markers,
                 empty=not series.buckets)
