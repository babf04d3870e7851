"""Clinical events beside the timelines: peri-event windows and day/night summaries (pure pandas).

An events file is a CSV with ``patient_id`` or ``session_id`` (or both), ``time`` (ISO 8601 with a UTC
offset or ``Z``), ``event`` and an optional ``end``. An event of a session belongs to that session; an
event of a patient belongs to each of the patient's sessions. For every event and session,
:func:`session_event_rows` gives the patient's (target face's) coverage and mean probability of each
class in a window before the event, during it (when it has an end) and after it.
:func:`session_periods` splits a session's samples into day and night hours (in the study's zone)
and :func:`patients_frame` adds them up per patient.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timezone, tzinfo
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fermon.errors import DataError, UsageError
from fermon.inputs.manifest import parse_start

DEFAULT_WINDOW_MIN = 10.0
DEFAULT_NIGHT = "22:00-06:00"
PHASES = ("before", "during", "after")
PERIODS = ("day", "night")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Event:
    """One row of an events file; ``line`` is its line in the file and names it in messages."""

    line: int
    patient_id: str | None
    session_id: str | None
    time: datetime  # aware, with the offset it was given in
    event: str
    end: datetime | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "patient_id": self.patient_id,
            "session_id": self.session_id,
            "time": self.time.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "event": self.event,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        end = record.get("end")
        return cls(
            int(record["line"]),
            record.get("patient_id"),
            record.get("session_id"),
            datetime.fromisoformat(record["time"]),
            str(record["event"]),
            datetime.fromisoformat(end) if end else None,
        )


def read_events(path: Path) -> list[Event]:
    """The events of a CSV file. Raises UsageError when it cannot be read, DataError naming the file
    and line for bad content (no time, no offset, an end before its time, neither patient nor session)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read the events file ({getattr(error, 'strerror', None) or error})") from None
    reader = csv.DictReader(text.splitlines())
    columns = {c.strip() for c in reader.fieldnames or []}
    if not {"time", "event"} <= columns or not columns & {"patient_id", "session_id"}:
        raise DataError(f"{path.name}:1: needs the columns time, event and patient_id or session_id")
    events = []
    for record in reader:
        values = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k is not None}
        events.append(_event(values, reader.line_num, path.name))
    return events


def _event(values: dict[str, str], line: int, name: str) -> Event:
    where = f"{name}:{line}"
    if not values.get("patient_id") and not values.get("session_id"):
        raise DataError(f"{where}: needs a patient_id or a session_id")
    if not values.get("event"):
        raise DataError(f"{where}: empty event")
    if not values.get("time"):
        raise DataError(f"{where}: empty time")
    moment = parse_start(values["time"], where)
    end = parse_start(values.get("end", ""), where)
    if end is not None and end < moment:
        raise DataError(f"{where}: end {values['end']!r} is before time {values['time']!r}")
    return Event(line, values.get("patient_id") or None, values.get("session_id") or None, moment, values["event"], end)


def parse_night(text: str) -> tuple[time, time]:
    """``22:00-06:00`` -> (22:00, 06:00); the night may wrap past midnight. Raises UsageError."""
    try:
        first, second = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise UsageError(f"--night must look like 22:00-06:00, not {text!r}") from None
    if first == second:
        raise UsageError("--night must have different start and end times")
    return first, second


def resolve_zone(name: str | None) -> tzinfo | None:
    """An IANA zone (``Europe/Berlin``); None stays None. Raises UsageError for an unknown name."""
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone: unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None


def display_zone(metadata: Mapping[str, Any], zone: tzinfo | None) -> tzinfo:
    """Where wall-clock times are shown: ``--timezone``, else the manifest's UTC offset, else UTC."""
    if zone is not None:
        return zone
    offset = ((metadata.get("clock") or {}).get("utc_offset")) or "+00:00"
    return datetime.fromisoformat(f"2000-01-01T00:00:00{offset}").tzinfo or timezone.utc


# --------------------------------------------------------------------------- one session


def session_start(metadata: Mapping[str, Any]) -> pd.Timestamp | None:
    start = (metadata.get("clock") or {}).get("start")
    return pd.Timestamp(start) if start else None


def events_of(session_id: str, patient_id: str | None, events: Sequence[Event]) -> list[Event]:
    """The session's own events and its patient's."""
    return [
        e
        for e in events
        if e.session_id == session_id or (e.session_id is None and patient_id and e.patient_id == patient_id)
    ]


def _window_stats(samples: pd.DataFrame, seconds: np.ndarray, lo: float, hi: float, class_names: Sequence[str]):
    """Samples, coverage and mean probability per class of the target face in [lo, hi) seconds."""
    inside = (seconds >= lo) & (seconds < hi)
    window = samples[inside]
    covered = window[window["covered"]]
    stats: dict[str, Any] = {"samples": len(window)}
    stats["coverage"] = float(len(covered) / len(window)) if len(window) else np.nan
    for name in class_names:
        stats[f"mean_prob_{name}"] = float(covered[f"prob_{name}"].mean()) if len(covered) else np.nan
    return stats


