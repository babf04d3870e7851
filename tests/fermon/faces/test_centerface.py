"""CenterFace's weights: embedded, or the file a caller names."""

from __future__ import annotations

from pathlib import Path

from fermon.faces.detector import CenterFaceDetector, bundled_centerface, resolve_detector


def test_centerface_weights_are_the_embedded_file_unless_named(tmp_path: Path) -> None:
    assert bundled_centerface().is_file()
    assert CenterFaceDetector.find_weights(tmp_path) == bundled_centerface()  # never from a model pack
    assert CenterFaceDetector.resolve_weights(None) == bundled_centerface()
    assert resolve_detector("centerface", tmp_path / "mine.onnx") == ("centerface", tmp_path / "mine.onnx")
