"""Face thumbnails for session pages: only with ``--include-thumbnails``, decoded again from the videos.

Timelines hold no face images (privacy by default), so when asked the report goes back to the
recordings: for each expression it takes the sample whose target face is that expression's most
confident example, decodes that one frame, crops the face's box with a margin and embeds it in the
page as a small JPEG (a ``data:`` URI, so the page stays self-contained).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fermon.errors import FermonError
from fermon.inputs.sessions import VideoFile
from fermon.run.timeline import BBOX_COLUMNS
from fermon.video import open_reader

THUMBNAIL_PX = 96  # height of a thumbnail
MARGIN = 0.25  # of the face box's size, on each side


@dataclass(frozen=True)
class Thumbnail:
    expression: str
    timestamp_s: float
    probability: float
    data_uri: str


def find_video(relative: str, roots: Sequence[Path]) -> Path | None:
    """The recording a timeline names (relative to an input of ``fermon process``) under one of ``roots``."""
    for root in roots:
        candidate = (root if root.is_dir() else root.parent) / relative
        if candidate.is_file():
            return candidate
    return None


def _most_confident(samples: pd.DataFrame, class_names: Sequence[str]) -> dict[str, pd.Series]:
    """Per expression, the covered sample where it is the top class with the highest probability."""
    covered = samples[samples["covered"]]
    if covered.empty:
        return {}
    probabilities = covered[[f"prob_{name}" for name in class_names]].to_numpy(float)
    top = probabilities.argmax(axis=1)
    picks = {}
    for k, name in enumerate(class_names):
        rows = np.flatnonzero(top == k)
        if len(rows):
            picks[name] = covered.iloc[rows[probabilities[rows, k].argmax()]]
    return picks


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    pad_x, pad_y = MARGIN * (x2 - x1), MARGIN * (y2 - y1)
    height, width = frame.shape[:2]
    left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
    right, bottom = min(width, int(np.ceil(x2 + pad_x))), min(height, int(np.ceil(y2 + pad_y)))
    face = frame[top:bottom, left:right]
    scale = THUMBNAIL_PX / max(1, face.shape[0])
    return cv2.resize(face, (max(1, round(face.shape[1] * scale)), THUMBNAIL_PX), interpolation=cv2.INTER_AREA)


def _jpeg_uri(image_rgb: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise FermonError("could not encode a thumbnail as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def session_thumbnails(
    samples: pd.DataFrame, class_names: Sequence[str], roots: Sequence[Path]
) -> tuple[list[Thumbnail], list[str]]:
    """Thumbnails in model class order, and the session's videos that could not be found or read."""
    picks = _most_confident(samples, class_names)
    missing: list[str] = []
    by_video: dict[str, list[tuple[str, pd.Series]]] = {}
    for name, sample in picks.items():
        by_video.setdefault(str(sample["video"]), []).append((name, sample))
    found: dict[str, Thumbnail] = {}
    for relative, chosen in by_video.items():
        path = find_video(relative, roots)
        if path is None:
            missing.append(relative)
            continue
        try:
            reader = open_reader(VideoFile(path, relative))
            frames = reader.get_batch([int(sample["frame_index"]) for _, sample in chosen]).asnumpy()
            del reader
        except (FermonError, RuntimeError) as error:
            missing.append(f"{relative} ({str(error).splitlines()[0][:80]})")
            continue
        for (name, sample), frame in zip(chosen, frames, strict=True):
            box = sample[list(BBOX_COLUMNS)].to_numpy(float)
            uri = _jpeg_uri(_crop(frame, box))
            found[name] = Thumbnail(name, float(sample["timestamp_s"]), float(sample[f"prob_{name}"]), uri)
    thumbnails = [found[name] for name in class_names if name in found]
    return thumbnails, missing
