"""Tracks into persons: joined by descriptor where a track has one, else by position and size.

Tracks that never overlap in time and whose descriptors are close are one person (average-linkage
clustering with the overlap as a cannot-link); a track without a good enough face joins the person
whose track ended just before it, or began just after it, at the same place and size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fermon.faces.track import TrackStats, overlapping
from fermon.people.chips import CHIP_TEMPLATE, IDENTITY_MODEL

# Changes whenever linking could give other persons for the same faces (the run fingerprint holds it).
IDENTITY_VERSION = f"{IDENTITY_MODEL}/{CHIP_TEMPLATE}/1"

# Measured on fermon's own chips (benchmarks/identity_calibration.py, reports/identity-calibration.json):
# one face rendered twice as a video shows it is at most 0.38 from itself (99% below 0.35), two of the
# eight different colour faces at least 0.53 apart (99% above 0.57; FERPlus faces: 99% above 0.55).
# dlib's own 0.6 is for its own chips.
DISTANCE_THRESHOLD = 0.45
MAX_POSITION_GAP_S = 10.0  # position and size continuity links tracks at most this far apart
# ...and only where the face comes back within this many face sizes of where it went, at a similar size
# (stricter than tracking's own continuity: the gap leaves room for someone else to sit there).
MAX_POSITION_SHIFT = 0.75
MAX_SIZE_RATIO = 4 / 3


@dataclass
class PersonLinks:
    """Each track's person (numbered by first appearance), and how many joins came from what."""

    person_of_track: dict[int, int]
    by_embedding: int = 0
    by_position: int = 0
    centroids: dict[int, np.ndarray] = field(default_factory=dict)  # person -> mean descriptor (in memory only)

    @property
    def persons(self) -> int:
        return len(set(self.person_of_track.values()))


