"""The patient over days: one row per patient, clinical date and period, against the patient's own
baseline (pure pandas).

:func:`session_days` splits one session's samples by clinical date and period (day or night in the
display zone; a night belongs to the date it began) into sums that the report manifest keeps, so a
new night recomputes only its own session. :func:`patient_days` adds the sums up per patient, date
and period, counts the episodes that start there, and compares each day with the same patient's
previous days of the same period (:func:`baseline_columns`): a robust z-score per class, a flag and
the reason for it, or for its absence, in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fermon.analysis import PATIENT_DAYS_FILE
from fermon.report.events import _period_mask, class_sums, display_zone, session_start, with_shares

DEFAULT_BASELINE_DAYS = 7
DEFAULT_MIN_COVERAGE = 0.3
MIN_BASELINE = 3  # days in the baseline: a median and a MAD of fewer say nothing about "usual"
Z_THRESHOLD = 3.0
SCALE_FLOOR = 0.05  # share: night-to-night variation a calm patient shows anyway (see the README)
MIN_CHANGE = 0.10  # share: a rise smaller than a tenth of the covered time is not clinically visible
MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation
NEUTRAL = "neutral"  # never flagged: more neutral time is not a sign of distress
PATIENT_DAYS_NAME = PATIENT_DAYS_FILE


@dataclass(frozen=True)
class BaselineRule:
    """How a day is compared with the patient's previous days (``--baseline-days``, ``--min-coverage``)."""

    days: int = DEFAULT_BASELINE_DAYS
    min_coverage: float = DEFAULT_MIN_COVERAGE
    z: float = Z_THRESHOLD
    scale_floor: float = SCALE_FLOOR
    min_change: float = MIN_CHANGE


# --------------------------------------------------------------------------- clinical dates


def clinical_dates(wall: pd.Series, night: tuple[time, time], zone: tzinfo) -> tuple[np.ndarray, np.ndarray]:
    """Each wall-clock time's clinical date (ISO text) and whether it is night. A night that wraps past
    midnight belongs to the date it began: 02:00 on the 29th is the night of the 28th."""
    is_night = _period_mask(wall, night, zone)
    local = wall.dt.tz_convert(zone)
    day = local.dt.tz_localize(None).dt.normalize()
    first, second = night
    if first > second:
        minutes = (local.dt.hour * 60 + local.dt.minute).to_numpy()
        early = is_night & (minutes < second.hour * 60 + second.minute)
        day = day - pd.to_timedelta(early.astype(np.int64), unit="D")
    return day.dt.strftime("%Y-%m-%d").to_numpy(), is_night


def _utc(day: date, at: time, zone: tzinfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)


def period_seconds(day: date, period: str, night: tuple[time, time], zone: tzinfo) -> float:
    """The period's length as the zone's clock runs it: the night of 2026-10-24 in Berlin (clocks go
    back) lasts 9 hours from 22:00 to 06:00, that of 2026-03-28 7 hours."""
    first, second = night
    nxt = day + timedelta(days=1)
    if first > second:  # the night wraps: [D first, D+1 second); the day is [D second, D first)
        bounds = (_utc(day, first, zone), _utc(nxt, second, zone))
        if period == "day":
            bounds = (_utc(day, second, zone), _utc(day, first, zone))
        return (bounds[1] - bounds[0]).total_seconds()
    night_s = (_utc(day, second, zone) - _utc(day, first, zone)).total_seconds()
    if period == "night":
        return night_s
    return (_utc(nxt, time(0), zone) - _utc(day, time(0), zone)).total_seconds() - night_s


# --------------------------------------------------------------------------- one session


def session_days(
    samples: pd.DataFrame,
    metadata: Mapping[str, Any],
    night: tuple[time, time],
    zone: tzinfo | None,
    class_names: Sequence[str],
    duration_s: float,
) -> list[dict[str, Any]]:
    """Sums over the session's samples per clinical date and period, for :func:`patient_days`: sampled
    and covered samples, seconds recorded and covered (each sample stands for ``duration_s`` over the
    samples), the period's length, the first and last sample (ISO text: kept in the report manifest),
    the sum of each class's probability and the count of each label over covered samples.
    Empty without a patient (no manifest) or a known start."""
    start, patient_id = session_start(metadata), metadata.get("patient_id")
    if start is None or not patient_id or samples.empty:
        return []
    zone = display_zone(metadata, zone)
    wall = pd.Series(start + pd.to_timedelta(samples["timestamp_s"].to_numpy(float), unit="s"))
    dates, is_night = clinical_dates(wall, night, zone)
    step = float(duration_s) / len(samples)
    keys = pd.DataFrame({"date": dates, "period": np.where(is_night, "night", "day")})
    parts = []
    for (day, period), index in keys.groupby(["date", "period"], sort=True).groups.items():
        part = samples.loc[index]
        covered = part[part["covered"]]
        times = wall.loc[index]
        row = {"patient_id": str(patient_id), "session_id": str(metadata.get("session_id")), "date": day}
        row |= {"period": period, "sampled_frames": len(part), "covered_frames": len(covered)}
        row |= {"recorded_s": len(part) * step, "covered_s": len(covered) * step}
        row |= {"period_s": period_seconds(date.fromisoformat(day), period, night, zone)}
        row |= {"start_time": times.min().isoformat(), "end_time": times.max().isoformat()}
        parts.append(row | class_sums(covered, class_names))
    return parts


