"""Make samples/demo-session.mp4: scikit-image's astronaut on grey, in view for most of the clip, then leaving.

Run from the repository root: ``python samples/make_sample.py`` (needs imageio-ffmpeg and scikit-image).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from skimage import data

WIDTH, HEIGHT, FPS, SECONDS, LEAVES_AT = 480, 272, 10, 8.0, 6.0


def frames() -> list[np.ndarray]:
    face = cv2.resize(data.astronaut()[20:260, 100:340], (140, 140), interpolation=cv2.INTER_AREA)
    out = []
    for index in range(int(SECONDS * FPS)):
        t = index / FPS
        frame = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
        # Sway gently while in view, then slide off to the right.
        x = int(170 + 30 * np.sin(t * 1.5)) if t < LEAVES_AT else int(170 + (t - LEAVES_AT) * 250)
        y = (HEIGHT - face.shape[0]) // 2
        visible = face[:, : max(0, min(face.shape[1], WIDTH - x))]
        frame[y : y + face.shape[0], x : x + visible.shape[1]] = visible
        out.append(frame)
    return out


def main(path: Path = Path(__file__).with_name("demo-session.mp4")) -> None:
    writer = imageio_ffmpeg.write_frames(
        str(path), (WIDTH, HEIGHT), fps=FPS, codec="libx264", quality=None, output_params=["-crf", "26"]
    )
    writer.send(None)
    for frame in frames():
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
