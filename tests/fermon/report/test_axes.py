"""Time on the session figures: wall-clock ticks across a daylight-saving change, readable event
labels, and long pauses squeezed and marked rather than drawn to scale (issue 28, item 6). The figures
are drawn through the pages' own functions; the matplotlib figure is caught on its way to SVG."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fermon.report import clinical, plots

NAMES = ["neutral", "happiness"]
BERLIN = ZoneInfo("Europe/Berlin")


def samples_at(seconds: np.ndarray) -> pd.DataFrame:
    """The per-sample view (fermon.analysis.target_samples) of a face seen at every one of ``seconds``."""
    wave = 0.5 + 0.4 * np.sin(seconds / 7.0)
    return pd.DataFrame(
        {
            "session_id": "s",
            "video": "v.mp4",
            "timestamp_s": seconds.astype(float),
            "covered": True,
            "faces": 1,
            "label": pd.Categorical(np.where(wave > 0.5, "neutral", "happiness"), categories=NAMES),
            "det_score": 0.9,
            "confidence": 0.8,
            "prob_neutral": wave,
            "prob_happiness": 1 - wave,
        }
    )


@pytest.fixture
def caught(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each figure the report functions draw, caught in place of its SVG (which still gets made)."""
    figures: list[Any] = []
    to_svg = plots.to_svg

    def catch(figure: Any, salt: str) -> str:
        figures.append(figure)
        return to_svg(figure, salt)

    monkeypatch.setattr(plots, "to_svg", catch)
    return figures


def svg_ticks(svg: str) -> list[tuple[float, str]]:
    """(x, text) of each x tick label in a rendered SVG figure (text is kept as text: svg.fonttype none)."""
    chunks = re.split(r'<g id="xtick_\d+">', svg.split('<g id="matplotlib.axis_2">')[0])[1:]
    ticks = []
    for chunk in chunks:  # each tick's first text is its label
        text = re.search(r'<text[^>]*\bx="([-\d.]+)"[^>]*>([^<]*)</text>', chunk)
        assert text, chunk
        ticks.append((float(text.group(1)), text.group(2).strip()))
    return ticks


def wall_clock(start: str, seconds: np.ndarray, events: list[dict] = (), zone: Any = BERLIN) -> str:
    return clinical.wall_clock_figure(samples_at(seconds), NAMES, 1.0, pd.Timestamp(start), zone, events, "w")


@pytest.mark.parametrize(
    "start, hours",
    [
        ("2026-10-25T01:00:00+02:00", 4.0),  # 01:00 CEST to 05:00 CET: the clocks go back at 03:00
        ("2026-03-29T01:00:00+01:00", 3.0),  # 01:00 CET to 05:00 CEST: they go forward at 02:00
        ("2026-03-29T01:59:58+01:00", 20 / 3600),  # the sample clip: 20 s across the change
    ],
)
def test_the_wall_clock_reads_across_a_daylight_saving_change(start: str, hours: float) -> None:
    svg = wall_clock(start, np.arange(0.0, hours * 3600 + 1e-9, max(1.0, hours * 3600 / 2000)))
    ticks = svg_ticks(svg)
    labels = [text for _, text in ticks]
    assert len(set(labels)) >= 3 and len(set(labels)) == len(labels), labels
    assert [x for x, _ in ticks] == sorted(x for x, _ in ticks)
    assert "Europe/Berlin" in svg


def test_ticks_name_the_zone_where_the_clocks_go_back(caught: list[Any]) -> None:
    """Round hours in UTC, labelled on the local clock: 02:00 comes twice, told apart by CEST and CET."""
    wall_clock("2026-10-25T01:00:00+02:00", np.arange(0.0, 4 * 3600 + 1, 10.0))
    labels = [t.get_text() for t in caught[-1].axes[0].get_xticklabels()]
    assert labels == ["01:00", "02:00 CEST", "02:00 CET", "03:00", "04:00"]
    new_york = wall_clock(
        "2026-11-01T00:00:00-04:00", np.arange(0.0, 3 * 3600 + 1, 10.0), zone=ZoneInfo("America/New_York")
    )
    assert {"01:30 EDT", "01:00 EST"} <= {text for _, text in svg_ticks(new_york)}


def test_event_labels_are_horizontal_readable_and_apart(caught: list[Any]) -> None:
    """Three events within half a minute in a ten-minute recording: no label over another."""
    start = pd.Timestamp("2026-03-29T03:00:00+02:00")
    events = [
        {"event": name, "time": start + pd.Timedelta(seconds=at), "end": None, "in_recording": True}
        for name, at in (("sedation", 300), ("nurse visit", 310), ("pain score 7", 325))
    ]
    events.append({"event": "elsewhere", "time": start, "end": None, "in_recording": False})
    wall_clock(str(start), np.arange(0.0, 600.0, 1.0), events)
    figure = caught[-1]
    renderer = FigureCanvasAgg(figure).get_renderer()
    labels = [t for t in figure.axes[0].texts if t.get_text().strip() in ("sedation", "nurse visit", "pain score 7")]
    assert len(labels) == 3 and "elsewhere" not in [t.get_text() for t in figure.axes[0].texts]
    for label in labels:
        assert label.get_fontsize() >= 8 and label.get_rotation() == 0
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert not [(a, b) for a, b in combinations(boxes, 2) if a.overlaps(b)]
    # Above the plot, inside the figure.
    plot, page = figure.axes[0].get_window_extent(renderer), figure.bbox
    assert all(box.y0 >= plot.y1 and box.y1 <= page.y1 for box in boxes)


def _stretch_shares(line: Any, xlim: tuple[float, float]) -> list[float]:
    """The share of the plot's width taken by each run of a curve, split at its widest hole."""
    x = np.asarray(line.get_xdata(), float)
    x = x[np.isfinite(x)]
    cut = int(np.argmax(np.diff(x))) + 1
    return [(part.max() - part.min()) / (xlim[1] - xlim[0]) for part in (x[:cut], x[cut:])]


PAUSED = np.concatenate([np.arange(0.0, 10.0, 0.2), np.arange(1750.0, 1760.0, 0.2)])  # 10 s, 29 min off, 10 s


@pytest.mark.parametrize("draw", ["expressions", "wall clock"])
def test_a_long_pause_is_squeezed_and_marked(draw: str, caught: list[Any]) -> None:
    samples = samples_at(PAUSED)
    if draw == "expressions":
        svg = plots.expression_figure(samples, NAMES, 5.0, [], "e")
    else:
        svg = clinical.wall_clock_figure(samples, NAMES, 5.0, pd.Timestamp("2026-03-29T01:00:00Z"), BERLIN, [], "w")
    ax = caught[-1].axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "neutral"]
    shares = _stretch_shares(line, ax.get_xlim())
    assert min(shares) > 0.25, shares
    assert any("29 min" in t.get_text() for t in ax.texts) and "29 min" in svg
    labels = [text for _, text in svg_ticks(svg)]
    assert len(labels) >= 4 and len(set(labels)) == len(labels), labels
