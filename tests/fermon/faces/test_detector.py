"""Every registered detector, through the registry: the same protocol, the same faces.

Parametrised over ``fermon.faces.detector.DETECTORS``, so a new detector is tested by registering it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fermon.errors import ModelError
from fermon.faces.detector import DETECTORS, Detections, bundled_centerface, create_detector, resolve_detector


@pytest.fixture(params=list(DETECTORS), scope="module")
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def _well_formed(found: Detections) -> None:
    count = len(found)
    assert found.boxes.shape == (count, 4) and found.landmarks.shape == (count, 5, 2)
    assert found.boxes.dtype == found.scores.dtype == found.landmarks.dtype == np.float32
    assert np.all(np.diff(found.scores) <= 0), "sorted by score"


def test_detector_follows_the_protocol(name: str, stand_in_weights: Callable[[str], Path], astronaut) -> None:
    path = stand_in_weights(name)
    assert resolve_detector(name, path)[0] == name
    detector = create_detector(name, path, threads=1)
    assert type(detector) is DETECTORS[name] and detector.name == name
    assert len(detector.weights_sha256) == 64
    assert detector.detect([]) == []
    found = detector.detect([astronaut, astronaut])
    assert len(found) == 2 and all(len(f) >= 1 for f in found)
    for one in found:
        _well_formed(one)
    if detector.supports_regions:
        again = detector.detect_regions(astronaut, found[0].boxes[:1])
        assert len(again) >= 1
        _well_formed(again)


def _real_detector(name: str):
    """The detector built from the real weights it finds on this machine, or a skip."""
    weights = DETECTORS[name].find_weights(None)
    if weights is None:
        pytest.skip(f"no {name} weights on this machine")
    return create_detector(name, weights, threads=1)


def test_detector_finds_the_faces_of_a_group_photo(name: str, group_photo: np.ndarray) -> None:
    found = _real_detector(name).detect([group_photo])[0]
    assert len(found) >= 5
    _well_formed(found)
    # Landmarks lie inside their boxes, eyes above the mouth.
    for box, marks in zip(found.boxes, found.landmarks):
        assert np.all(marks[:, 0] >= box[0] - 2) and np.all(marks[:, 0] <= box[2] + 2)
        assert marks[0, 1] < marks[3, 1] and marks[1, 1] < marks[4, 1]


def test_detector_finds_one_face_in_astronaut_and_none_in_a_blank_frame(name: str, astronaut: np.ndarray) -> None:
    blank = np.full_like(astronaut, 127)
    with_face, without = _real_detector(name).detect([astronaut, blank])
    assert len(with_face) == 1
    x1, y1, x2, y2 = with_face.boxes[0]
    assert 150 < (x1 + x2) / 2 < 260 and 50 < (y1 + y2) / 2 < 160  # Eileen Collins' face
    assert len(without) == 0


def test_auto_prefers_scrfd_with_a_model_pack_else_centerface(model_pack: Path, tmp_path: Path) -> None:
    assert list(DETECTORS)[:2] == ["scrfd", "centerface"]  # preference order
    assert create_detector("auto", model_pack).name == "scrfd"
    assert resolve_detector("auto", model_pack) == ("scrfd", model_pack / "det_tiny.onnx")
    assert create_detector("auto", tmp_path / "no-pack").name == "centerface"
    # What a run records is the bundled CenterFace file, not the folder that held no SCRFD.
    assert resolve_detector("auto", tmp_path) == ("centerface", bundled_centerface())


def test_unknown_or_missing_detectors_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown detector 'yolo'; known: auto, centerface, scrfd"):
        resolve_detector("yolo")
    with pytest.raises(ModelError, match=r"no-pack: no SCRFD detector \(det_\*\.onnx\) found"):
        resolve_detector("scrfd", tmp_path / "no-pack")
