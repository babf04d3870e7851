"""Shared test fixtures. Nothing may download: the hub is switched off before anything imports it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid cnn48 checkpoint with random weights (the pipeline's shape, not its accuracy)."""
    from fermon.expression.checkpoint import write_untrained_checkpoint

    path = tmp_path_factory.mktemp("checkpoints") / "untrained.safetensors"
    write_untrained_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def group_photo() -> np.ndarray:
    """insightface's sample group photo as RGB (1280x886, several faces)."""
    from insightface.data import get_image

    return np.ascontiguousarray(get_image("t1")[:, :, ::-1])


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (one frontal face), RGB 512x512."""
    from skimage import data

    return data.astronaut()
