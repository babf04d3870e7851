"""Face alignment on real face images that ship with scikit-image, against insightface's own crop."""

from __future__ import annotations

import numpy as np
from insightface.utils import face_align

from fermon.faces.align import CropSpec, crop_faces, crop_template, similarity_matrix
from fermon.faces.detector import CenterFaceDetector


def test_arcface_template_crop_equals_insightface_norm_crop(astronaut: np.ndarray) -> None:
    marks = CenterFaceDetector(threads=1).detect([astronaut])[0].landmarks[0]
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
