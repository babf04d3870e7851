"""Stage: link faces across samples into tracks (greedy IoU), and mark the patient's track.

Pure geometry on small arrays: no I/O, no models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TARGET_MODES = ("largest", "center", "all")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N,4) with every box in ``b`` (M,4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).astype(np.float32)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def affinity(boxes: np.ndarray, last: np.ndarray, min_iou: float = 0.3, max_shift: float = 1.5) -> np.ndarray:
    """How well each new box continues each track's last box; 0 means it cannot.

    Overlap (IoU >= ``min_iou``) comes first. A face that moved further between two samples than its
    own width (a turn of the head at 5 samples a second) may still continue a track when its centre is
    within ``max_shift`` face sizes and its size is similar; such a match ranks below any overlap.
    """
    iou = iou_matrix(boxes, last)
    size = np.sqrt(np.maximum(_areas(last), 1e-9))
    centres_new = (boxes[:, :2] + boxes[:, 2:]) / 2
    centres_old = (last[:, :2] + last[:, 2:]) / 2
    shift = np.linalg.norm(centres_new[:, None] - centres_old[None], axis=2) / size[None]
    ratio = np.sqrt(_areas(boxes))[:, None] / size[None]
    near = (shift < max_shift) & (ratio > 2 / 3) & (ratio < 3 / 2)
    return np.where(iou >= min_iou, iou, np.where(near, min_iou * (1 - shift / max_shift), 0.0)).astype(np.float32)


def link_tracks(boxes_per_sample: Sequence[np.ndarray], min_iou: float = 0.3, max_gap: int = 5) -> list[np.ndarray]:
    """A track id for every box of every sample (same order as given).

    Each box joins the live track it continues best (:func:`affinity`; greedy, best pair first); a
    track not seen for more than ``max_gap`` samples ends, so a face that leaves and returns later
    starts a new track rather than being joined to someone else's.
    """
    last_box: dict[int, np.ndarray] = {}
    last_seen: dict[int, int] = {}
    next_id = 0
    result = []
    for sample, boxes in enumerate(boxes_per_sample):
        live = [t for t in last_box if sample - last_seen[t] <= max_gap]
        ids = np.full(len(boxes), -1, np.int32)
        if live and len(boxes):
            overlap = affinity(np.asarray(boxes, np.float32), np.stack([last_box[t] for t in live]), min_iou)
            for flat in np.argsort(-overlap, axis=None):
                row, col = divmod(int(flat), len(live))
                if overlap[row, col] <= 0:
                    break
                if ids[row] < 0 and live[col] not in ids:
                    ids[row] = live[col]
        for row in range(len(boxes)):
            if ids[row] < 0:
                ids[row] = next_id
                next_id += 1
            last_box[int(ids[row])] = np.asarray(boxes[row], np.float32)
            last_seen[int(ids[row])] = sample
        result.append(ids)
    return result


def choose_targets(
    track_ids: np.ndarray, boxes: np.ndarray, mode: str = "largest", frame_size: tuple[int, int] | None = None
) -> set[int]:
    """The target track(s) among all face rows of a session.

    ``largest``: the track with the largest summed box area, that is size times presence (the patient is
    usually nearest the camera and in view longest; a big face seen once does not outrank them).
    ``center``: the track whose mean box centre is closest to the frame centre. ``all``: every track.
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown target mode {mode!r}")
    unique = np.unique(track_ids)
    if len(unique) == 0:
        return set()
    if mode == "all":
        return {int(t) for t in unique}
    if mode == "largest":
        areas = _areas(boxes)
        scores = [float(np.sum(areas[track_ids == t])) for t in unique]
        return {int(unique[int(np.argmax(scores))])}
    height, width = frame_size or (0, 0)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    middle = np.array([width / 2, height / 2], np.float32)
    distances = [float(np.linalg.norm(centres[track_ids == t].mean(axis=0) - middle)) for t in unique]
    return {int(unique[int(np.argmin(distances))])}