# --------------------------------------------------------------------------- the patient's days


def patient_days_columns(class_names: Sequence[str]) -> list[tuple[str, pa.DataType]]:
    """The columns of ``patient_days.parquet`` and their Arrow types, in order."""
    text, count, real = pa.string(), pa.int64(), pa.float64()
    columns = [("patient_id", text), ("date", pa.date32()), ("period", text), ("sessions", count)]
    columns += [("start_time", pa.timestamp("us", tz="UTC")), ("end_time", pa.timestamp("us", tz="UTC"))]
    columns += [("period_s", real), ("recorded_s", real), ("covered_s", real)]
    columns += [("sampled_frames", count), ("covered_frames", count), ("coverage", real)]
    for prefix, kind in (("share", real), ("mean_prob", real), ("episodes", count), ("episode_min", real)):
        columns += [(f"{prefix}_{c}", kind) for c in class_names]
    columns += [("baseline_n", count)]
    for prefix in ("baseline", "usual_max", "z"):
        columns += [(f"{prefix}_{c}", real) for c in class_names]
    columns += [("flagged", pa.bool_()), ("flag_classes", text), ("flag_reason", text)]
    return columns


def patient_days_schema(class_names: Sequence[str]) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind in patient_days_columns(class_names)])


def patient_days(
    parts: Sequence[Mapping[str, Any]],
    episodes: pd.DataFrame | None,
    class_names: Sequence[str],
    rule: BaselineRule | None = None,
) -> pd.DataFrame:
    """``patient_days.parquet``: one row per patient, clinical date and period over all their sessions
    (``parts`` from :func:`session_days`), with the episodes that start there and the comparison with
    the patient's previous days of the same period. Without ``episodes`` their columns are 0."""
    rule = rule or BaselineRule()
    if not parts:
        return _typed(pd.DataFrame(columns=[n for n, _ in patient_days_columns(class_names)]), class_names)
    table = pd.DataFrame(list(parts))
    keys = ["patient_id", "date", "period"]
    for column in ("start_time", "end_time"):
        table[column] = pd.to_datetime(table[column], utc=True, format="ISO8601")
    grouped = table.groupby(keys, sort=True)
    out = grouped.sum(numeric_only=True).drop(columns="period_s")
    out["period_s"] = grouped["period_s"].max()  # the same for every session of one zone
    out["start_time"], out["end_time"] = grouped["start_time"].min(), grouped["end_time"].max()
    out["sessions"] = grouped["session_id"].nunique()
    # Coverage as everywhere in fermon (summary.parquet, patients.parquet): the share of the recorded
    # samples with the patient's face. Not of the period's hours: a study that records part of each
    # night (a 20-minute session) must still compare nights; recorded_s and period_s say how much.
    out = with_shares(out.reset_index(), class_names)
    out = _with_episodes(out, table, episodes, class_names)
    out = baseline_columns(out, class_names, rule)
    return _typed(out[[n for n, _ in patient_days_columns(class_names)]], class_names)


def _with_episodes(
    out: pd.DataFrame, table: pd.DataFrame, episodes: pd.DataFrame | None, class_names: Sequence[str]
) -> pd.DataFrame:
    """Episode counts and minutes per class, each episode at the date and period where it starts: the
    part of its session that holds its start (the latest part starting at or before it)."""
    for c in class_names:
        out[f"episodes_{c}"], out[f"episode_min_{c}"] = 0, 0.0
    if episodes is None or episodes.empty:
        return out
    found = episodes[episodes["patient_id"].notna() & episodes["start"].notna()]
    index = {key: k for k, key in enumerate(zip(out["patient_id"], out["date"], out["period"]))}
    by_session = {s: g.sort_values("start_time") for s, g in table.groupby("session_id")}
    for episode in found.itertuples(index=False):
        parts = by_session.get(str(episode.session_id))
        if parts is None or str(episode.expression) not in class_names:
            continue
        before = parts[parts["start_time"] <= pd.Timestamp(episode.start)]
        if before.empty:
            continue
        part = before.iloc[-1]
        row = index[(part["patient_id"], part["date"], part["period"])]
        out.loc[row, f"episodes_{episode.expression}"] += 1
        out.loc[row, f"episode_min_{episode.expression}"] += float(episode.duration_s) / 60.0
    return out


