"""Make a benchmark recording: 640x360 h264, a face that sways, turns away for a while, and returns.

The background is a textured photograph with sensor noise on every frame, so the decoder does the
work a real ward camera's stream costs (a flat grey frame decodes for free and flatters the figures).
Images come from scikit-image's bundled data; nothing here is committed as media.

    python benchmarks/make_video.py OUT.mp4 --seconds 60
    python benchmarks/make_video.py HOUR.mp4 --seconds 60 --repeat 60   # one hour, for the memory run

``--repeat`` joins copies of the clip with ffmpeg's concat demuxer without re-encoding: an hour in
seconds, with timestamps running on across the copies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from skimage import data

WIDTH, HEIGHT = 640, 360


def _frames(seconds: float, fps: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    background = cv2.resize(data.coffee(), (WIDTH + 80, HEIGHT))
    face = cv2.resize(data.astronaut()[20:260, 100:340], (150, 150), interpolation=cv2.INTER_AREA)
    for index in range(int(seconds * fps)):
        t = index / fps
        pan = int(40 + 40 * np.sin(t / 7))
        frame = background[:, pan : pan + WIDTH].copy()
        # Away from the camera for 5 s of every 60 (the patient turns, a nurse leans in).
        if t % 60 < 55:
            x = int(WIDTH / 2 - 75 + 60 * np.sin(t * 0.8))
            y = int(HEIGHT / 2 - 75 + 15 * np.sin(t * 0.5))
            frame[y : y + 150, x : x + 150] = face
        noise = rng.normal(0, 3, frame.shape)
        yield np.clip(frame + noise, 0, 255).astype(np.uint8)


def make_video(path: Path, seconds: float, fps: float = 24.0) -> Path:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (WIDTH, HEIGHT), fps=fps, codec="libx264", quality=None, macro_block_size=1,
        output_params=["-crf", "23", "-preset", "veryfast", "-g", "48"],
    )  # fmt: skip
    writer.send(None)
    for frame in _frames(seconds, fps):
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def repeat_video(clip: Path, times: int, out: Path) -> Path:
    """``times`` copies of ``clip`` joined into ``out`` (stream copy, continuous timestamps)."""
    import subprocess
    import tempfile

    import imageio_ffmpeg

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write(f"file '{clip.resolve()}'\n" * times)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0"]
    subprocess.run([*command, "-i", listing.name, "-c", "copy", str(out)], check=True)
    Path(listing.name).unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--repeat", type=int, default=1, help="Join this many copies of the clip.")
    args = parser.parse_args()
    if args.repeat > 1:
        clip = make_video(args.out.with_name(f"{args.out.stem}-clip{args.out.suffix}"), args.seconds, args.fps)
        path = repeat_video(clip, args.repeat, args.out)
        clip.unlink()
    else:
        path = make_video(args.out, args.seconds, args.fps)
    print(f"{path.name}: {args.seconds * args.repeat:.0f} s, {path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
