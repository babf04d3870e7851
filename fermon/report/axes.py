"""Time axes of the session figures: long pauses squeezed and marked, ticks placed by hand.

A session's chunks may be recorded with long pauses between them (29 minutes between two 10-s
chunks); drawn to scale, the recorded stretches would be slivers. :class:`TimeAxis` maps seconds from
the session's start to plot x: recorded stretches at their own scale, each pause longer than
:data:`PAUSE_MIN_S` squeezed to a fixed share of the width and marked with its length. Ticks are
placed here rather than by matplotlib's locators, which cannot skip the pauses and, with a time zone,
misbehave across a daylight-saving change: wall-clock ticks are round in UTC, labelled in the
display zone, with the zone's abbreviation where its offset changes ("02:00 CEST", "02:00 CET").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

import numpy as np

PAUSE_MIN_S = 60.0  # shorter holes between samples are drawn to scale
PAUSE_SHARE = 0.08  # a squeezed pause is drawn this wide, as a share of the recorded stretches
MAX_TICKS = 7  # over the recorded stretches; each stretch gets at least one
NICE_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
LABEL_FONT = 8.0  # points: event labels and pause labels
LABEL_ROW_IN = 0.2  # height of a row of event labels above the plot


@dataclass(frozen=True)
class TimeAxis:
    """Seconds from the session's start -> plot x. ``stretches`` are (first, last) seconds of each run
    of samples with no pause inside; consecutive stretches are ``pause_width`` apart on the plot."""

    stretches: tuple[tuple[float, float], ...]
    pause_width: float

    @property
    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        times, xs, x = [], [], 0.0
        for first, last in self.stretches:
            times += [first, last]
            xs += [x, x + last - first]
            x += last - first + self.pause_width
        return np.asarray(times, float), np.asarray(xs, float)

    def x(self, seconds: Any) -> np.ndarray:
        """Plot x of each time: to scale inside a stretch and beyond the ends, squeezed inside a pause."""
        t = np.asarray(seconds, float)
        times, xs = self._knots
        if not len(times):
            return t.copy()
        inside = np.interp(t, times, xs)
        return np.where(t < times[0], xs[0] + t - times[0], np.where(t > times[-1], xs[-1] + t - times[-1], inside))

    @property
    def pauses(self) -> list[tuple[float, float, float]]:
        """(x where it starts, x where it ends, its length in seconds) of each squeezed pause."""
        times, xs = self._knots
        return [(xs[k], xs[k + 1], times[k + 1] - times[k]) for k in range(1, len(times) - 1, 2)]

    @property
    def recorded_s(self) -> float:
        return float(sum(last - first for first, last in self.stretches))

    def limits(self) -> tuple[float, float]:
        _, xs = self._knots
        lo, hi = (float(xs[0]), float(xs[-1])) if len(xs) else (0.0, 1.0)
        return lo, hi if hi > lo else lo + 1.0

    def break_lines(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A NaN between two points on either side of a pause, so that a curve does not bridge it."""
        cuts = [np.searchsorted(x, end) for start, end, _ in self.pauses if (x <= start).any() and (x >= end).any()]
        return np.insert(x.astype(float), cuts, np.nan), np.insert(y.astype(float), cuts, np.nan)


def time_axis(seconds: Any) -> TimeAxis:
    """The axis for samples (and events) at these seconds: every hole longer than PAUSE_MIN_S and
    longer than the width a squeezed pause gets is a pause."""
    t = np.unique(np.asarray(seconds, float)[np.isfinite(np.asarray(seconds, float))])
    if not len(t):
        return TimeAxis((), PAUSE_MIN_S)
    holes = np.diff(t)
    candidates = holes > PAUSE_MIN_S
    recorded = float(t[-1] - t[0] - holes[candidates].sum())
    width = PAUSE_SHARE * recorded if recorded > 0 else PAUSE_MIN_S
    cuts = np.flatnonzero(candidates & (holes > width))
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(t) - 1]])
    return TimeAxis(tuple((float(t[a]), float(t[b])) for a, b in zip(starts, ends)), width)


def _step(recorded_s: float, minimum: float = 0.0) -> float:
    wanted = max(recorded_s / MAX_TICKS, minimum)
    return next((s for s in NICE_STEPS_S if s >= wanted), NICE_STEPS_S[-1])


def _tick_times(axis: TimeAxis, step: float, origin: float = 0.0) -> list[float]:
    """Session seconds of the ticks: multiples of ``step`` (counted from ``origin`` seconds before the
    session's start) in each stretch, or the stretch's start when none falls in it."""
    ticks = []
    for first, last in axis.stretches:
        k = np.arange(np.ceil((first + origin) / step - 1e-9), np.floor((last + origin) / step + 1e-9) + 1)
        inside = [float(v) * step - origin for v in k]
        ticks += inside or ([first] if last > first or len(axis.stretches) == 1 else [])
    return ticks


def _clock(seconds: float, with_hours: bool) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if with_hours else f"{minutes}:{secs:02d}"


