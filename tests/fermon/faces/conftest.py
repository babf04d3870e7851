"""Weights for the detector tests: the tiny SCRFD stand-in, and per detector what a test builds it from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fermon.faces.detector import DETECTORS
from tests.scrfd_model import write_tiny_scrfd

# Detectors whose real weights are not part of the repository get a stand-in here: a function that
# writes one into a folder and returns the path to build the detector from. The others are built
# from the weights they find themselves (``find_weights``); a test skips a detector that has neither.
STAND_INS: dict[str, Callable[[Path], Path]] = {
    "scrfd": lambda folder: write_tiny_scrfd(folder / "det_tiny.onnx").parent,
}


@pytest.fixture(scope="session")
def model_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like an insightface model pack, holding only the tiny SCRFD detector."""
    return STAND_INS["scrfd"](tmp_path_factory.mktemp("buffalo_tiny"))


@pytest.fixture(scope="session")
def stand_in_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """What a test builds a registered detector from: its stand-in, else the weights it finds here."""

    def weights(name: str) -> Path:
        if name in STAND_INS:
            return STAND_INS[name](tmp_path_factory.mktemp(f"{name}-stand-in"))
        found = DETECTORS[name].find_weights(None)
        if found is None:
            pytest.skip(f"no {name} weights on this machine and no stand-in in tests/fermon/faces/conftest.py")
        return found

    return weights
