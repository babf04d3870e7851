"""Tracks into persons: joined by descriptor where a track has one, else by position and size.

A track is one person (:mod:`fermon.people.appearance`), so persons are built from tracks in the order
they began, each joining the person it is nearest, in bounded time and memory (a night of 10,000
tracks is linked in seconds, with no track-by-track matrix):

- **by descriptor**: a track joins the person whose kept track descriptors (at most
  ``PERSON_EXEMPLARS``) are on average within ``DISTANCE_THRESHOLD`` of its own and none further than
  ``LINK_GUARD``, so one odd track cannot chain two people; never a person seen at the same time;
- then persons themselves are merged by the same rule, nearest first, so that a person who began on
  a poor chip is not left split;
- **by position**: a track without a good enough face joins the person whose track ended just before
  it (or began just after it) at the same place and size, but stays a person of its own where the
  tracks on either side are different people by their descriptors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fermon.faces.track import TrackStats, overlapping
from fermon.people.appearance import CHECK_INTERVAL_S, SAME_TRACK_MAX, SIGNATURE_TRIGGER
from fermon.people.chips import CHIP_TEMPLATE, IDENTITY_MODEL

# Measured (benchmarks/identity_calibration.py photos, reports/identity-photos.json): one man's chips
# from five photos taken years apart are 0.26-0.52 apart; two different people's 0.80-0.86 in
# portraits, but 0.55-0.58 in insightface's group photo (100 px faces, one turned). dlib's own rule is
# 0.6 on its chips. Tracks of one session share a camera and a light, and a track's mean is steadier
# than one chip: 0.5 keeps the nearest strangers apart with a margin, at the cost of leaving a patient
# split across very different light (a person split in two is counted; a visitor taken for the
# patient is not).
DISTANCE_THRESHOLD = 0.5
LINK_GUARD = 0.6  # no track descriptor of a person may be further than this from a track joining it
PERSON_EXEMPLARS = 64  # track descriptors a person keeps for comparisons (spread over the session)
MAX_POSITION_GAP_S = 10.0  # position and size continuity links tracks at most this far apart
# ...and only where the face comes back within this many face sizes of where it went, at a similar size
# (stricter than tracking's own continuity: the gap leaves room for someone else to sit there).
MAX_POSITION_SHIFT = 0.75
MAX_SIZE_RATIO = 4 / 3


def identity_settings() -> dict[str, Any]:
    """Every constant that can change whose face a row is: part of the run's option fingerprint."""
    return {
        "model": IDENTITY_MODEL,
        "chip_template": CHIP_TEMPLATE,
        "same_track_max": SAME_TRACK_MAX,
        "check_interval_s": CHECK_INTERVAL_S,
        "signature_trigger": SIGNATURE_TRIGGER,
        "distance_threshold": DISTANCE_THRESHOLD,
        "link_guard": LINK_GUARD,
        "person_exemplars": PERSON_EXEMPLARS,
        "max_position_gap_s": MAX_POSITION_GAP_S,
        "max_position_shift": MAX_POSITION_SHIFT,
        "max_size_ratio": MAX_SIZE_RATIO,
        "version": 2,  # the linking method itself
    }


@dataclass
class PersonLinks:
    """Each track's person (numbered by first appearance), and how many joins came from what."""

    person_of_track: dict[int, int]
    by_embedding: int = 0
    by_position: int = 0
    merged: int = 0  # persons merged after the first pass
    refused_by_guard: int = 0  # joins a near average allowed but one far track descriptor refused
    kept_apart_by_position: int = 0  # faceless tracks between two different persons, left alone
    tracks_by_position: set[int] = field(default_factory=set)
    centroids: dict[int, np.ndarray] = field(default_factory=dict)  # person -> mean descriptor (memory only)
    exemplars: dict[int, np.ndarray] = field(default_factory=dict)  # person -> (k, 128) descriptors

    @property
    def persons(self) -> int:
        return len(set(self.person_of_track.values()))


