"""The analyst API: timelines as one pandas DataFrame, and one summary row per session.

``read_timelines`` loads ``DIR/timelines/*.parquet`` with proper dtypes (a categorical ``label``
whose categories are the model's classes in order, nullable ``Int32`` track ids); ``summarize``
turns such a frame into the per-session table written to ``DIR/summary.parquet``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fermon.errors import DataError, InputError
from fermon.run.timeline import METADATA_KEY, TIMELINES_DIR

#: ``DataFrame.attrs`` key holding each session's footer metadata, keyed by session id.
SESSIONS_ATTR = "fermon_sessions"


@dataclass(frozen=True)
class QualityThresholds:
    """When a session gets a quality flag. Shares are fractions of sampled frames."""

    min_coverage: float = 0.5  # samples with a target face
    max_multi_face_share: float = 0.1  # samples with two or more faces
    min_confidence: float = 0.4  # mean classifier confidence of the target face
    min_det_score: float = 0.6  # mean detection score of the target face


FLAGS = ("low_coverage", "multiple_faces", "low_confidence", "low_detection_score", "decode_gaps")


# --------------------------------------------------------------------------- reading


def timeline_files(out_dir: Path) -> dict[str, Path]:
    """Session id -> timeline path, in session order; hidden (temporary) files are ignored."""
    folder = Path(out_dir) / TIMELINES_DIR
    if not folder.is_dir():
        raise InputError(f"{out_dir}: no {TIMELINES_DIR}/ folder (run 'fermon process' first)")
    return {p.stem: p for p in sorted(folder.glob("*.parquet")) if not p.name.startswith(".")}


def _footer(table: pa.Table, path: Path) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{path.name}: not a fermon timeline (no footer metadata)")
    return json.loads(raw)


def timeline_frame(table: pa.Table, class_names: list[str]) -> pd.DataFrame:
    """One timeline as a DataFrame with fermon's dtypes."""
    mapping = {pa.int32(): pd.Int32Dtype(), pa.string(): pd.StringDtype()}
    frame = table.to_pandas(types_mapper=mapping.get)
    frame["label"] = pd.Categorical(frame["label"].astype(object), categories=class_names)
    return frame


def read_timeline(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One timeline file and its footer metadata."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{path.name}: cannot read timeline ({error})") from error
    metadata = _footer(table, path)
    return timeline_frame(table, list(metadata["class_names"])), metadata


def read_timelines(out_dir: str | Path, sessions: Iterable[str] | None = None) -> pd.DataFrame:
    """All (or some) sessions' timelines from a ``fermon process`` output folder.

    Parameters
    ----------
    out_dir
        The folder given to ``fermon process --out``.
    sessions
        Session ids to read; ``None`` reads every session.

    Returns
    -------
    DataFrame
        One row per sampled frame and face, sorted by session and time. ``label`` is categorical
        (categories = class names in model order), ``track_id`` nullable ``Int32``, per-face floats
        ``float32`` with NaN where no face. ``attrs["fermon_sessions"]`` maps each session id to its
        footer metadata (videos, model, options, decode gaps).
    """
    files = timeline_files(Path(out_dir))
    if sessions is not None:
        wanted = list(dict.fromkeys(sessions))
        missing = [s for s in wanted if s not in files]
        if missing:
            raise InputError(f"{out_dir}: no timeline for session(s) {', '.join(missing)}")
        files = {s: files[s] for s in wanted}
    frames, metadata = [], {}
    class_names: list[str] | None = None
    for session_id, path in files.items():
        frame, meta = read_timeline(path)
        if class_names is None:
            class_names = list(meta["class_names"])
        elif list(meta["class_names"]) != class_names:
            # Mixed models cannot share one label category set or prob_ columns.
            raise DataError(f"{path.name}: class names differ from the other sessions' (mixed models)")
        frames.append(frame)
        metadata[session_id] = meta
    if not frames:
        return _empty_frame()
    frame = pd.concat(frames, ignore_index=True)
    frame["label"] = pd.Categorical(frame["label"], categories=class_names)
    frame.attrs[SESSIONS_ATTR] = metadata
    return frame


