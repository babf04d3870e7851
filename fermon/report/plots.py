"""Session figures drawn with matplotlib (object API, no pyplot state) and returned as inline SVG.

Text is written as paths, so pages need no fonts; dense raw samples are rasterised into the SVG as an
embedded PNG so that hour-long sessions still give small pages.

:data:`SESSION_FIGURES` lists a session page's figures in page order, each with its builder,
heading and caption: :func:`session_figures` draws them and the page places them from the same list,
so a new figure is one new entry.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fermon.report.axes import TimeAxis, elapsed_ticks, set_ticks, time_axis

SMOOTHING_S = 2.0  # width of the centred moving average on the expression curves
MAX_LINE_POINTS = 2000  # longer curves are averaged into this many bins
RASTER_ABOVE = 200  # raw points drawn as an embedded image above this many samples (page size)
COVERAGE_BINS = 60
WIDTH_IN = 10.0

_SVG_START = re.compile(r"^.*?(?=<svg)", re.S)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def class_colours(class_names: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per class, in model order, so every page uses the same legend."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(k % 10) for k, name in enumerate(class_names)}


def _figure(height_in: float):
    """A figure with fixed margins in inches (room for labels left, legend right). Fixed rather than
    constrained layout: that needs a second draw and doubled the build time."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height_in))
    figure.subplots_adjust(
        left=0.9 / WIDTH_IN, right=1 - 1.4 / WIDTH_IN, bottom=0.5 / height_in, top=1 - 0.15 / height_in
    )
    return figure


def to_svg(figure: Any, salt: str) -> str:
    """The figure as an ``<svg>`` element for inlining: no XML prolog, DOCTYPE or RDF metadata.

    ``salt`` makes element ids unique per figure, so several SVGs can share one page.
    """
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = _SVG_METADATA.sub("", _SVG_START.sub("", buffer.getvalue(), count=1), count=1)
    return text.replace("<svg ", '<svg role="img" ', 1)


def _binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y`` in ``bins`` equal-count chunks, keeping NaN where a chunk is all NaN."""
    if len(x) <= bins:
        return x, y
    starts = np.linspace(0, len(x), bins + 1).astype(int)[:-1]  # every chunk holds at least one sample
    valid = ~np.isnan(y)
    xs = np.add.reduceat(x, starts) / np.diff(np.append(starts, len(x)))
    sums = np.add.reduceat(np.where(valid, y, 0.0), starts)
    counts = np.add.reduceat(valid.astype(np.int64), starts)
    with np.errstate(invalid="ignore"):  # 0/0 for an all-NaN chunk: a gap, NaN is right
        return xs, sums / counts


def _shade_gaps(ax: Any, gaps: Sequence[dict[str, Any]], axis: TimeAxis) -> None:
    for gap in gaps:
        # Gaps are given on the session's time axis (video offset already added).
        ax.axvspan(*axis.x([gap["start_s"], gap["end_s"]]), color="#d62728", alpha=0.15, lw=0)


def _empty_note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#555555")


def smoothed(samples: pd.DataFrame, column: str, fps: float) -> np.ndarray:
    """Centred moving average over about ``SMOOTHING_S`` seconds; NaN where no target face."""
    window = max(1, round(SMOOTHING_S * fps)) if fps > 0 else 1
    values = samples[column].astype("float64")
    # Never across a hole in the samples (a pause between chunks, a decode gap): each run on its own.
    runs = np.cumsum(np.diff(samples["timestamp_s"].to_numpy(float), prepend=-np.inf) > SMOOTHING_S)
    rolled = values.groupby(runs).rolling(window, center=True, min_periods=1).mean()
    result = rolled.droplevel(0).reindex(values.index).to_numpy(copy=True)
    result[~samples["covered"].to_numpy(bool)] = np.nan  # break the curve where the face is gone
    return result


def expression_figure(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    fps: float,
    gaps: Sequence[dict[str, Any]],
    salt: str,
    episodes: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Probability of each expression over time: smoothed curves over faint raw samples, and the
    expression episodes (fermon.report.episodes) as shaded spans labelled with their expression."""
    figure = _figure(3.6)
    ax = figure.add_subplot()
    axis, times = _session_axis(samples)
    colours = class_colours(class_names)
    covered = samples["covered"].to_numpy(bool)
    rasterise = int(covered.sum()) > RASTER_ABOVE
    for name in class_names:
        raw = samples[f"prob_{name}"].to_numpy(float)
        ax.scatter(times[covered], raw[covered], s=5, color=colours[name], alpha=0.25, lw=0, rasterized=rasterise)
        x, y = axis.break_lines(*_binned(times, smoothed(samples, f"prob_{name}", fps), MAX_LINE_POINTS))
        ax.plot(x, y, color=colours[name], lw=1.6, label=name)
    _shade_gaps(ax, gaps, axis)
    _shade_episodes(ax, episodes, axis, colours)
    _finish_unit_axes(ax, axis, covered, "probability")
    return to_svg(figure, salt)


