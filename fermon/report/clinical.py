"""The reports' clinical time: settings kept in DIR, wall-clock figures, events and patients.

``fermon process`` and ``fermon report`` store the events and the display settings (``--events``,
``--event-window``, ``--night``, ``--timezone``, ``--episode-min``, ``--episode-gap``) in
``DIR/clinical.json``, so that ``fermon report DIR`` alone rebuilds the same pages, ``events.parquet``,
``episodes.parquet`` and ``patients.parquet``; an option given again replaces the stored value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timezone, tzinfo
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fermon.errors import OutputError, UsageError
from fermon.report.days import DEFAULT_BASELINE_DAYS, DEFAULT_MIN_COVERAGE, MIN_BASELINE
from fermon.report.episodes import DEFAULT_GAP_S, DEFAULT_MIN_S, check_settings
from fermon.report.events import (
    DEFAULT_NIGHT,
    DEFAULT_WINDOW_MIN,
    Event,
    display_zone,
    events_of,
    local_text,
    parse_night,
    resolve_zone,
    session_start,
    window_minutes_to_seconds,
)

NO_ZONE = "the manifest's UTC offset: no --timezone, and this machine's zone is UTC or not set"
SETTINGS_NAME = "clinical.json"
EVENTS_NAME = "events.parquet"
PATIENTS_NAME = "patients.parquet"


@dataclass(frozen=True)
class ClinicalSettings:
    """What the reports need beyond the timelines; all of it JSON in ``DIR/clinical.json``."""

    events: tuple[Event, ...] = ()
    events_file: str | None = None  # its name only, for the pages
    event_window_min: float = DEFAULT_WINDOW_MIN
    night: str = DEFAULT_NIGHT
    timezone: str | None = None  # IANA name; None: each session's manifest offset, else UTC (see settle_zone)
    baseline_days: int = DEFAULT_BASELINE_DAYS  # patient_days.parquet: fermon.report.days
    min_coverage: float = DEFAULT_MIN_COVERAGE
    episode_min_s: float = DEFAULT_MIN_S  # --episode-min (fermon.report.episodes)
    episode_gap_s: float = DEFAULT_GAP_S  # --episode-gap

    def validate(self) -> None:
        window_minutes_to_seconds(self.event_window_min)
        parse_night(self.night)
        resolve_zone(self.timezone)
        check_baseline(self.baseline_days, self.min_coverage)
        check_settings(self.episode_min_s, self.episode_gap_s)

    @property
    def page_json(self) -> dict[str, Any]:
        """What session pages depend on: not the baseline rule, which only the patient days use."""
        return {k: v for k, v in self.to_json().items() if k not in ("baseline_days", "min_coverage")}

    @property
    def window_s(self) -> float:
        return window_minutes_to_seconds(self.event_window_min)

    @property
    def zone(self) -> tzinfo | None:
        return resolve_zone(self.timezone)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [e.to_record() for e in self.events],
            "events_file": self.events_file,
            "event_window_min": self.event_window_min,
            "night": self.night,
            "timezone": self.timezone,
            "baseline_days": self.baseline_days,
            "min_coverage": self.min_coverage,
            "episode_min_s": self.episode_min_s,
            "episode_gap_s": self.episode_gap_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClinicalSettings:
        return cls(
            tuple(Event.from_record(r) for r in data.get("events") or []),
            data.get("events_file"),
            float(data.get("event_window_min", DEFAULT_WINDOW_MIN)),
            str(data.get("night", DEFAULT_NIGHT)),
            data.get("timezone"),
            int(data.get("baseline_days", DEFAULT_BASELINE_DAYS)),
            float(data.get("min_coverage", DEFAULT_MIN_COVERAGE)),
            float(data.get("episode_min_s", DEFAULT_MIN_S)),
            float(data.get("episode_gap_s", DEFAULT_GAP_S)),
        )


@dataclass(frozen=True)
class ClinicalOptions:
    """Options given on this command line; None keeps what ``DIR/clinical.json`` says."""

    events: tuple[Event, ...] | None = None
    events_file: str | None = None
    event_window_min: float | None = None
    night: str | None = None
    timezone: str | None = None
    baseline_days: int | None = None
    min_coverage: float | None = None
    episode_min_s: float | None = None
    episode_gap_s: float | None = None
    changes: dict[str, Any] = field(default_factory=dict, compare=False)

    def apply(self, stored: ClinicalSettings) -> ClinicalSettings:
        given = {
            "events": self.events,
            "events_file": self.events_file if self.events is not None else None,
            "event_window_min": self.event_window_min,
            "night": self.night,
            "timezone": self.timezone,
            "baseline_days": self.baseline_days,
            "min_coverage": self.min_coverage,
            "episode_min_s": self.episode_min_s,
            "episode_gap_s": self.episode_gap_s,
        }
        settings = replace(stored, **{k: v for k, v in given.items() if v is not None})
        settings.validate()
        return settings


def settle_zone(settings: ClinicalSettings, machine: str | None) -> ClinicalSettings:
    """With no zone given or kept: ``machine`` (fermon.report.zones.machine_zone), kept from now on in
    clinical.json so that later builds, on any machine, show the same times and day/night rows."""
    return settings if settings.timezone or not machine else replace(settings, timezone=machine)


def load_settings(out_dir: Path) -> ClinicalSettings:
    """The stored settings, or the defaults (no events) when there are none."""
    path = out_dir / SETTINGS_NAME
    if not path.is_file():
        return ClinicalSettings()
    try:
        return ClinicalSettings.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OutputError(f"{SETTINGS_NAME}: cannot read the stored clinical settings ({error})") from error


def check_baseline(days: int | None, min_coverage: float | None) -> None:
    """``--baseline-days`` and ``--min-coverage``, as given. Raises UsageError."""
    if days is not None and days < MIN_BASELINE:
        raise UsageError(f"--baseline-days must be at least {MIN_BASELINE}: a baseline needs {MIN_BASELINE} days")
    if min_coverage is not None and not 0.0 <= min_coverage <= 1.0:
        raise UsageError("--min-coverage must be between 0 and 1 (a share of the day's or night's hours)")


# --------------------------------------------------------------------------- a session page


def zone_name(zone: tzinfo) -> str:
    return str(zone) if zone is not timezone.utc else "UTC"


def wall_clock_figure(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    fps: float,
    start: pd.Timestamp,
    zone: tzinfo,
    events: Sequence[Mapping[str, Any]],
    salt: str,
) -> str:
    """The target face's expressions on the wall clock, as inline SVG: see :func:`wall_clock_plot`."""
    from fermon.report.plots import to_svg

    return to_svg(wall_clock_plot(samples, class_names, fps, start, zone, events), salt)


