"""What every face detector is (:class:`FaceDetector`), apart from the registry that builds them
(:mod:`fermon.faces.detector`), so that the search strategies (:mod:`fermon.faces.regions`) can name
it without importing the registry that imports them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from fermon.faces.geometry import Detections


class FaceDetector(Protocol):
    """A face detector: RGB images in; boxes, scores and five landmarks per face out.

    Classes are built as ``cls(model_path=..., threshold=..., min_face=..., threads=..., device=...)``
    (see :func:`create_detector`) and know where their own weights are.
    """

    name: ClassVar[str]
    # True when detect_regions searches only around given boxes (fermon.faces.regions then uses it
    # between whole-frame searches); false: every frame is searched whole and detect_regions is never called.
    supports_regions: ClassVar[bool]
    weights_sha256: str

    @classmethod
    def find_weights(cls, model_dir: str | os.PathLike[str] | None = None) -> Path | None:
        """The weights ``auto`` would use from ``model_dir`` (None: the detector's default place), or None."""
        ...

    @classmethod
    def resolve_weights(cls, model_path: str | os.PathLike[str] | None = None) -> Path:
        """The weights file when the detector is asked for by name; raises ModelError when there is none."""
        ...

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of several RGB images (all of one size, as video frames are)."""
        ...

    def detect_regions(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """Faces in square regions of one image around ``boxes``, in image coordinates (if supports_regions)."""
        ...