def elapsed_ticks(axis: TimeAxis) -> tuple[list[float], list[str], str]:
    """Ticks (x, labels) and the axis label for time from the session's start: seconds for a
    session under a minute long, else m:ss or h:mm:ss."""
    last = axis.stretches[-1][1] if axis.stretches else 0.0
    if last < 60:
        step = _step(axis.recorded_s)
        times = _tick_times(axis, step)
        digits = max(0, -int(np.floor(np.log10(step)))) if step < 1 else 0
        return list(axis.x(times)), [f"{t:.{digits}f}" for t in times], "time (s)"
    times = _tick_times(axis, _step(axis.recorded_s, 1.0))
    hours = last >= 3600
    return list(axis.x(times)), [_clock(t, hours) for t in times], f"time from start ({'h:mm:ss' if hours else 'm:ss'})"


def wall_ticks(axis: TimeAxis, start: datetime, zone: tzinfo) -> tuple[list[float], list[str]]:
    """Ticks (x, labels) on the wall clock: round in the zone's offset at the start (so in UTC across a
    daylight-saving change), labelled in ``zone``, with its abbreviation on both sides of a change."""
    epoch = start.timestamp()
    offset = start.astimezone(zone).utcoffset()
    origin = epoch + (offset.total_seconds() if offset else 0.0)
    step = _step(axis.recorded_s, 1.0)
    times = _tick_times(axis, step, origin % 86400)
    moments = [datetime.fromtimestamp(epoch + t, timezone.utc).astimezone(zone) for t in times]
    pattern = "%H:%M" if step >= 60 and all(m.second == 0 for m in moments) else "%H:%M:%S"
    labels = [m.strftime(pattern) for m in moments]
    for k in range(1, len(moments)):
        if moments[k].utcoffset() != moments[k - 1].utcoffset():
            for j in (k - 1, k):
                labels[j] = f"{moments[j].strftime(pattern)} {moments[j].tzname()}"
    return list(axis.x(times)), labels


def set_ticks(ax: Any, axis: TimeAxis, xs: Sequence[float], labels: Sequence[str]) -> None:
    """Limits, ticks and the pauses' marks on ``ax``."""
    ax.set_xlim(*axis.limits())
    ax.set_xticks(list(xs), list(labels))
    mark_pauses(ax, axis)


def mark_pauses(ax: Any, axis: TimeAxis) -> None:
    """Each squeezed pause: a hatched band, its length, and break marks on the x axis."""
    from matplotlib.transforms import blended_transform_factory

    across = blended_transform_factory(ax.transData, ax.transAxes)
    for start, end, seconds in axis.pauses:
        ax.axvspan(start, end, facecolor="#f2f2f2", edgecolor="#bbbbbb", hatch="///", lw=0, zorder=0)
        ax.text((start + end) / 2, 0.5, f"pause\n{pause_text(seconds)}", transform=across, ha="center",
                va="center", fontsize=LABEL_FONT, color="#444444", gid="pause-label")  # fmt: skip
        slash = [(-1, -1.6), (1, 1.6)]
        ax.plot([start, end], [0, 0], transform=across, marker=slash, markersize=9, ls="none", color="#222222",
                mew=1, clip_on=False)  # fmt: skip


def pause_text(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def place_labels(ax: Any, xs: Sequence[float], texts: Sequence[str]) -> int:
    """Event labels above the plot, horizontal, in rows so that none overlaps another, and the figure
    made taller by those rows (the plot keeps its size); returns the number of rows. Needs the axes'
    limits set."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import blended_transform_factory

    figure = ax.figure
    renderer = FigureCanvasAgg(figure).get_renderer()
    across = blended_transform_factory(ax.transData, ax.transAxes)
    box = ax.get_window_extent(renderer)
    lo, hi = ax.get_xlim()
    per_px = (hi - lo) / box.width
    rows_end: list[float] = []
    height_in = box.height / figure.dpi
    for x, text in sorted(zip(xs, texts), key=lambda pair: pair[0]):
        label = ax.text(x, 1.0, text, transform=across, ha="center", va="bottom", fontsize=LABEL_FONT,
                        clip_on=False, gid="event-label")  # fmt: skip
        half = (label.get_window_extent(renderer).width / 2 + 4) * per_px
        row = next((k for k, end in enumerate(rows_end) if end < x - half), len(rows_end))
        rows_end[row : row + 1] = [x + half]
        label.set_y(1.0 + (0.05 + row * LABEL_ROW_IN) / height_in)
    _grow_top(figure, len(rows_end) * LABEL_ROW_IN)
    return len(rows_end)


def _grow_top(figure: Any, extra_in: float) -> None:
    """Add ``extra_in`` inches above the plot, keeping its size and the other margins."""
    width, height = figure.get_size_inches()
    bottom, top = figure.subplotpars.bottom * height, (1 - figure.subplotpars.top) * height
    figure.set_size_inches(width, height + extra_in)
    figure.subplots_adjust(bottom=bottom / (height + extra_in), top=1 - (top + extra_in) / (height + extra_in))