# --------------------------------------------------------------------------- baselines and flags


def baseline_columns(days: pd.DataFrame, class_names: Sequence[str], rule: BaselineRule) -> pd.DataFrame:
    """Each row against the same patient's previous ``rule.days`` days of the same period with coverage
    of at least ``rule.min_coverage`` (at least 3 of them): per class the baseline (median share), the
    highest share still usual, and a robust z-score (x - median) / max(1.4826 MAD, floor); a flag when
    a class other than neutral rises by z >= 3 and by at least ``rule.min_change``."""
    days = days.copy()
    n = len(days)
    medians = np.full((n, len(class_names)), np.nan)
    scales = np.full((n, len(class_names)), np.nan)
    counts = np.zeros(n, np.int64)
    dates = pd.to_datetime(days["date"]).to_numpy()
    usable = days["coverage"].to_numpy(float) >= rule.min_coverage
    shares = days[[f"share_{c}" for c in class_names]].to_numpy(float)
    for _, group in days.groupby(["patient_id", "period"], sort=False):
        rows = group.index.to_numpy()
        for row in rows:
            window = rows[(dates[rows] < dates[row]) & (dates[rows] >= dates[row] - np.timedelta64(rule.days, "D"))]
            window = window[usable[window]]
            counts[row] = len(window)
            if len(window) >= MIN_BASELINE:
                past = shares[window]
                medians[row] = np.median(past, axis=0)
                mad = np.median(np.abs(past - medians[row]), axis=0)
                scales[row] = np.maximum(MAD_TO_SD * mad, rule.scale_floor)
    with np.errstate(invalid="ignore"):
        z = (shares - medians) / scales
    usual_max = medians + np.maximum(rule.z * scales, rule.min_change)
    days["baseline_n"] = counts
    for k, c in enumerate(class_names):
        days[f"baseline_{c}"], days[f"usual_max_{c}"], days[f"z_{c}"] = medians[:, k], usual_max[:, k], z[:, k]
    verdicts = [_verdict(days.loc[row], class_names, rule) for row in days.index]
    days["flagged"] = [bool(classes) for classes, _ in verdicts]
    days["flag_classes"] = [";".join(classes) for classes, _ in verdicts]
    days["flag_reason"] = [reason for _, reason in verdicts]
    return days


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _verdict(row: pd.Series, class_names: Sequence[str], rule: BaselineRule) -> tuple[list[str], str]:
    """The classes flagged on this row and why, or why nothing is flagged, in words."""
    period = str(row["period"])
    if not row["coverage"] >= rule.min_coverage:
        coverage, floor = _pct(row["coverage"]), _pct(rule.min_coverage)
        return [], f"coverage {coverage} of the {period} below the {floor} floor: not compared"
    if row["baseline_n"] < MIN_BASELINE:
        return [], (
            f"no baseline: {row['baseline_n']} earlier {period}(s) with enough coverage in the {rule.days} days "
            f"before, {MIN_BASELINE} needed"
        )
    flagged, reasons, largest = [], [], (-np.inf, "")
    for c in class_names:
        share, median, z = row[f"share_{c}"], row[f"baseline_{c}"], row[f"z_{c}"]
        if c == NEUTRAL or not np.isfinite(z):
            continue
        if z > largest[0]:
            largest = (z, f"{c} {_pct(share)} against a usual {_pct(median)}, z {z:.1f}")
        if z >= rule.z and share - median >= rule.min_change:
            flagged.append(c)
            reasons.append(f"{c} {_pct(share)} of the {period} against a usual {_pct(median)} (z {z:.1f})")
    if flagged:
        return flagged, "; ".join(reasons)
    return [], f"within the usual range (largest rise: {largest[1]})" if largest[1] else "within the usual range"


def _typed(frame: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """fermon's pandas dtypes for the Arrow types (what plain pandas.read_parquet gives back)."""
    frame = frame.copy()
    for name, kind in patient_days_columns(class_names):
        if kind == pa.string():
            frame[name] = frame[name].astype("string")
        elif kind == pa.date32():
            frame[name] = pd.to_datetime(frame[name]).dt.date.astype(object)
        elif pa.types.is_timestamp(kind):
            frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
        elif kind == pa.bool_():
            frame[name] = frame[name].astype(bool)
        else:
            frame[name] = frame[name].astype("int64" if kind == pa.int64() else "float64")
    return frame.reset_index(drop=True)


def patient_days_table(frame: pd.DataFrame, class_names: Sequence[str]) -> pa.Table:
    """The frame as an Arrow table with the explicit schema (and pandas' metadata, so that plain
    pandas reads it back with the same dtypes)."""
    return pa.Table.from_pandas(frame, schema=patient_days_schema(class_names), preserve_index=False)


__all__ = ["BaselineRule", "patient_days", "patient_days_schema", "session_days"]
