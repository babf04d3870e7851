"""Non-maximum suppression keeps exactly what torchvision's keeps, in the same order."""

from __future__ import annotations

import numpy as np
import torch
import torchvision

from fermon.faces.geometry import nms


def test_nms_keeps_what_torchvision_keeps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        count = int(rng.integers(0, 30))
        corner = rng.uniform(0, 300, (count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(5, 120, (count, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0.01, 1, count).astype(np.float32)
        iou = float(rng.choice([0.3, 0.4, 0.5]))
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        assert np.array_equal(nms(boxes, scores, iou), expected)


def test_nms_of_nothing_is_nothing() -> None:
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).shape == (0,)