def _empty_frame() -> pd.DataFrame:
    from fermon.run.timeline import timeline_schema

    frame = timeline_frame(timeline_schema([]).empty_table(), [])
    frame.attrs[SESSIONS_ATTR] = {}
    return frame


def class_names_of(frame: pd.DataFrame) -> list[str]:
    """The model's class names, from the categorical ``label``."""
    if not isinstance(frame["label"].dtype, pd.CategoricalDtype):
        raise DataError("'label' is not categorical: read the timelines with fermon.read_timelines")
    return [str(c) for c in frame["label"].cat.categories]


# --------------------------------------------------------------------------- per-sample view


def target_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per sampled frame: its target face (the best-scored one when several are targets),
    or a row with NaN/False values when the sample has no target face.

    Adds ``covered`` (a target face exists) and ``faces`` (faces detected in the sample).
    """
    keys = ["session_id", "video", "frame_index"]
    samples = frame[[*keys, "timestamp_s"]].drop_duplicates(keys)
    faces = frame.groupby(keys, sort=False, observed=True)["face_detected"].sum().rename("faces")
    targets = frame[frame["is_target"]].sort_values("det_score", ascending=False, kind="stable")
    targets = targets.drop_duplicates(keys).drop(columns="timestamp_s")
    merged = samples.merge(targets, on=keys, how="left").merge(faces.reset_index(), on=keys, how="left")
    merged["covered"] = merged["is_target"].eq(True).to_numpy(bool)
    merged["is_target"] = merged["covered"]
    merged["face_detected"] = merged["face_detected"].eq(True).to_numpy(bool)
    merged["faces"] = merged["faces"].astype("int64")
    merged["label"] = pd.Categorical(merged["label"], categories=frame["label"].cat.categories)
    return merged.sort_values(["session_id", "timestamp_s"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- summary


def _duration(session_id: str, samples: pd.DataFrame, metadata: Mapping[str, Any] | None) -> float:
    if metadata and metadata.get("videos"):
        return float(sum(v.get("duration_s") or 0.0 for v in metadata["videos"]))
    # Without the footer: the sampled span plus one sampling interval.
    times = np.sort(samples["timestamp_s"].to_numpy())
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return float(times[-1] - times[0] + step) if len(times) else 0.0


def _span(samples: pd.DataFrame) -> float:
    """Seconds from the first sample to the last on the session's axis, pauses between chunks included
    (``duration_s`` is the seconds recorded)."""
    times = samples["timestamp_s"].to_numpy(float)
    return float(times.max() - times.min()) if len(times) else 0.0


def summarize_session(
    samples: pd.DataFrame,
    class_names: list[str],
    metadata: Mapping[str, Any] | None = None,
    thresholds: QualityThresholds | None = None,
) -> dict[str, Any]:
    """The summary row of one session from its per-sample view (see :func:`target_samples`)."""
    thresholds = thresholds or QualityThresholds()
    session_id = str(samples["session_id"].iloc[0])
    counts = (metadata or {}).get("samples") or {}
    # The footer's count of sampled frames, when there is one: the rows given may be only some of them
    # (the target's, say), and coverage must not depend on which rows an analyst kept.
    sampled = int(counts.get("count", len(samples)))
    covered = samples[samples["covered"]]
    coverage = len(covered) / sampled if sampled else 0.0
    several = counts["with_several_faces"] if "with_several_faces" in counts else int((samples["faces"] >= 2).sum())
    gaps = list((metadata or {}).get("decode_gaps") or [])
    row: dict[str, Any] = {
        "session_id": session_id,
        "videos": len((metadata or {}).get("videos") or []) or int(samples["video"].nunique()),
        "duration_s": _duration(session_id, samples, metadata),
        "span_s": _span(samples),
        "sampling_fps": float((metadata or {}).get("sampling_fps", np.nan)),
        "sampled_frames": sampled,
        "covered_frames": len(covered),
        "coverage": coverage,
        "multi_face_share": several / sampled if sampled else 0.0,
        "mean_det_score": float(covered["det_score"].mean()) if len(covered) else np.nan,
        "mean_confidence": float(covered["confidence"].mean()) if len(covered) else np.nan,
        "decode_gaps": len(gaps),
        "decode_gap_s": float(sum(g["end_s"] - g["start_s"] for g in gaps)),
    }
    counts = covered["label"].value_counts().reindex(class_names, fill_value=0)
    for name in class_names:
        # Share of the covered time: shares sum to 1 whenever any frame is covered.
        row[f"share_{name}"] = float(counts[name] / len(covered)) if len(covered) else np.nan
    for name in class_names:
        row[f"mean_prob_{name}"] = float(covered[f"prob_{name}"].mean()) if len(covered) else np.nan
    # Ties go to the first class in model order; no dominant expression without a covered frame.
    row["dominant_expression"] = class_names[int(np.argmax(counts.to_numpy()))] if len(covered) else None
    flags = {
        "low_coverage": coverage < thresholds.min_coverage,
        "multiple_faces": row["multi_face_share"] > thresholds.max_multi_face_share,
        "low_confidence": bool(len(covered)) and row["mean_confidence"] < thresholds.min_confidence,
        "low_detection_score": bool(len(covered)) and row["mean_det_score"] < thresholds.min_det_score,
        "decode_gaps": bool(gaps),
    }
    for name in FLAGS:
        row[f"flag_{name}"] = bool(flags[name])
    row["quality_flags"] = ";".join(name for name in FLAGS if flags[name])
    row |= clinical_facts(metadata, float(samples["timestamp_s"].max()) if len(samples) else None)
    return row


CLINICAL_COLUMNS = ("patient_id", "start_time", "end_time")


def clinical_facts(metadata: Mapping[str, Any] | None, last_sample_s: float | None = None) -> dict[str, Any]:
    """A session's patient (from a study manifest), wall-clock start and the wall-clock time of its last
    sample (UTC, ISO: rows are stored as JSON), from its footer; None where the clock is unknown."""
    start = ((metadata or {}).get("clock") or {}).get("start")
    end = None
    if start and last_sample_s is not None:
        end = (pd.Timestamp(start) + pd.Timedelta(microseconds=round(last_sample_s * 1e6))).isoformat()
    return {"patient_id": (metadata or {}).get("patient_id"), "start_time": start, "end_time": end}


def summary_columns(class_names: list[str]) -> list[str]:
    base = ["session_id", "videos", "duration_s", "span_s", "sampling_fps", "sampled_frames", "covered_frames"]
    base += ["coverage", "multi_face_share", "mean_det_score", "mean_confidence", "decode_gaps", "decode_gap_s"]
    return [
        *base,
        *(f"share_{c}" for c in class_names),
        *(f"mean_prob_{c}" for c in class_names),
        "dominant_expression",
        *(f"flag_{f}" for f in FLAGS),
        "quality_flags",
        *CLINICAL_COLUMNS,
    ]


def summary_frame(rows: list[dict[str, Any]], class_names: list[str]) -> pd.DataFrame:
    """Summary rows as a typed DataFrame (one row per session, sorted by session id)."""
    frame = pd.DataFrame(rows, columns=summary_columns(class_names))
    types: dict[str, Any] = {"session_id": "string", "quality_flags": "string", "patient_id": "string"}
    types |= {"start_time": "datetime64[us, UTC]", "end_time": "datetime64[us, UTC]"}
    types |= {c: "int64" for c in ("videos", "sampled_frames", "covered_frames", "decode_gaps")}
    types |= {f"flag_{f}": "bool" for f in FLAGS}
    types["dominant_expression"] = pd.CategoricalDtype(class_names)
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    for column in frame.columns:
        frame[column] = frame[column].astype(types.get(column, "float64"))
    return frame.sort_values("session_id", kind="stable").reset_index(drop=True)


def summarize(frame: pd.DataFrame, thresholds: QualityThresholds | None = None) -> pd.DataFrame:
    """One row per session: duration, sampled frames, coverage, share of covered time per expression
    (``share_<class>``), mean probability per class over covered frames (``mean_prob_<class>``),
    dominant expression and quality flags (``flag_<name>`` and a ``;``-joined ``quality_flags``).

    A sample counts as covered when it has a target face (the patient's person); expression figures
    use target faces only. When the frame came from :func:`read_timelines`, ``frame.attrs`` (which
    pandas keeps through row selections) gives each session's duration, decode gaps and number of
    sampled frames, so ``summarize(df)`` and ``summarize(df[df.is_target])`` agree, and every session
    read appears, also one whose rows were all filtered away (a session without the patient: coverage
    0). To summarise fewer sessions, read fewer (``read_timelines(..., sessions=)``) or select rows of
    the result. Without attrs the duration is the sampled span and only sessions with rows appear.
    """
    class_names = class_names_of(frame)
    metadata = frame.attrs.get(SESSIONS_ATTR) or {}
    samples = target_samples(frame)
    groups = dict(tuple(samples.groupby("session_id", sort=True, observed=True)))
    groups = {str(session_id): group for session_id, group in groups.items()}
    for session_id in metadata:
        if session_id not in groups:
            groups[session_id] = _no_rows(samples, session_id)
    rows = [
        summarize_session(groups[session_id], class_names, metadata.get(session_id), thresholds)
        for session_id in sorted(groups)
    ]
    return summary_frame(rows, class_names)


def _no_rows(samples: pd.DataFrame, session_id: str) -> pd.DataFrame:
    """A per-sample view with one uncovered row, for a session none of whose rows were given."""
    row = samples.iloc[:0].reindex([0])
    row["session_id"] = session_id
    row["covered"] = False
    row["faces"] = 0
    return row


PATIENT_DAYS_FILE = "patient_days.parquet"


def read_patient_days(out_dir: str | Path) -> pd.DataFrame:
    """``DIR/patient_days.parquet``: one row per patient, clinical date and period, with each class's
    share, episodes, baseline, robust z-score, ``flagged`` and ``flag_reason`` (README, "The patient over
    days"). ``date`` holds ``datetime.date`` objects, strings are pandas ``string``, times
    ``datetime64[us, UTC]``: what plain ``pandas.read_parquet`` gives too. Raises InputError when the
    file is missing (no session with a patient, or no report built yet)."""
    path = Path(out_dir) / PATIENT_DAYS_FILE
    if not path.is_file():
        raise InputError(f"{out_dir}: no {PATIENT_DAYS_FILE} (build the reports of a study with a manifest)")
    return pd.read_parquet(path)


def thresholds_dict(thresholds: QualityThresholds) -> dict[str, float]:
    return asdict(thresholds)


# --------------------------------------------------------------------------- episodes

EPISODES_NAME = "episodes.parquet"
EPISODE_COLUMNS = ("patient_id", "session_id", "expression", "start", "end", "start_s", "end_s", "duration_s",
                   "mean_prob", "peak_prob", "coverage")  # fmt: skip


def episode_types() -> dict[str, Any]:
    """The dtypes of ``DIR/episodes.parquet`` (fermon.report.episodes writes it)."""
    types: dict[str, Any] = {c: pd.StringDtype() for c in ("patient_id", "session_id", "expression")}
    types |= {c: "datetime64[us, UTC]" for c in ("start", "end")}
    return types | {c: "float64" for c in EPISODE_COLUMNS[5:]}


def read_episodes(out_dir: str | Path) -> pd.DataFrame:
    """Every session's expression episodes, from ``DIR/episodes.parquet`` (written by ``fermon report``).

    One row per episode: ``patient_id`` (null without a study manifest), ``session_id`` and
    ``expression`` (strings), ``start`` and ``end`` (``datetime64[us, UTC]``, NaT where the session's
    clock is unknown), ``start_s``, ``end_s`` (seconds from the session's start), ``duration_s``,
    ``mean_prob``, ``peak_prob`` and ``coverage`` (float64). Plain ``pandas.read_parquet`` gives the
    same dtypes. Raises InputError when the file is missing (no report built yet).
    """
    path = Path(out_dir) / EPISODES_NAME
    if not path.is_file():
        raise InputError(f"{out_dir}: no {EPISODES_NAME} (run 'fermon report' first)")
    try:
        frame = pd.read_parquet(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{EPISODES_NAME}: cannot read ({error})") from error
    return frame[list(EPISODE_COLUMNS)].astype(episode_types())


__all__ = ["QualityThresholds", "read_episodes", "read_patient_days", "read_timelines", "summarize", "target_samples"]