def _seconds_from(start: pd.Timestamp, moment: Any) -> float | None:
    if moment is None or pd.isna(moment):
        return None
    return (pd.Timestamp(moment) - start).total_seconds()


def wall_clock_plot(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    fps: float,
    start: pd.Timestamp,
    zone: tzinfo,
    events: Sequence[Mapping[str, Any]],
) -> Any:
    """The target face's expressions on the wall clock (ticks round in UTC, labelled in ``zone``; long
    pauses squeezed and marked), with the events in the recording's span as dashed lines (shaded when
    they have an end) labelled above the plot."""
    from fermon.report.axes import place_labels, set_ticks, time_axis, wall_ticks
    from fermon.report.plots import _binned, _figure, class_colours, smoothed

    seconds = samples["timestamp_s"].to_numpy(float)
    marks = [
        (_seconds_from(start, e["time"]), _seconds_from(start, e.get("end")), str(e["event"]))
        for e in events
        if e.get("in_recording")
    ]
    axis = time_axis([*seconds, *(t for at, until, _ in marks for t in (at, until) if t is not None)])
    figure = _figure(3.2)
    ax = figure.add_subplot()
    colours = class_colours(class_names)
    x = axis.x(seconds)
    for name in class_names:
        xs, ys = axis.break_lines(*_binned(x, smoothed(samples, f"prob_{name}", fps), 2000))
        ax.plot(xs, ys, color=colours[name], lw=1.4, label=name)
    for at, until, _ in marks:
        ax.axvline(float(axis.x(at)), color="#222222", ls="--", lw=1)
        if until is not None:
            ax.axvspan(float(axis.x(at)), float(axis.x(until)), color="#888888", alpha=0.15, lw=0)
    set_ticks(ax, axis, *wall_ticks(axis, start, zone))
    ax.set(ylim=(-0.02, 1.02), xlabel=f"wall clock ({zone_name(zone)})", ylabel="probability")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    place_labels(ax, [float(axis.x(at)) for at, _, _ in marks], [_short(name) for _, _, name in marks])
    return figure


def _short(text: str, most: int = 32) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _most_probable(row: Mapping[str, Any], phase: str, class_names: Sequence[str]) -> str:
    values = [row.get(f"{phase}_mean_prob_{c}", np.nan) for c in class_names]
    finite = [v if v is not None and np.isfinite(v) else -1.0 for v in values]
    return class_names[int(np.argmax(finite))] if class_names and max(finite) >= 0 else "–"


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if value is not None and np.isfinite(value) else "–"


def events_table(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], zone: tzinfo, window_s: float) -> str:
    """Every event of the session and its patient, with the peri-event coverage and expression."""
    from fermon.report.pages import _table

    if not rows:
        return "<p>No clinical events for this session or its patient.</p>"
    body = [
        [
            r["event"],
            local_text(r["time"], zone),
            local_text(r["end"], zone) if r.get("end") is not None and not pd.isna(r["end"]) else "",
            "yes" if r["in_recording"] else "no",
            _percent(r.get("before_coverage")),
            _percent(r.get("after_coverage")),
            _most_probable(r, "before", class_names),
            _most_probable(r, "after", class_names),
        ]
        for r in rows
    ]
    minutes = f"{window_s / 60:g}"
    headers = ["event", "time", "end", "near this recording", f"coverage {minutes} min before",
               f"coverage {minutes} min after", "most probable before", "most probable after"]  # fmt: skip
    return _table(headers, body, numeric=(4, 5))


