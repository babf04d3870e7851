"""What ``--min-face`` (the detector's input scale) costs in faces found, in accuracy and in time.

    python benchmarks/detector_size.py FERPLUS_ROOT --out reports/performance/detector-size.json

Two scenes on a 640x360 frame (the benchmark video's size and background, scikit-image's coffee):

- ``astronaut``: scikit-image's astronaut, head and shoulders, scaled so that her face is a given
  width, at random places. The share of frames where the face is found, per face width and
  ``min_face``: where a setting stops finding faces. Then, as ``fermon process`` does between
  whole-frame searches, the next frame with the face moved by a third of its width is searched only
  in the region around the box found: the share found again there.
- ``ferplus``: FERPlus validation faces (48 px, grey, tightly cropped: no hair or shoulders, a hard
  case for a detector) pasted at a given width, then what ``fermon process`` does with them:
  landmarks onto the model's template and the default model. The share found, and the accuracy on
  the faces found: whether a smaller detector input costs the classifier through worse landmarks.

Milliseconds are the detector's per frame on one thread, medians over the scene's frames.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from fermon.expression.classify import ExpressionClassifier
from fermon.faces.align import CropSpec, crop_face
from fermon.faces.detector import CenterFaceDetector, Detections
from training.datasets import read_dataset
from training.evaluate import align_classes

WIDTH, HEIGHT = 640, 360
ASTRONAUT_FACE_SHARE = 0.45  # her face's width over the width of the head-and-shoulders crop below


def _place(frame: np.ndarray, patch: np.ndarray, top: int, left: int) -> np.ndarray:
    frame = frame.copy()
    frame[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return frame


def _paste(frame: np.ndarray, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    top, left = rng.integers(0, HEIGHT - patch.shape[0] + 1), rng.integers(0, WIDTH - patch.shape[1] + 1)
    return _place(frame, patch, top, left)


def _detect_timed(detector: CenterFaceDetector, frame: np.ndarray) -> tuple[Detections, float]:
    started = time.perf_counter()
    found = detector.detect([frame])[0]
    return found, time.perf_counter() - started


def astronaut_scene(face_px: int, min_face: float, frames: int, background: np.ndarray) -> dict[str, float]:
    """Whole-frame search, then the region search of the next sample with the face moved by a third of its width."""
    rng = np.random.default_rng(face_px)
    side = round(face_px / ASTRONAUT_FACE_SHARE)
    patch = cv2.resize(data.astronaut()[0:300, 90:390], (side, side), interpolation=cv2.INTER_AREA)
    detector = CenterFaceDetector(min_face=min_face, threads=1)
    found, in_region, seconds, region_seconds = 0, 0, [], []
    for _ in range(frames):
        top, left = rng.integers(0, HEIGHT - side + 1), rng.integers(0, WIDTH - side + 1)
        detections, elapsed = _detect_timed(detector, _place(background, patch, top, left))
        seconds.append(elapsed)
        if not len(detections):
            continue
        found += 1
        step = np.round(rng.choice([-1, 1], size=2) * face_px / 3).astype(int)
        moved = _place(background, patch, *np.clip(np.array([top, left]) + step, 0, [HEIGHT - side, WIDTH - side]))
        started = time.perf_counter()
        in_region += len(detector.detect_regions(moved, detections.boxes[:1])) > 0
        region_seconds.append(time.perf_counter() - started)
    return {
        "scene": "astronaut",
        "face_px": face_px,
        "min_face": min_face,
        "found": round(found / frames, 3),
        "found_again_in_region": round(in_region / found, 3) if found else None,
        "ms_per_frame": round(1000 * float(np.median(seconds)), 2),
        "ms_per_region": round(1000 * float(np.median(region_seconds)), 2) if region_seconds else None,
    }


def ferplus_scene(faces, classifier, face_px: int, min_face: float, background: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(face_px)
    detector = CenterFaceDetector(min_face=min_face, threads=1)
    spec = CropSpec.from_metadata(classifier.checkpoint.metadata["crop"])
    crops, found, seconds = [], [], []
    for index, face in enumerate(faces.images):
        big = cv2.resize(face, (face_px, face_px), interpolation=cv2.INTER_CUBIC)
        frame = _paste(background, np.repeat(big.reshape(face_px, face_px, 1), 3, axis=2), rng)
        detections, elapsed = _detect_timed(detector, frame)
        seconds.append(elapsed)
        if len(detections):
            crops.append(crop_face(frame, detections.landmarks[0], spec))
            found.append(index)
    accuracy = float("nan")
    if crops:
        subset = faces.subset(np.asarray(found, dtype=np.int64))
        probabilities, labels, _ = align_classes(classifier.predict(np.stack(crops)), classifier.class_names, subset)
        accuracy = float((probabilities.argmax(1) == labels).mean())
    return {
        "scene": "ferplus",
        "face_px": face_px,
        "min_face": min_face,
        "found": round(len(found) / len(faces), 3),
        "accuracy_found": round(accuracy, 4),
        "ms_per_frame": round(1000 * float(np.median(seconds)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="FERPlus folder (FER2013Valid and its labels).")
    parser.add_argument("--min-faces", type=float, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--astronaut-sizes", type=int, nargs="+", default=[24, 32, 48, 64, 96, 128])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--ferplus-sizes", type=int, nargs="*", default=[96, 192])
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("reports/performance/detector-size.json"))
    args = parser.parse_args()
    background = cv2.resize(data.coffee(), (WIDTH, HEIGHT))
    rows = []
    for size in args.astronaut_sizes:
        for min_face in args.min_faces:
            rows.append(astronaut_scene(size, min_face, args.frames, background))
            print(rows[-1], flush=True)
    classifier = ExpressionClassifier.load("default", device="cpu")
    faces = read_dataset("ferplus", args.root, "valid", 48, "gray", args.faces)
    for size in args.ferplus_sizes:
        for min_face in args.min_faces:
            rows.append(ferplus_scene(faces, classifier, size, min_face, background))
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/detector_size.py FERPLUS_ROOT --frames {args.frames} --faces {args.faces}"
    args.out.write_text(json.dumps({"command": command, "frame": [WIDTH, HEIGHT], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
