"""Each corruption changes the pixels it claims to, and only those where it says so."""

from __future__ import annotations

import numpy as np
import pytest

from fermon.errors import UsageError
from fermon.faces.align import crop_template
from training.corruptions import CORRUPTIONS, apply_corruption, region_box

POINTS = np.asarray(crop_template("ferplus48")["points"], np.float32)


@pytest.fixture
def faces() -> np.ndarray:
    return np.random.default_rng(0).integers(40, 256, (4, 48, 48, 1), dtype=np.uint8)


@pytest.mark.parametrize(("region", "hidden", "visible"), [("eyes", [0, 1], [3, 4]), ("mouth", [3, 4], [0, 1])])
def test_region_occlusion_hides_its_landmarks_and_nothing_else(
    faces: np.ndarray, region: str, hidden: list[int], visible: list[int]
) -> None:
    out = apply_corruption(region, faces, POINTS)
    x1, y1, x2, y2 = region_box(region, POINTS, 48)
    inside = np.zeros((48, 48), bool)
    inside[y1:y2, x1:x2] = True
    assert np.all(out[:, inside] == 0)
    assert np.array_equal(out[:, ~inside], faces[:, ~inside])
    for x, y in POINTS[hidden]:
        assert inside[int(y), int(x)]
    for x, y in POINTS[visible]:
        assert not inside[int(y), int(x)]


def test_random_occlusion_covers_a_quarter_at_seeded_places(faces: np.ndarray) -> None:
    first = apply_corruption("random", faces, POINTS, seed=1)
    assert np.array_equal(first, apply_corruption("random", faces, POINTS, seed=1))
    assert not np.array_equal(first, apply_corruption("random", faces, POINTS, seed=2))
    assert all((image == 0).sum() == 24 * 24 for image in first)


def test_blur_and_low_light_change_every_image(faces: np.ndarray) -> None:
    blurred = apply_corruption("blur", faces, POINTS)
    assert blurred.shape == faces.shape
    assert blurred.astype(float).std() < faces.astype(float).std() * 0.6
    dark = apply_corruption("lowlight", faces, POINTS)
    assert dark.mean() < faces.mean() * 0.4


def test_every_registered_corruption_keeps_shape_and_dtype(faces: np.ndarray) -> None:
    for name in CORRUPTIONS:
        out = apply_corruption(name, faces, POINTS)
        assert out.shape == faces.shape and out.dtype == np.uint8
        assert not np.array_equal(out, faces)
    with pytest.raises(UsageError):
        apply_corruption("fog", faces, POINTS)
