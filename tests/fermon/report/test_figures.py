"""The figures of a session page, parametrised over ``fermon.report.plots.SESSION_FIGURES``: a new
figure is tested by adding its entry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fermon.analysis import QualityThresholds, summarize_session, target_samples, thresholds_dict
from fermon.report import pages, plots

NAMES = ["neutral", "happiness"]
GAPS = [{"video": "v.mp4", "first_frame": 8, "last_frame": 9, "start_s": 0.8, "end_s": 1.0, "reason": "x"}]
METADATA = {"videos": [{"video": "v.mp4", "duration_s": 1.0}], "decode_gaps": GAPS, "sampling_fps": 5.0}


@pytest.fixture(scope="module")
def session() -> plots.SessionData:
    """Four samples: two target faces, one face-less sample, one more face; a decode gap after them."""
    frame = pd.DataFrame(
        {
            "session_id": pd.array(["s"] * 5, "string"),
            "video": pd.array(["v.mp4"] * 5, "string"),
            "frame_index": [0, 0, 2, 4, 6],
            "timestamp_s": [0.0, 0.0, 0.2, 0.4, 0.6],
            "face_detected": [True, True, True, False, True],
            "is_target": [True, True, True, False, True],
            "det_score": np.array([0.9, 0.5, 0.8, np.nan, 0.7], np.float32),
            "label": pd.Categorical(["happiness", "neutral", "happiness", None, "neutral"], categories=NAMES),
            "confidence": np.array([0.8, 0.9, 0.6, np.nan, 0.7], np.float32),
            "prob_neutral": np.array([0.2, 0.9, 0.4, np.nan, 0.7], np.float32),
            "prob_happiness": np.array([0.8, 0.1, 0.6, np.nan, 0.3], np.float32),
        }
    )
    samples = target_samples(frame)
    row = summarize_session(samples, NAMES, METADATA, QualityThresholds())
    return plots.SessionData(samples, row, NAMES, 5.0, GAPS)


@pytest.mark.parametrize("entry", plots.SESSION_FIGURES, ids=lambda entry: entry.key)
def test_every_figure_draws_an_inline_svg_with_its_own_ids(entry: plots.SessionFigure, session) -> None:
    svg = entry.draw(session, f"s-{entry.salt}")
    assert svg.startswith('<svg role="img" ') and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<metadata>" not in svg
    assert entry.heading and entry.caption


def test_figure_keys_and_salts_are_unique() -> None:
    for field in ("key", "salt", "heading"):
        values = [getattr(entry, field) for entry in plots.SESSION_FIGURES]
        assert len(set(values)) == len(values), field


def test_the_page_places_every_figure_in_list_order(session: plots.SessionData) -> None:
    figures = plots.session_figures(session.samples, session.row, NAMES, session.fps, GAPS)
    assert list(figures) == [entry.key for entry in plots.SESSION_FIGURES]
    html = pages.session_page(session.row, METADATA, figures, GAPS, thresholds_dict(QualityThresholds()))
    assert html.count("<svg") == len(plots.SESSION_FIGURES)
    positions = [html.index(f"<h2>{entry.heading}</h2>") for entry in plots.SESSION_FIGURES]
    assert positions == sorted(positions)
    for entry in plots.SESSION_FIGURES:
        section = html[html.index(f"<h2>{entry.heading}</h2>") :]
        assert section.index(figures[entry.key]) < section.index(f"<figcaption>{entry.caption}</figcaption>")
    # The share table follows its figure.
    assert html.index("share of covered time") > html.index(figures["shares"])


@pytest.mark.parametrize(
    "case, faces, identity, why",
    [
        ("blank", False, {}, "no face was detected in any sample"),
        ("nobody matched", True, {"reference": {"matched": False, "distance": 0.71}}, "reference photo"),
    ],
)
def test_a_session_without_a_target_face_says_so(
    session: plots.SessionData, case: str, faces: bool, identity: dict, why: str
) -> None:
    """No 0% bars, no empty plots: a sentence saying why there is nothing to show."""
    frame = pd.DataFrame(
        {
            "session_id": pd.array(["s"] * 3, "string"),
            "video": pd.array(["v.mp4"] * 3, "string"),
            "frame_index": [0, 2, 4],
            "timestamp_s": [0.0, 0.2, 0.4],
            "face_detected": [faces] * 3,
            "is_target": [False] * 3,
            "det_score": np.array([0.9 if faces else np.nan] * 3, np.float32),
            "label": pd.Categorical(["neutral" if faces else None] * 3, categories=NAMES),
            "confidence": np.array([0.8 if faces else np.nan] * 3, np.float32),
            "prob_neutral": np.array([0.8 if faces else np.nan] * 3, np.float32),
            "prob_happiness": np.array([0.2 if faces else np.nan] * 3, np.float32),
        }
    )
    samples = target_samples(frame)
    metadata = {**METADATA, "identity": identity, "class_names": NAMES}
    row = summarize_session(samples, NAMES, metadata, QualityThresholds())
    figures = plots.session_figures(samples, row, NAMES, 5.0, [])
    html = pages.session_page(row, metadata, figures, [], thresholds_dict(QualityThresholds()))
    assert "No target face was found in this session" in html and why in html
    assert html.count("<svg") == (1 if faces else 0)  # only the coverage of any face, when there is one
    assert "share of time with the target face" not in html and "share of covered time" not in html
    assert "Expressions over time" not in html and "detection score and confidence" not in html
    # A session with a target face has no such sentence.
    full = plots.session_figures(session.samples, session.row, NAMES, session.fps, GAPS)
    assert "No target face" not in pages.session_page(
        session.row, METADATA, full, GAPS, thresholds_dict(QualityThresholds())
    )
