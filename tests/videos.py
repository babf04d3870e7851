"""Tiny test videos written with imageio-ffmpeg from the face images bundled with skimage/insightface."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

GREY = 128


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 10.0,
    codec: str = "libx264",
    creation_time: str | None = None,
    crf: int = 28,
    extra_params: tuple[str, ...] = (),
) -> Path:
    """Write RGB uint8 frames (all of one even size) to an mp4/avi/mkv/mov file; ``creation_time`` (ISO
    8601, e.g. ``2026-03-29T00:30:00Z``) goes into the container's header as a camera would write it.
    ``crf`` is libx264's quality (lower is better; 28 is a small file, 18 close to visually lossless);
    ``extra_params`` are further ffmpeg output options (a codec tag, metadata)."""
    import imageio_ffmpeg

    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec=codec, macro_block_size=1, quality=None,
        output_params=(["-crf", str(crf), "-g", "10"] if codec == "libx264" else [])
        + (["-metadata", f"creation_time={creation_time}"] if creation_time else [])
        + list(extra_params),
    )  # fmt: skip
    writer.send(None)
    writer.send(np.ascontiguousarray(first))
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def astronaut_face(astronaut: np.ndarray, size: int = 120) -> np.ndarray:
    """The astronaut's head and shoulders, resized to ``size`` pixels square."""
    return cv2.resize(astronaut[20:260, 100:340], (size, size), interpolation=cv2.INTER_AREA)


def paste(background: np.ndarray, patch: np.ndarray, x: int, y: int) -> np.ndarray:
    frame = background.copy()
    h, w = patch.shape[:2]
    frame[y : y + h, x : x + w] = patch
    return frame


def moving_face_frames(
    face: np.ndarray, seconds: float, fps: float, size: tuple[int, int] = (320, 240), visible_until: float | None = None
) -> list[np.ndarray]:
    """A face drifting left to right on grey; after ``visible_until`` seconds only grey."""
    width, height = size
    background = np.full((height, width, 3), GREY, np.uint8)
    count = round(seconds * fps)
    frames = []
    for index in range(count):
        t = index / fps
        if visible_until is not None and t >= visible_until:
            frames.append(background.copy())
            continue
        x = int((width - face.shape[1]) * 0.25 + 4 * index) % (width - face.shape[1])
        y = (height - face.shape[0]) // 2
        frames.append(paste(background, face, x, y))
    return frames


def two_face_frames(astronaut: np.ndarray, seconds: float, fps: float) -> list[np.ndarray]:
    """Two faces, a large one on the left and a small one on the right, both still."""
    background = np.full((240, 320, 3), GREY, np.uint8)
    frame = paste(background, astronaut_face(astronaut, 130), 10, 50)
    frame = paste(frame, astronaut_face(astronaut, 80), 220, 80)
    return [frame] * round(seconds * fps)


def blank_frames(seconds: float, fps: float) -> list[np.ndarray]:
    """Grey with a slowly moving square: no face anywhere."""
    frames = []
    for index in range(round(seconds * fps)):
        frame = np.full((240, 320, 3), GREY, np.uint8)
        frame[100:140, 10 + 5 * index : 50 + 5 * index] = (30, 90, 200)
        frames.append(frame)
    return frames


def write_bad_files(folder: Path) -> dict[str, Path]:
    """A corrupt mp4 (random bytes), an empty mp4 and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    notes = folder / "notes.txt"
    notes.write_text("not a video\n")
    return {"corrupt": corrupt, "empty": empty, "notes": notes}


def write_clip_set(folder: Path, astronaut: np.ndarray) -> dict[str, Path]:
    """The clips the pipeline tests share: one face throughout, a face that leaves, two faces, none."""
    face = astronaut_face(astronaut)
    return {
        "face": write_video(folder / "face.mp4", moving_face_frames(face, 3, 10)),
        "leaves": write_video(folder / "leaves.mp4", moving_face_frames(face, 3, 10, visible_until=2.0)),
        "two": write_video(folder / "two.mp4", two_face_frames(astronaut, 2, 10)),
        "blank": write_video(folder / "blank.mp4", blank_frames(2, 10)),
    }


def punch_hole(source: Path, target: Path, start: float = 0.4, end: float = 0.6) -> Path:
    """A copy of ``source`` with a stretch of its bytes zeroed: opens, but part of it cannot decode."""
    data = bytearray(source.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = bytes(b - a)
    target.write_bytes(bytes(data))
    return target
