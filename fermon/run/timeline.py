"""Stage: the timeline table (Arrow schema, footer metadata) and its atomic Parquet write.

One row per sampled frame and face, plus one row for each sampled frame without a face. The footer
carries what is needed to interpret and reproduce it, as JSON under the key ``fermon``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fermon.inputs.storage import atomic_path

METADATA_KEY = b"fermon"
TIMELINES_DIR = "timelines"
BBOX_COLUMNS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
WALL_TIME = pa.timestamp("us", tz="UTC")


def timeline_schema(class_names: list[str], metadata: dict[str, Any] | None = None) -> pa.Schema:
    fields = [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),  # from a study manifest; null without one
        pa.field("video", pa.string(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("wall_time", WALL_TIME),  # null where the recording's start is unknown
        pa.field("face_detected", pa.bool_(), nullable=False),
        pa.field("track_id", pa.int32()),
        pa.field("person_id", pa.int32()),  # tracks of one person across the session (fermon.people.linking)
        pa.field("is_target", pa.bool_(), nullable=False),
        pa.field("det_score", pa.float32()),
        *(pa.field(name, pa.float32()) for name in BBOX_COLUMNS),
        pa.field("label", pa.dictionary(pa.int32(), pa.string())),
        pa.field("confidence", pa.float32()),
        *(pa.field(f"prob_{name}", pa.float32()) for name in class_names),
    ]
    schema = pa.schema(fields)
    extra = {b"pandas": _pandas_metadata(schema)}
    if metadata is not None:
        extra[METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
    return schema.with_metadata(extra)


NULLABLE_INTEGERS = ("track_id", "person_id")


def _pandas_metadata(schema: pa.Schema) -> bytes:
    """pandas' own description of the columns, so that plain ``pandas.read_parquet`` reads the ids as
    nullable ``Int32`` (as :func:`fermon.read_timelines` does) rather than float64 with NaN."""
    empty = schema.empty_table().to_pandas()
    for name in NULLABLE_INTEGERS:
        empty[name] = empty[name].astype("Int32")
    return pa.Schema.from_pandas(empty, preserve_index=False).metadata[b"pandas"]


@dataclass
class SampledFaces:
    """What a worker gathered over one session, in sample order: per sample its video (an index into
    the session's videos), frame and time; per sample the boxes and scores of its faces; and the class
    probabilities of every face, all samples' faces concatenated."""

    video_numbers: Sequence[int]
    frame_indices: Sequence[int]
    timestamps_s: Sequence[float]
    boxes: Sequence[np.ndarray]  # per sample, (faces, 4) float32
    scores: Sequence[np.ndarray]  # per sample, (faces,) float32
    probs: np.ndarray  # (all faces, classes) float32

    def all_boxes(self) -> np.ndarray:
        return np.concatenate(self.boxes) if self.boxes else np.zeros((0, 4), np.float32)


def face_columns(
    session_id: str,
    video_names: Sequence[str],
    faces: SampledFaces,
    track_ids: np.ndarray,
    is_target: np.ndarray,
    class_names: Sequence[str],
    person_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray | list]:
    """The timeline's columns: one row per face, or one empty row for a sample without faces.

    ``track_ids``, ``is_target`` and ``person_ids`` hold one value per face, in the order of ``faces``;
    without ``person_ids`` each track is its own person."""
    per_sample = np.array([max(1, len(b)) for b in faces.boxes], np.int64)
    total = int(per_sample.sum())
    starts = np.cumsum(per_sample) - per_sample
    face_rows = np.concatenate(
        [np.arange(len(b), dtype=np.int64) + start for b, start in zip(faces.boxes, starts, strict=True)]
        or [np.zeros(0, np.int64)]
    )
    face = np.zeros(total, bool)
    face[face_rows] = True
    nan = np.full(total, np.nan, np.float32)
    columns: dict[str, np.ndarray | list] = {
        "session_id": [session_id] * total,
        "video": np.repeat([video_names[v] for v in faces.video_numbers], per_sample).tolist(),
        "frame_index": np.repeat(np.asarray(faces.frame_indices, np.int64), per_sample),
        "timestamp_s": np.repeat(np.asarray(faces.timestamps_s, np.float64), per_sample),
        "face_detected": face,
        "track_id": np.zeros(total, np.int32),
        "person_id": np.zeros(total, np.int32),
        "is_target": np.zeros(total, bool),
        "det_score": nan.copy(),
        "label_index": np.full(total, -1, np.int32),
        "confidence": nan.copy(),
    }
    for name in (*BBOX_COLUMNS, *(f"prob_{c}" for c in class_names)):
        columns[name] = nan.copy()
    columns["track_id"][face_rows] = track_ids
    columns["person_id"][face_rows] = track_ids if person_ids is None else person_ids
    columns["is_target"][face_rows] = is_target
    columns["det_score"][face_rows] = np.concatenate(faces.scores) if faces.scores else []
    boxes = faces.all_boxes()
    for k, name in enumerate(BBOX_COLUMNS):
        columns[name][face_rows] = boxes[:, k]
    if len(faces.probs):
        columns["label_index"][face_rows] = faces.probs.argmax(axis=1)
        columns["confidence"][face_rows] = faces.probs.max(axis=1)
        for k, name in enumerate(class_names):
            columns[f"prob_{name}"][face_rows] = faces.probs[:, k]
    return columns


def build_table(columns: dict[str, np.ndarray | list], class_names: list[str], metadata: dict[str, Any]) -> pa.Table:
    """An Arrow table from column arrays; float NaN means null in the per-face columns.

    ``label_index`` (int, -1 for no face) is turned into the dictionary-encoded ``label``.
    """
    schema = timeline_schema(class_names, metadata)
    face = np.asarray(columns["face_detected"], bool)
    columns = {**columns, **clinical_columns(np.asarray(columns["timestamp_s"], np.float64), metadata)}
    arrays = {}
    for field in schema:
        if isinstance(columns.get(field.name), pa.Array):
            arrays[field.name] = columns[field.name]
        elif field.name == "label":
            index = np.asarray(columns["label_index"], np.int32)
            arrays["label"] = pa.DictionaryArray.from_arrays(
                pa.array(index, pa.int32(), mask=index < 0), pa.array(class_names, pa.string())
            )
        elif field.name in ("track_id", "person_id"):
            arrays[field.name] = pa.array(np.asarray(columns[field.name], np.int32), pa.int32(), mask=~face)
        elif field.type == pa.float32():
            values = np.asarray(columns[field.name], np.float32)
            arrays[field.name] = pa.array(values, pa.float32(), mask=np.isnan(values))
        else:
            arrays[field.name] = pa.array(columns[field.name], field.type)
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


def clinical_columns(timestamps_s: np.ndarray, metadata: dict[str, Any]) -> dict[str, pa.Array]:
    """``patient_id`` and ``wall_time`` (the session's start plus ``timestamp_s``, in whole microseconds
    of UTC), from the footer's ``patient_id`` and ``clock``; nulls where those are unknown."""
    count = len(timestamps_s)
    start = (metadata.get("clock") or {}).get("start")
    if start is None:
        wall = pa.nulls(count, WALL_TIME)
    else:
        origin = np.datetime64(start.rstrip("Z"), "us").astype(np.int64)
        wall = pa.array(origin + np.round(timestamps_s * 1e6).astype(np.int64), pa.int64()).cast(WALL_TIME)
    patient = metadata.get("patient_id")
    return {"patient_id": pa.array([patient] * count, pa.string()), "wall_time": wall}


def timeline_path(out_dir: Path, session_id: str) -> Path:
    return out_dir / TIMELINES_DIR / f"{session_id}.parquet"


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write to a hidden temporary name in the same folder, then rename: readers of the folder
    (pyarrow ignores names starting with '.') never see a partial file, even after kill -9."""
    with atomic_path(path, what="timeline") as temporary:
        pq.write_table(table, temporary, compression="zstd")


def remove_stale_temporaries(out_dir: Path) -> int:
    """Temporary files left by a killed run (call only while holding the folder lock)."""
    folder = out_dir / TIMELINES_DIR
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``fermon`` footer metadata of a timeline file."""
    schema = pq.read_schema(path)
    return json.loads((schema.metadata or {})[METADATA_KEY])