def clinical_section(
    samples: pd.DataFrame,
    row: Mapping[str, Any],
    metadata: Mapping[str, Any],
    event_rows: Sequence[Mapping[str, Any]],
    settings: ClinicalSettings,
) -> str:
    """The page's "Clinical time" section; empty for a session with no patient, clock or events."""
    start = session_start(metadata)
    patient = metadata.get("patient_id")
    if start is None and not patient and not event_rows:
        return ""
    zone = display_zone(metadata, settings.zone)
    class_names = list(metadata.get("class_names") or [])
    clock = metadata.get("clock") or {}
    end = pd.Timestamp(row["end_time"]) if row.get("end_time") else None  # the last sample, gaps included
    facts = [
        ("patient", patient or "–"),
        ("recording start", local_text(start, zone) if start is not None else "unknown"),
        ("recording end", local_text(end, zone) if end is not None else "unknown"),
        ("start taken from", {"manifest": "the study manifest", "container": "the video file's header"}.get(
            clock.get("source"), "nowhere: no manifest start and no creation time in the file")),
        ("times shown in", zone_name(zone) + ("" if settings.zone else f" ({NO_ZONE})")),
    ]  # fmt: skip
    facts_html = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    figure = ""
    if start is not None and len(samples) and not samples["covered"].any():
        figure = "<p>No target face in this session: nothing to draw on the wall clock.</p>"
    elif start is not None and len(samples):
        svg = wall_clock_figure(
            samples, class_names, float(metadata.get("sampling_fps") or 0.0), start, zone, event_rows,
            f"{row['session_id']}-w",
        )  # fmt: skip
        figure = (
            f"<figure>{svg}<figcaption>Probability of each expression on the wall clock (smoothed over about "
            "2 s); dashed lines mark clinical events, shaded spans their duration; a hatched band stands for a long "
            "pause between recordings, its length written on it.</figcaption></figure>"
        )
    window = settings.window_s
    return f"""
<h2>Clinical time</h2>
<div class="wide"><table>{facts_html}</table></div>
{figure}
<h3>Clinical events</h3>
<p class="muted">Events of this session and of its patient{_events_source(settings)}; coverage and expressions
are the target face's within {window / 60:g} minutes before the event and after it (or its end).</p>
{events_table(event_rows, class_names, zone, window)}
"""


def _events_source(settings: ClinicalSettings) -> str:
    return f", from {escape(settings.events_file)}" if settings.events_file else ""


def stored_event_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Event rows with their times as ISO text, for the report manifest (JSON)."""
    return [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else (None if v is pd.NaT else v)) for k, v in r.items()}
        for r in rows
    ]


def session_events(metadata: Mapping[str, Any], settings: ClinicalSettings) -> list[Event]:
    return events_of(str(metadata.get("session_id")), metadata.get("patient_id"), settings.events)


# --------------------------------------------------------------------------- the cohort page


def patients_section(rows: Sequence[Mapping[str, Any]], patients: pd.DataFrame, settings: ClinicalSettings) -> str:
    """The index's sessions grouped by patient, with each patient's day and night figures."""
    from fermon.report.pages import duration, percent, session_href

    by_patient: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("patient_id"):
            by_patient.setdefault(str(row["patient_id"]), []).append(row)
    if not by_patient:
        return ""
    zone = settings.zone or timezone.utc
    parts = []
    for patient, sessions in sorted(by_patient.items()):
        items = "".join(
            f'<li><a href="{escape(session_href(str(s["session_id"])))}">{escape(str(s["session_id"]))}</a>'
            f" – {escape(local_text(pd.Timestamp(s['start_time']) if s.get('start_time') else None, zone))},"
            f" {duration(s['duration_s'])}, coverage {percent(s['coverage'])},"
            f" mostly {escape(str(s.get('dominant_expression') or '–'))}</li>"
            for s in sorted(sessions, key=lambda s: (s.get("start_time") or "", str(s["session_id"])))
        )
        periods = patients[patients["patient_id"] == patient] if len(patients) else patients
        facts = "; ".join(
            f"{p['period']}: coverage {percent(float(p['coverage']))}, mostly {p['dominant_expression'] or '–'}"
            for _, p in periods.iterrows()
            if p["sampled_frames"] > 0
        )
        parts.append(
            f'<h3>Patient {escape(patient)}</h3><p class="muted">{escape(facts or "no wall-clock time")}</p>'
            f"<ul>{items}</ul>"
        )
    night = escape(settings.night)
    return f"""
<h2>Patients</h2>
<p class="muted">Sessions grouped by the study manifest's patient; day and night ({night}, in
{escape(zone_name(settings.zone) if settings.zone else "each session's manifest offset")}) over all of a
patient's sessions, as in <code>patients.parquet</code>. Start times in {escape(zone_name(zone))}.</p>
{"".join(parts)}
"""
