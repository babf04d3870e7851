"""``fermon process`` end to end, as the nightly job runs it: the command with its start-up, against
decoding alone, on any recording you give it (a real camera's, or ``make_video.py``'s).

Each timed run is a fresh ``fermon process VIDEO --out TMP --no-report --quiet`` in its own
process (Python start-up, model loading, decoding, detection, classification, tracking, the Parquet
write); decode-only reads the same sampled frames with decord in one process. Both are measured in
this one invocation, alternating, so the ratio holds on a noisy machine. Writes a JSON record.

    python benchmarks/end_to_end.py RECORDING.mp4 --runs 3 --out reports/performance/end-to-end.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fermon.inputs.discover import find_inputs
from fermon.video import iter_batches, probe, sample_indices

FERMON = [sys.executable, "-c", "from fermon.cli import main; main()"]


def decode_seconds(video: Path, fps: float) -> float:
    """Wall time to decode the frames ``fermon process`` samples, with the reader it uses."""
    found = find_inputs([video]).sessions[0].videos[0]
    started = time.perf_counter()
    _, starts = probe(found)
    for _ in iter_batches(found, sample_indices(starts, fps), starts, []):
        pass
    return time.perf_counter() - started


def process_seconds(video: Path, fps: float, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        command = [*FERMON, "process", str(video), "--out", out, "--fps", str(fps), "--no-report", "--quiet", *extra]
        subprocess.run(command, check=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("reports/performance/end-to-end.json"))
    parser.add_argument("extra", nargs="*", help="More options for fermon process (after --).")
    args = parser.parse_args()
    info = probe(find_inputs([args.video]).sessions[0].videos[0])[0]
    decode, full = [], []
    for run in range(args.runs):
        decode.append(decode_seconds(args.video, args.fps))
        full.append(process_seconds(args.video, args.fps, args.extra))
        print(f"run {run + 1}: decode {decode[-1]:.1f} s, fermon process {full[-1]:.1f} s", flush=True)
    record = {
        "video": args.video.name,
        "video_info": info.to_dict(),
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "fps": args.fps,
        "options": args.extra,
        "decode_s": decode,
        "process_s": full,
        "median_decode_s": statistics.median(decode),
        "median_process_s": statistics.median(full),
        "realtime_factor": info.duration_s / statistics.median(full),
        "of_decode": statistics.median(decode) / statistics.median(full),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{args.video.name}: {info.duration_s:.0f} s of {info.width}x{info.height} video; fermon process end to end "
        f"{record['median_process_s']:.1f} s ({record['realtime_factor']:.1f}x real time), "
        f"{record['of_decode']:.2f} of decode-only"
    )


if __name__ == "__main__":
    main()
