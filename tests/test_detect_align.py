"""Face detection and alignment on the real face images that ship with insightface and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from insightface.utils import face_align

from fermon.align import CropSpec, crop_faces, similarity_matrix
from fermon.detect import DETECTORS, CenterFaceDetector, bundled_centerface, create_detector, resolve_detector
from fermon.vocab import crop_template


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    return CenterFaceDetector(threads=1)


def test_centerface_finds_the_faces_of_a_group_photo(centerface: CenterFaceDetector, group_photo: np.ndarray) -> None:
    found = centerface.detect([group_photo])[0]
    assert len(found) >= 5
    assert np.all(np.diff(found.scores) <= 0), "sorted by score"
    # Landmarks lie inside their boxes, eyes above the mouth.
    for box, marks in zip(found.boxes, found.landmarks):
        assert np.all(marks[:, 0] >= box[0] - 2) and np.all(marks[:, 0] <= box[2] + 2)
        assert marks[0, 1] < marks[3, 1] and marks[1, 1] < marks[4, 1]


def test_centerface_finds_one_face_in_astronaut_and_none_in_a_blank_frame(
    centerface: CenterFaceDetector, astronaut: np.ndarray
) -> None:
    blank = np.full_like(astronaut, 127)
    with_face, without = centerface.detect([astronaut, blank])
    assert len(with_face) == 1
    x1, y1, x2, y2 = with_face.boxes[0]
    assert 150 < (x1 + x2) / 2 < 260 and 50 < (y1 + y2) / 2 < 160  # Eileen Collins' face
    assert len(without) == 0


def test_auto_falls_back_to_centerface_without_a_model_pack(tmp_path) -> None:
    assert create_detector("auto", tmp_path / "no-pack").name == "centerface"
    # What a run records is the bundled CenterFace file, not the folder that held no SCRFD.
    assert resolve_detector("auto", tmp_path) == ("centerface", bundled_centerface())
    assert set(DETECTORS) >= {"centerface", "scrfd"}


def test_arcface_template_crop_equals_insightface_norm_crop(
    centerface: CenterFaceDetector, astronaut: np.ndarray
) -> None:
    marks = centerface.detect([astronaut])[0].landmarks[0]
    template = crop_template("arcface112")
    spec = CropSpec(np.asarray(template["points"], np.float32), 112, "rgb")
    ours = crop_faces(astronaut, [marks], spec)[0]
    theirs = face_align.norm_crop(astronaut, marks, image_size=112)
    np.testing.assert_allclose(similarity_matrix(marks, spec.points), face_align.estimate_norm(marks, 112), atol=1e-3)
    # Border handling differs (replicate vs black), the face itself is the same.
    assert np.abs(ours[20:100, 20:100].astype(int) - theirs[20:100, 20:100].astype(int)).mean() < 1.0


def test_ferplus_crop_puts_landmarks_on_the_template(astronaut: np.ndarray) -> None:
    template = crop_template("ferplus48")
    spec = CropSpec(np.asarray(template["points"], np.float32), 48, "gray")
    marks = np.array([[180, 120], [230, 118], [205, 150], [185, 175], [228, 173]], np.float32)
    matrix = similarity_matrix(marks, spec.points)
    mapped = marks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - spec.points).max() < 3.0
    crop = crop_faces(astronaut, [marks], spec)
    assert crop.shape == (1, 48, 48, 1) and crop.dtype == np.uint8
