"""One page per patient: each class's share night by night and day by day as small multiples with the
baseline band, episodes and clinical events on the same time axis, and the flags in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from fermon.report.days import MIN_BASELINE, BaselineRule
from fermon.report.pages import _table, duration, page, percent

PERIOD_STYLE = {"night": ("#1f3b73", "nights"), "day": ("#c98a00", "days")}


def _local(moment: Any, zone: tzinfo) -> datetime:
    return pd.Timestamp(moment).tz_convert(zone).tz_localize(None).to_pydatetime()


def _x(day: Any, period: str) -> datetime:
    """Where a clinical date's value sits on the axis: its night at the midnight inside it, its day at noon."""
    start = datetime.combine(day, datetime.min.time())
    return start + (timedelta(days=1) if period == "night" else timedelta(hours=12))


def patient_plot(
    days: pd.DataFrame,
    episodes: pd.DataFrame | None,
    events: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    zone: tzinfo,
) -> Any:
    """Small multiples, one row per class: the share of covered time of each night and day, the usual
    band (baseline median to the highest share still usual), flagged values ringed in red; a last row
    with each episode at its start; clinical events as dashed lines through every row."""
    from matplotlib import dates as mdates

    from fermon.report.plots import _figure, class_colours

    colours = class_colours(class_names)
    figure = _figure(0.9 * (len(class_names) + 1) + 0.6)
    axes = figure.subplots(len(class_names) + 1, 1, sharex=True)
    for ax, name in zip(axes, class_names):
        for period, (colour, label) in PERIOD_STYLE.items():
            rows = days[days["period"] == period]
            if rows.empty:
                continue
            x = [_x(d, period) for d in rows["date"]]
            median, high = rows[f"baseline_{name}"].to_numpy(float), rows[f"usual_max_{name}"].to_numpy(float)
            low = np.clip(2 * median - high, 0, 1)
            ax.fill_between(x, low, np.clip(high, 0, 1), color=colour, alpha=0.15, lw=0, step="mid")
            ax.plot(x, rows[f"share_{name}"], "o-", color=colour, ms=3, lw=1, label=label)
            hit = rows["flag_classes"].fillna("").str.split(";").apply(lambda c, n=name: n in c).to_numpy(bool)
            if hit.any():
                ax.plot(np.array(x, dtype=object)[hit], rows[f"share_{name}"][hit], "o", ms=9, mfc="none",
                        mec="#b3261e", mew=2)  # fmt: skip
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8, color=colours[name])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _episode_row(axes[-1], episodes, class_names, colours, zone)
    for event in events:
        for ax in axes:
            ax.axvline(_local(event["time"], zone), color="#222222", ls="--", lw=0.8)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    axes[-1].set_xlabel(f"date ({zone}); a night is drawn at the midnight after its evening, a day at noon", fontsize=8)
    return figure


def _episode_row(ax: Any, episodes: pd.DataFrame | None, class_names: Sequence[str], colours: dict, zone: tzinfo):
    if episodes is not None and len(episodes):
        for episode in episodes.itertuples(index=False):
            if episode.expression in class_names and not pd.isna(episode.start):
                start = _local(episode.start, zone)
                width = timedelta(seconds=float(episode.duration_s))
                y = class_names.index(episode.expression)
                ax.plot([start, start + width], [y, y], color=colours[episode.expression], lw=4)
    ax.set_ylim(-0.5, len(class_names) - 0.5)
    ax.set_yticks([])
    ax.set_ylabel("episodes", rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(labelsize=7)


def flag_lines(days: pd.DataFrame, first_seen: Mapping[str, str], zone_name: str) -> list[str]:
    """Each flagged day or night in words, with when the flag was first seen."""
    lines = []
    for row in days[days["flagged"]].itertuples(index=False):
        keys = [flag_key(row.patient_id, row.date, row.period, c) for c in str(row.flag_classes).split(";")]
        seen = min((first_seen[k] for k in keys if k in first_seen), default="")
        when = f" (first seen {seen[:16].replace('T', ' ')} UTC)" if seen else ""
        lines.append(f"{row.period} of {row.date}: {row.flag_reason}{when}")
    return lines


def flag_key(patient: Any, day: Any, period: Any, name: str) -> str:
    return f"{patient}|{day}|{period}|{name}"


def patient_page(
    patient: str,
    days: pd.DataFrame,
    episodes: pd.DataFrame | None,
    events: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    zone: tzinfo,
    rule: BaselineRule,
    first_seen: Mapping[str, str],
) -> str:
    """The patient's page (``reports/patients/<patient>.html``): flags in words, the small multiples,
    and a table of every clinical date and period with its verdict."""
    from fermon.report.plots import to_svg

    flags = flag_lines(days, first_seen, str(zone))
    flags_html = (
        "<ul>" + "".join(f'<li class="warning">{escape(line)}</li>' for line in flags) + "</ul>"
        if flags
        else "<p>No day or night flagged.</p>"
    )
    svg = to_svg(patient_plot(days, episodes, events, class_names, zone), f"patient-{patient}")
    body = [
        [str(r.date), r.period, duration(r.recorded_s), percent(r.coverage), int(r.baseline_n),
         " ".join(f"{c} {int(getattr(r, f'episodes_{c}'))}" for c in class_names if getattr(r, f"episodes_{c}")),
         r.flag_reason]
        for r in days.itertuples(index=False)
    ]  # fmt: skip
    table = _table(["date", "period", "recorded", "coverage", "baseline days", "episodes", "verdict"], body, (2, 3))
    content = f"""
<nav><a href="../index.html">&larr; all sessions and patients</a></nav>
<h1>Patient {escape(patient)}</h1>
<p class="muted">Each day and night compared with the same patient's previous {rule.days} days of the same period
(at least {MIN_BASELINE} with coverage of {percent(rule.min_coverage)} or more). A flag says that an expression other
than neutral took a clearly larger share of the covered time than usual for this patient (robust z-score of
{rule.z:g} or more and at least {percent(rule.min_change)} more); it is a prompt to look, not a diagnosis.
Nights belong to the date they began; times in {escape(str(zone))}.</p>
<h2>Flags</h2>
{flags_html}
<h2>Expressions night by night and day by day</h2>
<figure>{svg}<figcaption>Share of covered time per expression, each night (blue, at its midnight) and day (amber, at
noon); the shaded band is the usual range (baseline median, up to the highest share still usual); red rings mark
flags. The last row shows each expression episode at its start; dashed lines mark clinical events.</figcaption></figure>
<h2>Days and nights</h2>
{table}
"""
    return page(f"fermon – patient {patient}", content)