class _Groups:
    """Union-find over tracks, keeping each group's tracks so that overlaps can be checked."""

    def __init__(self, tracks: Iterable[int]) -> None:
        self.parent = {t: t for t in tracks}
        self.members = {t: [t] for t in self.parent}

    def find(self, track: int) -> int:
        while self.parent[track] != track:
            self.parent[track] = self.parent[self.parent[track]]
            track = self.parent[track]
        return track

    def join(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.members[a] += self.members.pop(b)


def _cluster(ids: list[int], stats: Mapping[int, TrackStats], descriptors: Mapping[int, np.ndarray], threshold: float):
    """Average-linkage clustering of embedded tracks; tracks that overlap in time never share a cluster.

    Yields (a, b) for each join, closest first, while the closest clusters are nearer than ``threshold``.
    """
    if len(ids) < 2:
        return
    vectors = np.stack([descriptors[t] for t in ids]).astype(np.float64)
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    first = np.array([stats[t].first_sample for t in ids])
    last = np.array([stats[t].last_sample for t in ids])
    distance[overlapping(first[:, None], last[:, None], first[None], last[None])] = np.inf  # includes the diagonal
    size = np.ones(len(ids))
    while True:
        i, j = divmod(int(np.argmin(distance)), len(ids))
        if not distance[i, j] < threshold:
            return
        # Lance-Williams for the average: an infinite (overlapping) member pair keeps the pair apart.
        merged = (size[i] * distance[i] + size[j] * distance[j]) / (size[i] + size[j])
        distance[i, :] = distance[:, i] = merged
        distance[j, :] = distance[:, j] = np.inf
        distance[i, i] = np.inf
        size[i] += size[j]
        yield ids[i], ids[j]


class _Spans:
    """The tracks' first and last samples, times and boxes as arrays, for vectorised comparisons."""

    def __init__(self, stats: Mapping[int, TrackStats]) -> None:
        self.ids = list(stats)
        self.index = {t: i for i, t in enumerate(self.ids)}
        self.first = np.array([stats[t].first_sample for t in self.ids])
        self.last = np.array([stats[t].last_sample for t in self.ids])
        self.start = np.array([stats[t].first_time for t in self.ids], np.float64)
        self.end = np.array([stats[t].last_time for t in self.ids], np.float64)
        self.first_box = np.stack([stats[t].first_box for t in self.ids]).astype(np.float64)
        self.last_box = np.stack([stats[t].last_box for t in self.ids]).astype(np.float64)

    def partners(self, track: int, max_gap_s: float) -> list[int]:
        """Tracks that end shortly before ``track`` starts (or start shortly after it ends) where it
        starts (ends), at a similar size; nearest in time first."""
        i = self.index[track]
        before = (self.last < self.first[i]) & (self.start[i] - self.end <= max_gap_s)
        after = (self.first > self.last[i]) & (self.start - self.end[i] <= max_gap_s)
        near = np.zeros(len(self.ids), bool)
        near[before] = same_place(self.last_box[before], self.first_box[i][None])
        near[after] = same_place(self.last_box[i][None], self.first_box[after])
        gaps = np.where(before, self.start[i] - self.end, self.start - self.end[i])
        return [self.ids[j] for j in np.flatnonzero(near)[np.argsort(gaps[near], kind="stable")]]

    def overlap(self, a: list[int], b: list[int]) -> bool:
        """Whether any track of ``a`` overlaps any track of ``b`` in time."""
        ia, ib = [self.index[t] for t in a], [self.index[t] for t in b]
        fa, la, fb, lb = self.first[ia], self.last[ia], self.first[ib], self.last[ib]
        return bool(overlapping(fa[:, None], la[:, None], fb[None], lb[None]).any())


def same_place(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Whether face boxes ``after`` (N, 4) are where ``before`` (N or 1, 4) were, at about their size."""
    size_before = np.sqrt(np.maximum((before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]), 1e-9))
    size_after = np.sqrt(np.maximum((after[:, 2] - after[:, 0]) * (after[:, 3] - after[:, 1]), 1e-9))
    centres = (after[:, :2] + after[:, 2:]) / 2 - (before[:, :2] + before[:, 2:]) / 2
    shift = np.linalg.norm(centres, axis=1) / size_before
    ratio = size_after / size_before
    return (shift <= MAX_POSITION_SHIFT) & (ratio >= 1 / MAX_SIZE_RATIO) & (ratio <= MAX_SIZE_RATIO)


def link_persons(
    stats: Mapping[int, TrackStats],
    descriptors: Mapping[int, np.ndarray],
    threshold: float = DISTANCE_THRESHOLD,
    max_gap_s: float = MAX_POSITION_GAP_S,
) -> PersonLinks:
    """Join tracks into persons: by descriptor where a track has one, else by position and size.

    Two tracks that overlap in time are never one person. Persons are numbered 0, 1, ... by their
    first track (tracks are numbered by first appearance).
    """
    groups = _Groups(stats)
    embedded = [t for t in stats if t in descriptors]
    by_embedding = 0
    for a, b in _cluster(embedded, stats, descriptors, threshold):
        groups.join(a, b)
        by_embedding += 1
    by_position = 0
    spans = _Spans(stats) if len(stats) > len(embedded) else None
    for track in sorted((t for t in stats if t not in descriptors), key=lambda t: stats[t].first_sample):
        for other in spans.partners(track, max_gap_s):
            mine, theirs = groups.find(track), groups.find(other)
            if mine != theirs and not spans.overlap(groups.members[mine], groups.members[theirs]):
                groups.join(theirs, mine)
                by_position += 1
                break
    roots = sorted({groups.find(t) for t in stats}, key=lambda r: min(groups.members[r]))
    number = {root: index for index, root in enumerate(roots)}
    person_of_track = {t: number[groups.find(t)] for t in stats}
    centroids = {}
    for root, person in number.items():
        vectors = [descriptors[t] for t in groups.members[root] if t in descriptors]
        if vectors:
            centroids[person] = np.mean(vectors, axis=0)
    return PersonLinks(person_of_track, by_embedding, by_position, centroids)


def identity_footer(links: PersonLinks, tracks: int, embedded: int, chips: int, model: bool) -> dict[str, Any]:
    """What the timeline's footer says about linking: counts, the threshold and the model, no descriptors."""
    return {
        "model": IDENTITY_MODEL if model else None,
        "chip_template": CHIP_TEMPLATE if model else None,
        "distance_threshold": DISTANCE_THRESHOLD if model else None,
        "max_position_gap_s": MAX_POSITION_GAP_S,
        "max_position_shift": MAX_POSITION_SHIFT,
        "tracks": tracks,
        "tracks_embedded": embedded,
        "chips_embedded": chips,
        "persons": links.persons,
        "links": {"embedding": links.by_embedding, "position": links.by_position},
    }
