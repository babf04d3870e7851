"""Expression episodes: sustained stretches of one non-neutral expression of the target face.

The method (README, "Expression episodes"):

1. **One observation per sample**: the target face, the largest one when a sample has several target
   faces (``--target all``); a sample without one is a missing observation.
2. **A sticky hidden Markov model** over the classes, smoothed by a forward-backward pass. The hidden
   expression persists in continuous time: over ``dt`` seconds it is kept with weight
   ``exp(-dt / STATE_TIME_S)`` and otherwise drawn afresh, uniformly over the classes. So the chain
   is as sticky per second at any sampling rate, on unevenly spaced samples, and forgets itself over
   a long pause. The emission of a sample is its calibrated probability vector, mixed with a little
   of the uniform one (``EMISSION_FLOOR``, so that one odd frame cannot veto a state): by Bayes,
   ``p(face | class)`` is proportional to ``p(class | face) / prior(class)``, and fermon takes the
   priors as equal rather than dividing by FERPlus's training shares, which would push the rarest,
   least reliable classes (contempt, disgust) up. A missing observation emits 1 for every class: it
   says nothing and the chain carries the state across it.
3. **Gaps**: the face may be missing (no target face, or no samples at all: a pause between chunks,
   a decode gap) for at most ``gap_s`` seconds inside an episode. Where it is missing longer, the
   chain restarts and no episode spans it.
4. **Episodes**: each run of one decoded (most probable a posteriori) non-neutral class, trimmed to its
   first and last sample with the face, lasting at least ``min_s`` seconds. ``end_s`` is the last
   such sample's time plus one sampling interval (the sample stands for the time until the next), so
   an expression held for 20 s lasts 20 s at any rate.

Rows are plain JSON-ready dicts, stored per session in the report manifest, so that a rebuild
recomputes the episodes of changed timelines only; :func:`episodes_frame` makes the cohort table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fermon.analysis import EPISODE_COLUMNS, episode_types

DEFAULT_MIN_S = 20.0  # --episode-min
DEFAULT_GAP_S = 5.0  # --episode-gap
STATE_TIME_S = 10.0  # time constant of the chain: the state is re-drawn at rate 1/10 s
EMISSION_FLOOR = 0.01  # share of the uniform vector mixed into each sample's probabilities
NEUTRAL = "neutral"

EPISODE_SCHEMA = pa.schema(
    [
        pa.field("patient_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("expression", pa.string()),
        pa.field("start", pa.timestamp("us", tz="UTC")),
        pa.field("end", pa.timestamp("us", tz="UTC")),
        *(pa.field(name, pa.float64()) for name in EPISODE_COLUMNS[5:]),
    ]
)


# --------------------------------------------------------------------------- one observation per sample


def episode_samples(frame: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per sampled frame, in time order: ``timestamp_s``, ``covered`` (a target face) and
    ``prob_<class>`` of the largest target face (NaN without one)."""
    keys = ["video", "frame_index"]
    probs = [f"prob_{c}" for c in class_names]
    samples = frame[[*keys, "timestamp_s"]].drop_duplicates(keys)
    targets = frame.loc[frame["is_target"].to_numpy(bool), [*keys, *probs, "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]]
    area = (targets["bbox_x2"] - targets["bbox_x1"]) * (targets["bbox_y2"] - targets["bbox_y1"])
    targets = targets.assign(_area=area.astype("float64")).sort_values("_area", ascending=False, kind="stable")
    targets = targets.drop_duplicates(keys)[[*keys, *probs]]
    merged = samples.merge(targets, on=keys, how="left", indicator=True)
    merged["covered"] = (merged.pop("_merge") == "both").to_numpy(bool)
    merged[probs] = merged[probs].astype("float64")
    return merged.sort_values("timestamp_s", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- the chain


def sampling_step(times: np.ndarray, fps: float = 0.0) -> float:
    """The typical time between samples: the median positive step, else ``1 / fps``, else 0."""
    steps = np.diff(np.sort(times))
    steps = steps[steps > 0]
    if len(steps):
        return float(np.median(steps))
    return 1.0 / fps if fps > 0 else 0.0


def sticky_posteriors(probs: np.ndarray, times: np.ndarray, restart: np.ndarray) -> np.ndarray:
    """Posterior class probabilities of a sticky chain (module docstring) given per-sample emission
    ``probs`` (T, K; a row of NaN is a missing observation), sample ``times`` (s, ascending) and
    ``restart`` (T,) marking samples where the chain starts afresh. Scaled forward-backward."""
    count, classes = probs.shape
    emission = (1 - EMISSION_FLOOR) * np.nan_to_num(probs, nan=1.0) + EMISSION_FLOOR / classes
    emission[np.isnan(probs).any(axis=1)] = 1.0
    keep = np.exp(-np.maximum(np.diff(times, prepend=times[:1]), 0.0) / STATE_TIME_S)
    keep[restart] = 0.0
    keep[0] = 0.0
    fresh = (1.0 - keep) / classes
    forward = np.empty_like(emission)
    state = np.full(classes, 1.0 / classes)
    # K is small (8): a plain loop over samples with vector steps, O(T K).
    for t in range(count):
        state = emission[t] * (keep[t] * state + fresh[t])
        state /= state.sum()
        forward[t] = state
    backward = np.empty_like(emission)
    message = np.full(classes, 1.0 / classes)
    backward[-1] = message
    for t in range(count - 1, 0, -1):
        weighted = emission[t] * message
        message = keep[t] * weighted + fresh[t] * weighted.sum()
        message /= message.sum()
        backward[t - 1] = message
    posterior = forward * backward
    return posterior / posterior.sum(axis=1, keepdims=True)


def _kept_and_restarts(times: np.ndarray, covered: np.ndarray, gap_s: float, step: float) -> tuple:
    """Which samples take part (those with the face, and those in a bridged stretch without it) and
    where the chain restarts (after the face was missing longer than ``gap_s``)."""
    index = np.flatnonzero(covered)
    kept = np.zeros(len(times), bool)
    restart = np.zeros(len(times), bool)
    if not len(index):
        return kept, restart
    kept[index] = True
    missing = np.diff(times[index]) - step  # face unseen between consecutive covered samples
    for before, after, unseen in zip(index[:-1], index[1:], missing):
        if unseen > gap_s + 1e-9:
            restart[after] = True
        else:
            kept[before + 1 : after] = True
    return kept, restart


# --------------------------------------------------------------------------- episodes


def find_episodes(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    *,
    min_s: float = DEFAULT_MIN_S,
    gap_s: float = DEFAULT_GAP_S,
    fps: float = 0.0,
) -> list[dict[str, Any]]:
    """Episodes of one session from :func:`episode_samples`: ``expression``, ``start_s``, ``end_s``,
    ``duration_s``, ``mean_prob`` and ``peak_prob`` (the expression's raw probability over the
    episode's samples with the face) and ``coverage`` (the share of its samples with the face)."""
    samples = samples.sort_values("timestamp_s", kind="stable")
    times = samples["timestamp_s"].to_numpy(float)
    covered = samples["covered"].to_numpy(bool)
    step = sampling_step(times, fps)
    kept, restart = _kept_and_restarts(times, covered, gap_s, step)
    if not kept.any():
        return []
    probs = samples[[f"prob_{c}" for c in class_names]].to_numpy(float)[kept]
    probs[~covered[kept]] = np.nan
    times, covered, restart = times[kept], covered[kept], restart[kept]
    states = sticky_posteriors(probs, times, restart).argmax(axis=1)
    # A run ends where the decoded state changes or the chain restarts.
    breaks = np.flatnonzero((np.diff(states) != 0) | restart[1:]) + 1
    episodes = []
    for first, stop in zip([0, *breaks], [*breaks, len(states)]):
        name = class_names[states[first]]
        seen = first + np.flatnonzero(covered[first:stop])
        if name == NEUTRAL or not len(seen):
            continue
        lo, hi = int(seen[0]), int(seen[-1])
        start_s, end_s = float(times[lo]), float(times[hi] + step)
        if end_s - start_s + 1e-9 < min_s:
            continue
        values = probs[lo : hi + 1, class_names.index(name)]
        episodes.append(
            {
                "expression": name,
                "start_s": start_s,
                "end_s": end_s,
                "duration_s": end_s - start_s,
                "mean_prob": float(np.nanmean(values)),
                "peak_prob": float(np.nanmax(values)),
                "coverage": float(covered[lo : hi + 1].mean()),
            }
        )
    return episodes


def session_episodes(
    frame: pd.DataFrame, metadata: Mapping[str, Any], min_s: float = DEFAULT_MIN_S, gap_s: float = DEFAULT_GAP_S
) -> list[dict[str, Any]]:
    """One timeline's episode rows, JSON-ready: ids, and wall-clock ``start``/``end`` (UTC ISO text,
    None where the session's clock is unknown) beside ``start_s``/``end_s``."""
    class_names = list(metadata["class_names"])
    fps = float(metadata.get("sampling_fps") or 0.0)
    found = find_episodes(episode_samples(frame, class_names), class_names, min_s=min_s, gap_s=gap_s, fps=fps)
    start = (metadata.get("clock") or {}).get("start")
    origin = pd.Timestamp(start) if start else None
    return [
        {
            "patient_id": metadata.get("patient_id"),
            "session_id": str(metadata.get("session_id")),
            "expression": e["expression"],
            "start": _wall(origin, e["start_s"]),
            "end": _wall(origin, e["end_s"]),
            **{k: e[k] for k in EPISODE_COLUMNS[5:]},
        }
        for e in found
    ]


def _wall(origin: pd.Timestamp | None, seconds: float) -> str | None:
    if origin is None:
        return None
    return (origin + pd.Timedelta(microseconds=round(seconds * 1e6))).isoformat()


def episodes_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Episode rows as the typed table of ``DIR/episodes.parquet`` (fermon.analysis.episode_types),
    sorted by patient, session and start."""
    frame = pd.DataFrame(list(rows), columns=list(EPISODE_COLUMNS))
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame = frame.astype(episode_types())
    order = ["patient_id", "session_id", "start_s"]
    return frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


def episodes_table(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table written: the explicit schema, with pandas' own metadata so that plain
    ``pandas.read_parquet`` gets the same dtypes as :func:`fermon.read_episodes`."""
    return pa.Table.from_pandas(frame, schema=EPISODE_SCHEMA, preserve_index=False)


def check_settings(min_s: float, gap_s: float) -> None:
    """--episode-min and --episode-gap: finite and not negative. Raises UsageError."""
    from fermon.errors import UsageError

    for option, value in (("--episode-min", min_s), ("--episode-gap", gap_s)):
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{option} must be 0 seconds or more, not {value:g}")
