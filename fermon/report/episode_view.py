"""The session page's "Expression episodes" section: a table of the session's episodes
(fermon.report.episodes), on the wall clock in the display zone, or in seconds from the session's
start where its clock is unknown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import tzinfo
from html import escape
from typing import Any

import pandas as pd


def episodes_section(
    episodes: Sequence[Mapping[str, Any]], zone: tzinfo, min_s: float, gap_s: float, has_face: bool
) -> str:
    """The section's HTML; ``has_face``: the session has any sample with the target face."""
    from fermon.report.events import local_text
    from fermon.report.pages import _table, duration, number, percent

    rule = (
        f"Stretches of at least {min_s:g} s in which the target face's expression, smoothed over time by a sticky "
        f"hidden Markov model, stays one non-neutral class; the face may be missing for up to {gap_s:g} s inside "
        "one. Mean and peak are the expression's probability over the episode's samples with the face; coverage "
        "is the share of its samples with the face. All episodes are in <code>episodes.parquet</code>."
    )
    if not episodes:
        why = "no episode" if has_face else "no target face in this session, so no episode"
        return f'<h2>Expression episodes</h2>\n<p class="muted">{rule}</p>\n<p>{why.capitalize()}.</p>\n'
    clock = all(e.get("start") for e in episodes)
    where = f"wall clock, {escape(str(zone))}" if clock else "seconds from the session's start: its clock is unknown"
    rows = [
        [
            e["expression"],
            local_text(pd.Timestamp(e["start"]), zone) if clock else number(e["start_s"], 1),
            local_text(pd.Timestamp(e["end"]), zone) if clock else number(e["end_s"], 1),
            duration(e["duration_s"]),
            number(e["mean_prob"], 2),
            number(e["peak_prob"], 2),
            percent(e["coverage"]),
        ]
        for e in episodes
    ]
    headers = ["expression", "start", "end", "duration", "mean probability", "peak probability", "coverage"]
    return (
        f'<h2>Expression episodes</h2>\n<p class="muted">{rule} Times: {where}.</p>\n'
        f"{_table(headers, rows, numeric=(3, 4, 5, 6))}\n"
    )
