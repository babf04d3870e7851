"""Tracks one sample at a time (fermon.faces.track.Tracker) against the whole-session linking it replaced."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fermon.faces.track import Tracker, affinity, choose_targets, link_tracks


def whole_session_link_tracks(boxes_per_sample: Sequence[np.ndarray], min_iou=0.3, max_gap=5) -> list[np.ndarray]:
    """fermon's link_tracks as it was before tracking became incremental (commit 7cde243), verbatim."""
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


def wandering_faces(seed: int, samples: int = 400) -> list[np.ndarray]:
    """Up to four faces that drift, jump, vanish for a while and come back, and a few one-off false boxes."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(60, 580, (4, 2))
    sizes = rng.uniform(30, 140, 4)
    visible = np.ones(4, bool)
    out = []
    for _ in range(samples):
        flips = rng.random(4) < 0.04
        visible ^= flips
        centres += rng.normal(0, 6, centres.shape)
        jump = rng.random(4) < 0.02
        centres[jump] = rng.uniform(60, 580, (int(jump.sum()), 2))
        sizes = np.clip(sizes * rng.uniform(0.93, 1.07, 4), 20, 200)
        boxes = [np.r_[c - s / 2, c + s / 2] for c, s, v in zip(centres, sizes, visible) if v]
        if rng.random() < 0.05:
            c, s = rng.uniform(60, 580, 2), rng.uniform(20, 60)
            boxes.append(np.r_[c - s / 2, c + s / 2])
        order = rng.permutation(len(boxes))
        out.append(np.array([boxes[i] for i in order], np.float32).reshape(-1, 4))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_gap", [0, 2, 5])
def test_incremental_tracking_gives_the_whole_session_result(seed: int, max_gap: int) -> None:
    samples = wandering_faces(seed)
    want = whole_session_link_tracks(samples, max_gap=max_gap)
    got = link_tracks(samples, max_gap=max_gap)
    assert [g.tolist() for g in got] == [w.tolist() for w in want]
    assert len(np.unique(np.concatenate(want))) > 10  # the sequence really splits and joins tracks


def test_tracker_reports_each_track_ending_once_with_its_stats() -> None:
    samples = wandering_faces(7)
    tracker = Tracker(max_gap=5)
    ended: list[int] = []
    seen_at: dict[int, list[int]] = {}
    for sample, boxes in enumerate(samples):
        ids = tracker.update(boxes, timestamp=sample / 5)
        ended += tracker.ended
        assert not set(tracker.ended) & set(ids.tolist())  # an ended track never comes back
        for track in tracker.ended:
            assert sample - seen_at[track][-1] == 6  # reported at the first sample it is no longer live
        for track in ids.tolist():
            seen_at.setdefault(track, []).append(sample)
    assert sorted(ended + tracker.live()) == sorted(seen_at) and len(set(ended)) == len(ended)
    for track, when in seen_at.items():
        stats = tracker.stats[track]
        assert (stats.first_sample, stats.last_sample, stats.faces) == (when[0], when[-1], len(when))
        assert stats.first_time == pytest.approx(when[0] / 5) and stats.last_time == pytest.approx(when[-1] / 5)
    # Only live tracks are matched against, so the per-sample work stays small over a long session.
    assert len(tracker.live()) <= 6


def test_overlap_of_tracks() -> None:
    tracker = Tracker(max_gap=1)
    a, b = np.array([[0, 0, 10, 10]], np.float32), np.array([[100, 0, 110, 10]], np.float32)
    for boxes in (a, np.r_[a, b], b, np.zeros((0, 4), np.float32), a):
        tracker.update(boxes)
    first, second, third = (tracker.stats[t] for t in (0, 1, 2))
    assert first.overlaps(second) and second.overlaps(first) and not first.overlaps(third)
    assert not second.overlaps(third)


def test_choose_targets_takes_person_ids() -> None:
    # Two short tracks of one person outweigh one long track of another once they are one person.
    boxes = np.array([[0, 0, 10, 10]] * 6 + [[0, 0, 12, 12]] * 4, np.float32)
    tracks = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    persons = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    assert choose_targets(tracks, boxes, "largest") == {2}
    assert choose_targets(persons, boxes, "largest") == {0}


def test_a_track_ends_after_a_gap_in_seconds_and_at_end_all() -> None:
    box = np.array([[100, 100, 200, 200]], np.float32)
    tracker = Tracker(max_gap=5, max_gap_s=1.5)
    first = tracker.update(box, timestamp=0.0)
    # Two samples later, but 3 s later on the clock (sampling skipped a decode gap or a pause): a new track.
    later = tracker.update(box, timestamp=3.0)
    assert later[0] != first[0] and tracker.ended == [int(first[0])]
    again = tracker.update(box, timestamp=3.2)
    assert again[0] == later[0]
    assert tracker.end_all() == [int(later[0])] and tracker.live() == []
    assert tracker.update(box, timestamp=3.4)[0] not in (first[0], later[0])  # the next video starts afresh


def test_a_veto_keeps_a_face_off_the_track_geometry_gives_it() -> None:
    tracker = Tracker()
    box = np.array([[100, 100, 200, 200]], np.float32)
    (track,) = tracker.update(box, timestamp=0.0)
    proposal = tracker.propose(box + 2, timestamp=0.2)  # the same place: geometry says the same track
    assert proposal.affinity[0, 0] > 0.9 and not proposal.doubtful[0]
    (other,) = tracker.commit(proposal, veto=np.array([[True]]))  # appearance says someone else
    assert other != track and set(tracker.live()) == {int(track), int(other)}


def test_doubtful_continuations_are_marked() -> None:
    tracker = Tracker()
    tracker.update(np.array([[100, 100, 200, 200]], np.float32), timestamp=0.0)
    jump = tracker.propose(np.array([[200, 100, 300, 200]], np.float32), timestamp=0.2)  # no overlap, near
    assert jump.affinity[0, 0] > 0 and jump.doubtful[0]
    two = tracker.propose(np.array([[100, 100, 200, 200], [150, 100, 250, 200]], np.float32), timestamp=0.2)
    assert two.doubtful.all()  # two candidates for one track