def session_event_rows(
    samples: pd.DataFrame,
    metadata: Mapping[str, Any],
    duration_s: float,
    events: Sequence[Event],
    window_s: float,
    class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per event of this session (see :func:`events_of`) with its peri-event figures.

    ``samples`` is the session's per-sample view (:func:`fermon.analysis.target_samples`). Without a
    known start the event cannot be placed: its figures are NaN and ``in_recording`` is False."""
    session_id = str(metadata.get("session_id") or samples["session_id"].iloc[0])
    patient_id = metadata.get("patient_id")
    start = session_start(metadata)
    seconds = samples["timestamp_s"].to_numpy(float)
    rows = []
    for event in events_of(session_id, patient_id, events):
        at = pd.Timestamp(event.time).tz_convert("UTC")
        until = pd.Timestamp(event.end).tz_convert("UTC") if event.end else at
        row: dict[str, Any] = {
            "event_line": event.line,
            "event": event.event,
            "patient_id": patient_id or event.patient_id,
            "session_id": session_id,
            "time": at,
            "end": until if event.end else pd.NaT,
            "window_s": float(window_s),
        }
        offset = (at - start).total_seconds() if start is not None else np.nan
        span = (until - at).total_seconds()
        row["offset_s"] = offset
        row["in_recording"] = bool(start is not None and -window_s <= offset <= duration_s + window_s)
        bounds = {
            "before": (offset - window_s, offset),
            "during": (offset, offset + span) if span > 0 else (np.nan, np.nan),
            "after": (offset + span, offset + span + window_s),
        }
        for phase, (lo, hi) in bounds.items():
            stats = _window_stats(samples, seconds, lo, hi, class_names)  # NaN bounds select nothing
            row |= {f"{phase}_{key}": value for key, value in stats.items()}
        rows.append(row)
    return rows


def _period_mask(wall: pd.Series, night: tuple[time, time], zone: tzinfo) -> np.ndarray:
    """True where a wall-clock time falls in the night hours of its own local day."""
    local = wall.dt.tz_convert(zone)
    minutes = (local.dt.hour * 60 + local.dt.minute).to_numpy()
    first, second = (t.hour * 60 + t.minute for t in night)
    return (minutes >= first) | (minutes < second) if first > second else (minutes >= first) & (minutes < second)


def session_periods(
    samples: pd.DataFrame,
    metadata: Mapping[str, Any],
    night: tuple[time, time],
    zone: tzinfo | None,
    class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """Sums over the session's day and night samples, to be added up per patient: sampled and covered
    samples, the sum of each class's probability and the count of each label over covered samples.
    Empty when the start (or the patient) is unknown."""
    start = session_start(metadata)
    patient_id = metadata.get("patient_id")
    if start is None or not patient_id or samples.empty:
        return []
    wall = start + pd.to_timedelta(samples["timestamp_s"].to_numpy(float), unit="s")
    is_night = _period_mask(pd.Series(wall), night, display_zone(metadata, zone))
    parts = []
    for period, mask in (("day", ~is_night), ("night", is_night)):
        part = samples[mask]
        covered = part[part["covered"]]
        row = {"patient_id": patient_id, "session_id": str(metadata.get("session_id")), "period": period}
        row |= {"sampled_frames": len(part), "covered_frames": len(covered)}
        times = wall[np.asarray(mask, bool)]
        # ISO text, None without samples: the parts are kept in the report's JSON manifest.
        row |= {"start_time": times.min().isoformat() if len(times) else None}
        row |= {"end_time": times.max().isoformat() if len(times) else None}
        parts.append(row | class_sums(covered, class_names))
    return parts


def class_sums(covered: pd.DataFrame, class_names: Sequence[str]) -> dict[str, float | int]:
    """The sum of each class's probability and the count of each label over covered samples: what adds
    up across sessions, per period here and per clinical date and period in fermon.report.days."""
    counts = covered["label"].value_counts()
    sums: dict[str, float | int] = {f"sum_prob_{c}": float(covered[f"prob_{c}"].sum()) for c in class_names}
    return sums | {f"count_{c}": int(counts.get(c, 0)) for c in class_names}


def with_shares(out: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """``coverage`` (covered of sampled frames), ``share_<class>`` and ``mean_prob_<class>`` (over the
    covered samples) from summed parts, added to ``out``."""
    covered = out["covered_frames"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["coverage"] = covered / out["sampled_frames"].to_numpy(float)
        for c in class_names:
            out[f"share_{c}"] = out[f"count_{c}"] / covered
            out[f"mean_prob_{c}"] = out[f"sum_prob_{c}"] / covered
    return out


# --------------------------------------------------------------------------- the cohort


def events_frame(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> pd.DataFrame:
    """``events.parquet``: one row per event and session, typed, in event order."""
    columns = ["event_line", "event", "patient_id", "session_id", "time", "end", "window_s", "offset_s"]
    columns += ["in_recording"]
    for phase in PHASES:
        columns += [f"{phase}_samples", f"{phase}_coverage", *(f"{phase}_mean_prob_{c}" for c in class_names)]
    frame = pd.DataFrame(list(rows), columns=columns)
    for column in ("time", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    types = {"event_line": "int64", "event": "string", "patient_id": "string", "session_id": "string"}
    types |= {"in_recording": "bool"} | {f"{p}_samples": "int64" for p in PHASES}
    for column in frame.columns:
        if column not in ("time", "end"):
            frame[column] = frame[column].astype(types.get(column, "float64"))
    return frame.sort_values(["event_line", "session_id"], kind="stable").reset_index(drop=True)


def unmatched_event_rows(events: Sequence[Event], matched_lines: set[int]) -> list[dict[str, Any]]:
    """Events with no session among the timelines: kept in events.parquet, with no figures."""
    return [
        {
            "event_line": e.line,
            "event": e.event,
            "patient_id": e.patient_id,
            "session_id": e.session_id if e.session_id else None,
            "time": pd.Timestamp(e.time).tz_convert("UTC"),
            "end": pd.Timestamp(e.end).tz_convert("UTC") if e.end else pd.NaT,
            "in_recording": False,
            **{f"{p}_samples": 0 for p in PHASES},
        }
        for e in events
        if e.line not in matched_lines
    ]


def patients_frame(parts: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> pd.DataFrame:
    """``patients.parquet``: one row per patient and period (day, night) over all their sessions:
    sessions, coverage, share of covered time and mean probability per class, dominant expression."""
    columns = ["patient_id", "period", "sessions", "start_time", "end_time", "span_s"]
    columns += ["sampled_frames", "covered_frames", "coverage"]
    columns += [*(f"share_{c}" for c in class_names), *(f"mean_prob_{c}" for c in class_names)]
    columns += ["dominant_expression"]
    if not parts:
        return _typed_patients(pd.DataFrame(columns=columns), class_names)
    table = pd.DataFrame(list(parts))
    keys = ["patient_id", "period"]
    sums = table.groupby(keys, sort=True).sum(numeric_only=True)
    # The period's first and last sample on the wall clock, across sessions: a span, pauses included.
    for column, pick in (("start_time", "min"), ("end_time", "max")):
        table[column] = pd.to_datetime(table.get(column), utc=True, format="ISO8601")
        sums[column] = table.groupby(keys, sort=True)[column].agg(pick)
    sums["span_s"] = (sums["end_time"] - sums["start_time"]).dt.total_seconds()
    sessions = table[table["sampled_frames"] > 0].groupby(["patient_id", "period"])["session_id"].nunique()
    out = sums.reset_index()
    out["sessions"] = [int(sessions.get(key, 0)) for key in zip(out["patient_id"], out["period"])]
    out = with_shares(out, class_names)
    counts = out[[f"count_{c}" for c in class_names]].to_numpy()
    out["dominant_expression"] = [class_names[int(np.argmax(r))] if r.sum() else None for r in counts]
    return _typed_patients(out[columns], class_names)


def _typed_patients(frame: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    types: dict[str, Any] = {"patient_id": "string", "period": "string"}
    types |= {c: "int64" for c in ("sessions", "sampled_frames", "covered_frames")}
    types["dominant_expression"] = pd.CategoricalDtype(list(class_names))
    types |= {"start_time": "datetime64[us, UTC]", "end_time": "datetime64[us, UTC]"}
    for column in frame.columns:
        frame[column] = frame[column].astype(types.get(column, "float64"))
    return frame.reset_index(drop=True)


def local_text(moment: datetime | pd.Timestamp | None, zone: tzinfo) -> str:
    """A time as the study reads it: ``2026-03-29 03:00:01 +02:00``."""
    if moment is None or pd.isna(moment):
        return "–"
    text = pd.Timestamp(moment).tz_convert(zone).strftime("%Y-%m-%d %H:%M:%S %z")
    return f"{text[:-2]}:{text[-2:]}"  # +0200 -> +02:00, as ISO 8601 writes it


def window_minutes_to_seconds(minutes: float) -> float:
    if not np.isfinite(minutes) or minutes <= 0:
        raise UsageError("--event-window must be a positive number of minutes")
    return float(minutes) * 60.0


__all__ = [
    "Event",
    "events_frame",
    "parse_night",
    "patients_frame",
    "read_events",
    "session_event_rows",
    "session_periods",
]
