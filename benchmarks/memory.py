"""Resident memory of ``fermon process`` over a long recording, sampled as it runs.

    python benchmarks/make_video.py HOUR.mp4 --seconds 60 --repeat 60
    python benchmarks/memory.py HOUR.mp4 --out reports/performance/memory.json

Runs the whole pipeline in this process (``workers=0``, the default model and detector) and reads
this process's resident set size every half second next to how much video has been processed. The
issue's test: RSS at the end within 10% of RSS after the first minute of video.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from fermon.inputs.discover import find_inputs
from fermon.run.process import ProcessOptions, run_process
from fermon.video import probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("reports/performance/memory.json"))
    args = parser.parse_args()
    info = probe(find_inputs([args.video]).sessions[0].videos[0])[0]
    process, video_done, trace = psutil.Process(), [0.0], []
    finished = threading.Event()

    def on_event(event: dict) -> None:
        if event["event"] == "progress":  # seconds of video processed, from the worker
            video_done[0] = event["processed_s"]

    def sample() -> None:
        started = time.perf_counter()
        while not finished.wait(0.5):
            video_s = video_done[0]
            trace.append((round(time.perf_counter() - started, 1), round(video_s, 1), process.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory() as out:
        sampler.start()
        started = time.perf_counter()
        summary = run_process([args.video], Path(out), ProcessOptions(fps=args.fps), workers=0, on_event=on_event)
        seconds = time.perf_counter() - started
        finished.set()
        sampler.join()
    if summary.failed:
        raise SystemExit(f"processing failed: {summary.failed[0].error}")
    after_first_minute = next(rss for _, video_s, rss in trace if video_s >= 60)
    at_end, peak = trace[-1][2], max(rss for _, _, rss in trace)
    result = {
        "command": f"python benchmarks/memory.py {args.video.name} --fps {args.fps:g}",
        "video": {"name": args.video.name, **info.to_dict()},
        "wall_s": round(seconds, 1),
        "realtime_factor": round(info.duration_s / seconds, 1),
        "rss_after_first_minute_mib": round(after_first_minute / 2**20, 1),
        "rss_at_end_mib": round(at_end / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "end_over_first_minute": round(at_end / after_first_minute, 3),
        "trace": [
            {"wall_s": w, "video_s": v, "rss_mib": round(r / 2**20, 1)}
            for w, v, r in trace[:: max(1, len(trace) // 200)]
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    first, end = result["rss_after_first_minute_mib"], result["rss_at_end_mib"]
    print(f"RSS after 1 min {first} MiB, at end {end} MiB ({result['end_over_first_minute']:.3f}x)")


if __name__ == "__main__":
    main()
