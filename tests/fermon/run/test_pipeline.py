"""Decoding ahead in a thread and detecting on several threads: same results, same order, no leaks."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import pytest

from fermon.faces.detector import CenterFaceDetector, detect_in_parallel, detect_tracked, detect_whole
from fermon.video import read_ahead


def _threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_read_ahead_keeps_order_and_finishes() -> None:
    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))
    assert not _threads_named("fermon-decode")


def test_read_ahead_raises_the_producers_error_in_the_consumer() -> None:
    def broken():
        yield 1
        raise ValueError("damaged stretch")

    seen = []
    with pytest.raises(ValueError, match="damaged stretch"):
        for item in read_ahead(broken()):
            seen.append(item)
    assert seen == [1]
    assert not _threads_named("fermon-decode")


def test_read_ahead_stops_the_producer_when_the_consumer_stops() -> None:
    produced = []

    def endless():
        count = 0
        while True:
            produced.append(count)
            yield count
            count += 1

    for item in read_ahead(endless(), depth=2):
        if item == 3:
            break
    assert not _threads_named("fermon-decode")
    assert len(produced) <= 3 + 1 + 2 + 1  # what was consumed, the queue, one blocked put


@dataclass
class _Batch:
    frames: np.ndarray


def test_parallel_detection_matches_serial_in_order(group_photo: np.ndarray, astronaut: np.ndarray) -> None:
    detector = CenterFaceDetector(min_face=64, threads=1)
    frames = [group_photo[:360, :640], np.ascontiguousarray(np.fliplr(group_photo[:360, :640]))]
    empty = np.full_like(frames[0], 128)
    batches = [_Batch(np.stack([frames[i % 2], empty, frames[(i + 1) % 2]])) for i in range(6)]
    serial = [detector.detect(list(batch.frames)) for batch in batches]
    parallel = list(detect_in_parallel(partial(detect_whole, detector), batches, threads=3))
    assert all(got is sent for (got, _), sent in zip(parallel, batches, strict=True))
    assert sum(len(d) for found in serial for d in found) > 6  # several faces per photo
    for expected, (_, found) in zip(serial, parallel, strict=True):
        for one, other in zip(expected, found, strict=True):
            np.testing.assert_allclose(one.boxes, other.boxes, atol=1e-4)
            np.testing.assert_allclose(one.scores, other.scores, atol=1e-6)
    assert all(len(found[1]) == 0 for _, found in parallel)
    assert not _threads_named("fermon-detect")


def _scene(astronaut: np.ndarray, left: int | None) -> np.ndarray:
    """A 640x360 grey frame with the astronaut's head and shoulders (face ~70 px) at ``left``, or empty."""
    frame = np.full((360, 640, 3), 90, np.uint8)
    if left is not None:
        head = cv2.resize(astronaut[0:300, 90:390], (150, 150), interpolation=cv2.INTER_AREA)
        frame[100:250, left : left + 150] = head
    return frame


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def test_tracked_detection_follows_a_moving_face_like_whole_frames(astronaut: np.ndarray) -> None:
    detector = CenterFaceDetector(threads=1)
    # The face moves 20 px a sample, leaves for two samples, and comes back elsewhere.
    lefts = [100, 120, 140, 160, None, None, 400, 420]
    frames = [_scene(astronaut, left) for left in lefts]
    whole = detect_whole(detector, frames)
    tracked = detect_tracked(detector, frames)
    assert [len(found) > 0 for found in whole] == [left is not None for left in lefts]
    assert [len(found) for found in tracked] == [len(found) for found in whole]
    for a, b in zip(whole, tracked, strict=True):
        if len(a):
            assert _iou(a.boxes[0], b.boxes[0]) > 0.7
            eye_distance = np.linalg.norm(a.landmarks[0, 1] - a.landmarks[0, 0])
            assert np.abs(a.landmarks[0] - b.landmarks[0]).max() < 0.25 * eye_distance


def test_region_search_maps_back_to_image_coordinates_and_clips(astronaut: np.ndarray) -> None:
    detector = CenterFaceDetector(threads=1)
    frame = _scene(astronaut, 490)  # the head touches the right edge
    found = detector.detect([frame])[0]
    again = detector.detect_regions(frame, found.boxes[:1])
    assert len(again) == 1
    assert again.boxes[0, 2] <= 640 and _iou(found.boxes[0], again.boxes[0]) > 0.7
    nothing = detector.detect_regions(_scene(astronaut, None), found.boxes[:1])
    assert len(nothing) == 0