def _shade_episodes(ax: Any, episodes: Sequence[Mapping[str, Any]], axis: TimeAxis, colours: Mapping) -> None:
    for episode in episodes:
        lo, hi = axis.x([episode["start_s"], episode["end_s"]])
        ax.axvspan(lo, hi, color=colours.get(episode["expression"], "#888888"), alpha=0.15, lw=0)
        ax.text((lo + hi) / 2, 0.99, episode["expression"], ha="center", va="top", fontsize=7, clip_on=True)


def _session_axis(samples: pd.DataFrame) -> tuple[TimeAxis, np.ndarray]:
    """The session's time axis (long pauses squeezed) and each sample's x on it."""
    seconds = samples["timestamp_s"].to_numpy(float)
    axis = time_axis(seconds)
    return axis, axis.x(seconds)


def _finish_time_axis(ax: Any, axis: TimeAxis) -> None:
    xs, labels, xlabel = elapsed_ticks(axis)
    set_ticks(ax, axis, xs, labels)
    ax.set_xlabel(xlabel)


def _finish_unit_axes(ax, axis: TimeAxis, covered: np.ndarray, ylabel: str) -> None:
    """What every 0-to-1 plot over time ends with: limits, labels, legend, grid, a note when empty."""
    if not covered.any():
        _empty_note(ax, "no target face in this session")
    ax.set(ylim=(-0.02, 1.02), ylabel=ylabel)
    _finish_time_axis(ax, axis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.grid(alpha=0.3)


def share_figure(shares: dict[str, float], class_names: Sequence[str], salt: str) -> str:
    """Share of the covered time in each expression (horizontal bars, model order top to bottom)."""
    figure = _figure(0.32 * len(class_names) + 0.8)
    ax = figure.add_subplot()
    colours = class_colours(class_names)
    values = [0.0 if not np.isfinite(shares.get(n, np.nan)) else 100 * shares[n] for n in class_names]
    positions = np.arange(len(class_names))[::-1]
    ax.barh(positions, values, color=[colours[n] for n in class_names])
    for position, value in zip(positions, values):
        ax.text(value + 1, position, f"{value:.0f}%", va="center", fontsize=8)
    ax.set_yticks(positions, list(class_names))
    ax.set(xlim=(0, 105), xlabel="share of time with the target face (%)")
    if not any(values):
        _empty_note(ax, "no target face in this session")
    ax.grid(axis="x", alpha=0.3)
    return to_svg(figure, salt)


def coverage_figure(samples: pd.DataFrame, gaps: Sequence[dict[str, Any]], salt: str) -> str:
    """Share of samples with the target face, and with any face, in time bins."""
    figure = _figure(2.4)
    ax = figure.add_subplot()
    axis, times = _session_axis(samples)
    bins = max(1, min(COVERAGE_BINS, len(times)))
    x, target = axis.break_lines(*_binned(times, samples["covered"].to_numpy(float), bins))
    _, anyface = axis.break_lines(*_binned(times, (samples["faces"] > 0).to_numpy(float), bins))
    ax.fill_between(x, 0, 100 * target, step="mid", color="#1f77b4", alpha=0.35, label="target face")
    ax.step(x, 100 * anyface, where="mid", color="#333333", lw=1, label="any face")
    _shade_gaps(ax, gaps, axis)
    ax.set(ylim=(0, 105), ylabel="samples with a face (%)")
    _finish_time_axis(ax, axis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return to_svg(figure, salt)


def detection_figure(samples: pd.DataFrame, salt: str) -> str:
    """The target face's detection score and the classifier's confidence over time."""
    figure = _figure(2.4)
    ax = figure.add_subplot()
    axis, times = _session_axis(samples)
    covered = samples["covered"].to_numpy(bool)
    rasterise = int(covered.sum()) > RASTER_ABOVE
    for column, colour, name in (("det_score", "#2ca02c", "detection score"), ("confidence", "#9467bd", "confidence")):
        values = samples[column].to_numpy(float)
        ax.scatter(
            times[covered], values[covered], s=5, color=colour, alpha=0.5, lw=0, label=name, rasterized=rasterise
        )
    _finish_unit_axes(ax, axis, covered, "score")
    return to_svg(figure, salt)


# --------------------------------------------------------------------------- the figures of a session page


@dataclass(frozen=True)
class SessionData:
    """What a session's figures are drawn from."""

    samples: pd.DataFrame  # one row per sample, from fermon.analysis.target_samples
    row: Mapping[str, Any]  # the session's summary row
    class_names: Sequence[str]
    fps: float  # sampling rate
    gaps: Sequence[dict[str, Any]]  # decode gaps on the session's time axis
    episodes: Sequence[Mapping[str, Any]] = ()  # fermon.report.episodes rows


@dataclass(frozen=True)
class SessionFigure:
    """One figure of a session page: how it is drawn and how the page presents it."""

    key: str
    draw: Callable[[SessionData, str], str]  # (session, salt) -> inline SVG
    heading: str
    caption: str
    salt: str  # suffix of the session id that makes this figure's SVG element ids unique on its page
    shown: Callable[[SessionData], bool] = lambda s: bool(s.samples["covered"].any())  # else not drawn


SESSION_FIGURES: tuple[SessionFigure, ...] = (
    SessionFigure(
        "expressions",
        lambda s, salt: expression_figure(s.samples, s.class_names, s.fps, s.gaps, salt, s.episodes),
        "Expressions over time",
        "Probability of each expression: lines smoothed over about 2 s, dots raw samples. Shaded spans "
        "labelled with an expression are its episodes (table below). A hatched band stands for a long pause "
        "between recordings, its length written on it.",
        "e",
    ),
    SessionFigure(
        "shares",
        lambda s, salt: share_figure({c: s.row[f"share_{c}"] for c in s.class_names}, s.class_names, salt),
        "Share of time in each expression",
        "Share of the samples with a target face whose most likely expression is each class.",
        "s",
    ),
    SessionFigure(
        "coverage",
        lambda s, salt: coverage_figure(s.samples, s.gaps, salt),
        "Face-detection coverage",
        "Share of samples with the target face (filled) and with any face (line), in time bins.",
        "c",
        lambda s: bool((s.samples["faces"] > 0).any()),
    ),
    SessionFigure(
        "detection",
        lambda s, salt: detection_figure(s.samples, salt),
        "Target face: detection score and confidence",
        "Face detector score and expression classifier confidence of the target face.",
        "d",
    ),
)


def session_figures(
    samples: pd.DataFrame,
    row: Mapping[str, Any],
    class_names: Sequence[str],
    fps: float,
    gaps: Sequence[dict[str, Any]],
    episodes: Sequence[Mapping[str, Any]] = (),
) -> dict[str, str]:
    """The figures of :data:`SESSION_FIGURES` that have something to show (most need a target face),
    as inline SVG by key."""
    session = SessionData(samples, row, class_names, fps, gaps, episodes)
    return {
        figure.key: figure.draw(session, f"{row['session_id']}-{figure.salt}")
        for figure in SESSION_FIGURES
        if figure.shown(session)
    }
