"""Tiny datasets written by the tests, one per layout the training readers know."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# FERPlus vote columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.
FERPLUS_ROWS = [
    ("fer0000000.png", [6, 0, 0, 1, 3, 0, 0, 0, 0, 0]),  # neutral
    ("fer0000001.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]),  # happiness
    ("fer0000002.png", [0, 0, 0, 0, 0, 0, 0, 0, 6, 4]),  # majority unknown: dropped
    ("fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]),  # majority not-a-face: dropped
    ("fer0000004.png", [0, 0, 5, 5, 0, 0, 0, 0, 0, 0]),  # tie: first column (surprise) wins
    ("fer0000005.png", [1, 0, 0, 0, 0, 0, 0, 9, 0, 0]),  # contempt
]


def _face_like(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def write_ferplus(root: Path, split_folder: str = "FER2013Test", rows: list | None = None) -> Path:
    folder = root / "data" / split_folder
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (name, votes) in enumerate(rows or FERPLUS_ROWS):
        cv2.imwrite(str(folder / name), _face_like(i))
        lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(str(v) for v in votes))
    (folder / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def write_ferplus_splits(root: Path, repeat: int) -> Path:
    """Train, validation and test splits of ``FERPLUS_ROWS`` repeated ``repeat`` times, for training runs."""
    rows = [(f"fer{i:07d}.png", votes) for i, (_, votes) in enumerate(FERPLUS_ROWS * repeat)]
    for split in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        write_ferplus(root, split, rows)
    return root


def write_rafdb(root: Path) -> Path:
    aligned = root / "Image" / "aligned"
    aligned.mkdir(parents=True)
    (root / "EmoLabel").mkdir()
    labels = [("train_00001.jpg", 4), ("train_00002.jpg", 7), ("test_0001.jpg", 1), ("test_0002.jpg", 6)]
    for i, (name, _) in enumerate(labels):
        cv2.imwrite(
            str(aligned / name.replace(".jpg", "_aligned.jpg")), cv2.cvtColor(_face_like(i, 100), cv2.COLOR_GRAY2BGR)
        )
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(f"{n} {c}" for n, c in labels) + "\n")
    return root


def write_affectnet(root: Path) -> Path:
    images = root / "Manually_Annotated_Images" / "1"
    images.mkdir(parents=True)
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = [("1/a.jpg", 0), ("1/b.jpg", 7), ("1/c.jpg", 10), ("1/d.jpg", 6)]
    for i, (name, _) in enumerate(rows):
        cv2.imwrite(
            str(root / "Manually_Annotated_Images" / name), cv2.cvtColor(_face_like(i, 120), cv2.COLOR_GRAY2BGR)
        )
    lines = [header] + [f'{n},10,10,80,80,"",{c},0.1,0.2' for n, c in rows]
    (root / "validation.csv").write_text("\n".join(lines) + "\n")
    return root


def write_folder(root: Path) -> Path:
    for i, cls in enumerate(["happy", "neutral", "fear"]):
        folder = root / "valid" / cls
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / f"{i}.png"), _face_like(i))
    return root
