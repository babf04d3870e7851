"""The SCRFD path through insightface's own loader, with a tiny ONNX model built by onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fermon.errors import ModelError
from fermon.faces.detector import ScrfdDetector
from fermon.run.process import ProcessOptions, run_process
from tests.scrfd_model import expected_face


def test_insightface_routes_the_tiny_model_to_scrfd_and_fermon_decodes_it(model_pack: Path) -> None:
    detector = ScrfdDetector(model_pack / "det_tiny.onnx")
    image = np.full((128, 128, 3), 90, np.uint8)
    found = detector.detect([image])[0]
    assert len(found) == 1
    box, landmarks = expected_face(128)
    np.testing.assert_allclose(found.boxes[0], box, atol=1.0)
    np.testing.assert_allclose(found.landmarks[0], landmarks, atol=1.0)
    assert found.scores[0] == pytest.approx(0.95, abs=1e-3)
    assert len(detector.weights_sha256) == 64


def test_scrfd_weights_come_from_a_model_pack(model_pack: Path, tmp_path: Path) -> None:
    assert ScrfdDetector.find_weights(model_pack) == model_pack / "det_tiny.onnx"
    assert ScrfdDetector.find_weights(model_pack / "det_tiny.onnx") == model_pack / "det_tiny.onnx"
    assert ScrfdDetector.find_weights(tmp_path) is None
    assert not ScrfdDetector.supports_regions
    with pytest.raises(ModelError, match="no SCRFD detector"):
        ScrfdDetector(tmp_path)


def test_process_with_scrfd_records_the_detector_and_its_faces(
    model_pack: Path, tmp_path: Path, untrained_checkpoint: Path
) -> None:
    from tests.videos import write_video

    frames = [np.full((128, 128, 3), 100 + i, np.uint8) for i in range(10)]
    write_video(tmp_path / "in" / "clip.mp4", frames, fps=5)
    options = ProcessOptions(detector="scrfd", model_dir=str(model_pack), checkpoint=str(untrained_checkpoint))
    summary = run_process([tmp_path / "in"], tmp_path / "out", options, workers=0)
    assert not summary.failed
    timeline = pd.read_parquet(tmp_path / "out" / "timelines")
    assert timeline.face_detected.all() and len(timeline) == 10
    box, _ = expected_face(128)
    np.testing.assert_allclose(timeline[["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]].to_numpy()[0], box, atol=1.0)
    import pyarrow.parquet as pq

    footer = pq.read_metadata(next((tmp_path / "out" / "timelines").glob("*.parquet"))).metadata
    assert b'"name": "scrfd"' in footer[b"fermon"]