class _Person:
    """A person being built: its tracks' descriptors (a bounded, spread sample), their time spans."""

    def __init__(self, track: int, descriptor: np.ndarray, first: int, last: int) -> None:
        self.tracks = [track]
        self.exemplars = [descriptor]
        self.total, self.count = descriptor.astype(np.float64), 1
        self.first, self.last = [first], [last]

    def overlaps(self, first: int, last: int) -> bool:
        return bool(overlapping(np.asarray(self.first), np.asarray(self.last), first, last).any())

    def distances(self, descriptor: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.asarray(self.exemplars) - descriptor[None], axis=1)

    def absorb(self, other: _Person) -> None:
        self.tracks += other.tracks
        self.first += other.first
        self.last += other.last
        self.total, self.count = self.total + other.total, self.count + other.count
        joined = self.exemplars + other.exemplars
        step = max(1, len(joined) // PERSON_EXEMPLARS + (len(joined) % PERSON_EXEMPLARS > 0))
        self.exemplars = joined[::step][:PERSON_EXEMPLARS]

    def add(self, track: int, descriptor: np.ndarray, first: int, last: int) -> None:
        self.absorb(_Person(track, descriptor, first, last))


def _acceptable(distances: np.ndarray, threshold: float, guard: float) -> bool:
    return bool(distances.mean() <= threshold and distances.max() <= guard)


def _link_by_descriptor(
    stats: Mapping[int, TrackStats], descriptors: Mapping[int, np.ndarray], threshold: float, guard: float
) -> tuple[list[_Person], int, int]:
    persons: list[_Person] = []
    joins = refused = 0
    for track in sorted((t for t in stats if t in descriptors), key=lambda t: (stats[t].first_sample, t)):
        first, last, descriptor = stats[track].first_sample, stats[track].last_sample, descriptors[track]
        best, best_mean = None, np.inf
        for person in persons:
            if person.overlaps(first, last):
                continue
            distances = person.distances(descriptor)
            if distances.mean() <= threshold and distances.mean() < best_mean:
                if distances.max() > guard:
                    refused += 1
                    continue
                best, best_mean = person, distances.mean()
        if best is None:
            persons.append(_Person(track, descriptor, first, last))
        else:
            best.add(track, descriptor, first, last)
            joins += 1
    return persons, joins, refused


def _merge_persons(persons: list[_Person], threshold: float, guard: float) -> int:
    """Merge the nearest acceptable pair of persons until none is left (persons are few)."""
    merged = 0
    while True:
        best = None
        for i, a in enumerate(persons):
            for j in range(i + 1, len(persons)):
                b = persons[j]
                if any(b.overlaps(f, la) for f, la in zip(a.first, a.last)):
                    continue
                distances = np.linalg.norm(np.asarray(a.exemplars)[:, None] - np.asarray(b.exemplars)[None], axis=2)
                if _acceptable(distances, threshold, guard) and (best is None or distances.mean() < best[0]):
                    best = (distances.mean(), i, j)
        if best is None:
            return merged
        _, i, j = best
        persons[i].absorb(persons.pop(j))
        merged += 1


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

    def neighbours(self, track: int, max_gap_s: float) -> tuple[int | None, int | None]:
        """The nearest track in time that ends shortly before ``track`` starts where it starts, and the
        nearest that starts shortly after it ends where it ends, at a similar size (None where none)."""
        i = self.index[track]
        before = (self.last < self.first[i]) & (self.start[i] - self.end <= max_gap_s)
        after = (self.first > self.last[i]) & (self.start - self.end[i] <= max_gap_s)
        before[before] = same_place(self.last_box[before], self.first_box[i][None])
        after[after] = same_place(self.last_box[i][None], self.first_box[after])
        previous = self.ids[int(np.flatnonzero(before)[np.argmax(self.end[before])])] if before.any() else None
        following = self.ids[int(np.flatnonzero(after)[np.argmin(self.start[after])])] if after.any() else None
        return previous, following

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
    guard: float = LINK_GUARD,
) -> PersonLinks:
    """Join tracks into persons: by descriptor where a track has one, else by position and size.

    Two tracks that overlap in time are never one person. Persons are numbered 0, 1, ... by their
    first track (tracks are numbered by first appearance).
    """
    persons, by_embedding, refused = _link_by_descriptor(stats, descriptors, threshold, guard)
    merged = _merge_persons(persons, threshold, guard)
    group_of = {t: index for index, person in enumerate(persons) for t in person.tracks}
    members = {index: list(person.tracks) for index, person in enumerate(persons)}
    by_position = kept_apart = 0
    placed: set[int] = set()
    spans = _Spans(stats) if len(stats) > len(group_of) else None
    for track in sorted((t for t in stats if t not in descriptors), key=lambda t: (stats[t].first_sample, t)):
        previous, following = spans.neighbours(track, max_gap_s)
        sides = {group_of[t] for t in (previous, following) if t is not None and t in group_of}
        if len({g for g in sides if any(m in descriptors for m in members[g])}) > 1:
            kept_apart += 1  # the faces on either side are different people: this one could be either
        else:
            for other in (previous, following):
                if other is None or other not in group_of:
                    continue
                group = group_of[other]
                if not spans.overlap([track], members[group]):
                    group_of[track] = group
                    members[group].append(track)
                    placed.add(track)
                    by_position += 1
                    break
        if track not in group_of:
            group_of[track] = len(members)
            members[group_of[track]] = [track]
    roots = sorted(members, key=lambda g: min(members[g]))
    number = {group: index for index, group in enumerate(roots)}
    person_of_track = {t: number[group_of[t]] for t in stats}
    centroids, exemplars = {}, {}
    for index, person in enumerate(persons):
        centroids[number[index]] = (person.total / person.count).astype(np.float32)
        exemplars[number[index]] = np.asarray(person.exemplars, np.float32)
    return PersonLinks(
        person_of_track, by_embedding, by_position, merged, refused, kept_apart, placed, centroids, exemplars
    )


def identity_footer(
    links: PersonLinks,
    tracks: int,
    embedded: int,
    chips: int,
    model: bool,
    track_ends: dict[str, int],
    rows_by_position: int,
) -> dict[str, Any]:
    """What the timeline's footer says about linking: counts, the thresholds and the model, no descriptors."""
    return {
        "model": IDENTITY_MODEL if model else None,
        "chip_template": CHIP_TEMPLATE if model else None,
        "distance_threshold": DISTANCE_THRESHOLD if model else None,
        "same_track_max": SAME_TRACK_MAX if model else None,
        "max_position_gap_s": MAX_POSITION_GAP_S,
        "max_position_shift": MAX_POSITION_SHIFT,
        "tracks": tracks,
        "tracks_embedded": embedded,
        "chips_embedded": chips,
        "persons": links.persons,
        "links": {"embedding": links.by_embedding, "merged": links.merged, "position": links.by_position},
        "kept_apart": {"guard": links.refused_by_guard, "position_between_persons": links.kept_apart_by_position},
        "track_ends": track_ends,
        "rows_by_position": rows_by_position,
    }
