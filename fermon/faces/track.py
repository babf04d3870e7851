"""Stage: link faces across samples into tracks (greedy IoU), and choose the target among groups of them.

Pure geometry on small arrays: no I/O, no models. Tracks are joined into persons by
:mod:`fermon.people.linking`; :func:`choose_targets` takes either ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

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


def overlapping(first_a: ArrayLike, last_a: ArrayLike, first_b: ArrayLike, last_b: ArrayLike) -> np.ndarray:
    """Whether closed intervals ``[first_a, last_a]`` and ``[first_b, last_b]`` share a point, elementwise
    with numpy broadcasting: the one rule for "these tracks were seen at the same time"."""
    return (np.asarray(first_a) <= np.asarray(last_b)) & (np.asarray(first_b) <= np.asarray(last_a))


@dataclass
class TrackStats:
    """What person linking needs of one track: when it was seen, where it began and ended, how often."""

    first_sample: int
    last_sample: int
    first_time: float
    last_time: float
    first_box: np.ndarray
    last_box: np.ndarray
    faces: int = 1

    def overlaps(self, other: TrackStats) -> bool:
        return bool(overlapping(self.first_sample, self.last_sample, other.first_sample, other.last_sample))


@dataclass
class Proposal:
    """One sample's geometric association, before it is committed: what appearance may veto.

    ``affinity`` is (faces, live tracks) as :func:`affinity` gives it; ``doubtful`` marks the faces whose
    continuation geometry alone cannot vouch for: a jump rather than an overlap, two candidates for one
    track (or two tracks for one face), a track that comes back after missed samples, or no track at all
    while others are live (a new face, or someone else in an old place)."""

    sample: int
    timestamp: float
    boxes: np.ndarray
    live: list[int]
    affinity: np.ndarray
    doubtful: np.ndarray


class Tracker:
    r"""Greedy IoU tracking one sample at a time (see :func:`link_tracks`), for a session's loop.

    Each sample is :meth:`propose`\ d, then :meth:`commit`\ ted with an optional veto (faces that appearance
    says are someone else than a track's person); :meth:`update` does both with geometry alone. A track
    ends when it is not seen for more than ``max_gap`` samples or ``max_gap_s`` seconds, and at
    :meth:`end_all` (the end of a video, a decode gap). After each commit ``ended`` holds the tracks that
    stopped being live at that sample, so that their per-track work can be finished while the session
    goes on; :meth:`live` gives those still open. ``stats`` keeps a small record per track.
    """

    def __init__(self, min_iou: float = 0.3, max_gap: int = 5, max_gap_s: float = 1.5) -> None:
        self.min_iou, self.max_gap, self.max_gap_s = min_iou, max_gap, max_gap_s
        self.stats: dict[int, TrackStats] = {}
        self.ended: list[int] = []
        self._live: dict[int, None] = {}  # live track ids in creation order (ties in matching follow it)
        self._sample = 0

    def live(self) -> list[int]:
        return list(self._live)

    def end_all(self) -> list[int]:
        """End every live track (the video ended, or decoding skipped part of it); returns them."""
        ended, self._live = list(self._live), {}
        return ended

    def propose(self, boxes: np.ndarray, timestamp: float | None = None) -> Proposal:
        """The geometric association of this sample's boxes (N, 4) with the live tracks."""
        sample = self._sample
        stamp = float(sample if timestamp is None else timestamp)
        max_gap_s = self.max_gap_s if timestamp is not None else np.inf  # samples alone: no clock to read
        self.ended = [
            t
            for t in self._live
            if sample - self.stats[t].last_sample > self.max_gap or stamp - self.stats[t].last_time > max_gap_s
        ]
        for track in self.ended:
            del self._live[track]
        live = list(self._live)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = affinity(boxes, np.stack([self.stats[t].last_box for t in live])) if live and len(boxes) else None
        if scores is None:
            scores = np.zeros((len(boxes), len(live)), np.float32)
        possible = scores > 0
        best = np.argmax(scores, axis=1) if live else np.zeros(len(boxes), int)
        returning = np.array([bool(live) and sample - self.stats[live[c]].last_sample > 1 for c in best], bool)
        doubtful = (
            (
                (possible.sum(axis=1) > 1)
                | (possible & (possible.sum(axis=0) > 1)[None]).any(axis=1)
                | (possible.any(axis=1) & (scores.max(axis=1, initial=0) < self.min_iou))
                | (possible.any(axis=1) & returning.reshape(-1))
                | (~possible.any(axis=1) & bool(live))
            )
            if len(boxes)
            else np.zeros(0, bool)
        )
        return Proposal(sample, stamp, boxes, live, scores, doubtful)

    def commit(self, proposal: Proposal, veto: np.ndarray | None = None) -> np.ndarray:
        """Track ids of the proposal's boxes, in the order given: greedy, best pair first, skipping the
        pairs ``veto`` (faces, live tracks) forbids; a box left over starts a new track."""
        if proposal.sample != self._sample:
            raise ValueError("commit the proposal of the current sample")
        self._sample += 1
        live, scores = proposal.live, proposal.affinity
        if veto is not None:
            scores = np.where(veto, 0.0, scores)
        ids = np.full(len(proposal.boxes), -1, np.int32)
        for flat in np.argsort(-scores, axis=None, kind="stable"):
            row, col = divmod(int(flat), len(live))
            if scores[row, col] <= 0:
                break
            if ids[row] < 0 and live[col] not in ids:
                ids[row] = live[col]
        for row, box in enumerate(proposal.boxes):
            if ids[row] < 0:
                ids[row] = len(self.stats)
                self.stats[int(ids[row])] = TrackStats(
                    proposal.sample, proposal.sample, proposal.timestamp, proposal.timestamp, box, box, 0
                )
                self._live[int(ids[row])] = None
            stats = self.stats[int(ids[row])]
            stats.last_sample, stats.last_time, stats.last_box = proposal.sample, proposal.timestamp, box
            stats.faces += 1
        return ids

    def update(self, boxes: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        """Track ids of this sample's boxes (N, 4), in the order given, by geometry alone."""
        return self.commit(self.propose(boxes, timestamp))


def link_tracks(boxes_per_sample: Sequence[np.ndarray], min_iou: float = 0.3, max_gap: int = 5) -> list[np.ndarray]:
    """A track id for every box of every sample (same order as given).

    Each box joins the live track it continues best (:func:`affinity`; greedy, best pair first); a
    track not seen for more than ``max_gap`` samples ends, so a face that leaves and returns later
    starts a new track rather than being joined to someone else's. :class:`Tracker` does the same
    one sample at a time.
    """
    tracker = Tracker(min_iou, max_gap)
    return [tracker.update(boxes) for boxes in boxes_per_sample]


def choose_targets(
    group_ids: np.ndarray, boxes: np.ndarray, mode: str = "largest", frame_size: tuple[int, int] | None = None
) -> set[int]:
    """The target group(s) among all face rows of a session: groups are persons (or tracks), one id a row.

    ``largest``: the group with the largest summed box area, that is size times presence (the patient is
    usually nearest the camera and in view longest; a big face seen once does not outrank them).
    ``center``: the group whose mean box centre is closest to the frame centre. ``all``: every group.
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"unknown target mode {mode!r}")
    unique = np.unique(group_ids)
    if len(unique) == 0:
        return set()
    if mode == "all":
        return {int(t) for t in unique}
    if mode == "largest":
        areas = _areas(boxes)
        scores = [float(np.sum(areas[group_ids == t])) for t in unique]
        return {int(unique[int(np.argmax(scores))])}
    height, width = frame_size or (0, 0)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    middle = np.array([width / 2, height / 2], np.float32)
    distances = [float(np.linalg.norm(centres[group_ids == t].mean(axis=0) - middle)) for t in unique]
    return {int(unique[int(np.argmin(distances))])}
