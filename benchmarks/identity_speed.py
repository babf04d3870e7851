"""What identity (persons across a session) costs ``fermon process``: throughput with it on and off,
and resident memory over a long recording with it on.

    python benchmarks/make_video.py ward60.mp4 --seconds 60
    python benchmarks/make_video.py ward-hour.mp4 --seconds 60 --repeat 60
    python benchmarks/identity_speed.py ward60.mp4 --hour ward-hour.mp4 --runs 5 --out reports/performance/identity.json

Two clips at 5 samples/s: the project's benchmark clip (one face that turns away 5 s a minute: a
new track a minute) and a busy one made here (the same background; the astronaut in view 6 s of
every 8 and a second person, from insightface's group photo, 3 s of every 10: about 14 tracks a
minute, some 800 an hour, the ward case of a patient who becomes hundreds of tracks). Each figure is
the median of ``--runs`` timed runs after one untimed warm-up of each setting; on and off alternate,
so that a busy machine slows both alike; the CPU time this process spent is recorded beside the
wall time, as the fairer figure on a shared machine. ``--hour`` also runs an hour-long recording once with
identity on and samples this process's resident set every half second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from fermon.inputs.discover import find_inputs
from fermon.run.options import ProcessOptions, resolve_models
from fermon.run.session import process_session
from fermon.run.timeline import read_metadata
from fermon.video import probe


def busy_clip(path: Path, seconds: float = 60.0, fps: float = 24.0) -> Path:
    import imageio_ffmpeg
    from insightface.data import get_image
    from skimage import data

    rng = np.random.default_rng(0)
    background = cv2.resize(data.coffee(), (640, 360))
    first = cv2.resize(data.astronaut()[20:260, 100:340], (150, 150), interpolation=cv2.INTER_AREA)
    group = np.ascontiguousarray(get_image("t1")[:, :, ::-1])
    second = cv2.resize(group[200:470, 420:620], (130, 176), interpolation=cv2.INTER_CUBIC)
    writer = imageio_ffmpeg.write_frames(
        str(path), (640, 360), fps=fps, codec="libx264", quality=None, macro_block_size=1,
        output_params=["-crf", "23", "-preset", "veryfast", "-g", "48"],
    )  # fmt: skip
    writer.send(None)
    for index in range(int(seconds * fps)):
        t = index / fps
        frame = background.copy()
        if t % 8 < 6:
            x = int(80 + 40 * np.sin(t * 0.8) + 60 * (int(t // 8) % 3))
            frame[100:250, x : x + 150] = first
        if t % 10 < 3:
            frame[90:266, 470:600] = second
        writer.send(np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8))
    writer.close()
    return path


def timed(video: Path, options: ProcessOptions, runs: int, out: Path) -> dict:
    session = find_inputs([video]).sessions[0]
    identity = resolve_models(options)
    duration = probe(session.videos[0])[0].duration_s
    settings = {"on": options, "off": replace(options, identity=False)}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    cpu: dict[str, list[float]] = {name: [] for name in settings}
    for name, setting in settings.items():  # warm-up: models loaded, kernels planned
        process_session(session, setting, identity, str(out / name))
    for _ in range(runs):
        for name, setting in settings.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            result = process_session(session, setting, identity, str(out / name))
            seconds[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            if result.status != "done":
                raise SystemExit(f"{video.name}: {result.error}")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    footer = read_metadata(out / "on" / "timelines" / f"{session.session_id}.parquet")["identity"]
    return {
        "video": video.name,
        "duration_s": round(duration, 1),
        "samples": result.samples,
        "seconds": {name: [round(v, 3) for v in values] for name, values in seconds.items()},
        "median_s": {name: round(v, 3) for name, v in medians.items()},
        "realtime_factor": {name: round(duration / v, 1) for name, v in medians.items()},
        "throughput_on_over_off": round(medians["off"] / medians["on"], 3),
        # CPU seconds of this process (all its threads): what identity adds, whatever else the machine runs.
        "cpu_median_s": {name: round(v, 3) for name, v in cpu_medians.items()},
        "cpu_off_over_on": round(cpu_medians["off"] / cpu_medians["on"], 3),
        "identity": {k: footer[k] for k in ("tracks", "tracks_embedded", "chips_embedded", "persons", "links")},
    }


def hour_memory(video: Path, options: ProcessOptions, out: Path) -> dict:
    import psutil

    session = find_inputs([video]).sessions[0]
    identity = resolve_models(options)
    process, trace, done = psutil.Process(), [], threading.Event()
    processed = [0.0]

    def sample() -> None:
        while not done.wait(0.5):
            trace.append((processed[0], process.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = process_session(session, options, identity, str(out), lambda s, total: processed.__setitem__(0, s))
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    first = next(rss for video_s, rss in trace if video_s >= 60)
    footer = read_metadata(out / "timelines" / f"{session.session_id}.parquet")["identity"]
    return {
        "video": video.name,
        "status": result.status,
        "wall_s": round(wall, 1),
        "realtime_factor": round(probe(session.videos[0])[0].duration_s / wall, 1),
        "rss_after_first_minute_mib": round(first / 2**20, 1),
        "rss_at_end_mib": round(trace[-1][1] / 2**20, 1),
        "rss_peak_mib": round(max(rss for _, rss in trace) / 2**20, 1),
        "end_over_first_minute": round(trace[-1][1] / first, 3),
        "identity": {k: footer[k] for k in ("tracks", "tracks_embedded", "chips_embedded", "persons", "links")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="the benchmark clip (benchmarks/make_video.py)")
    parser.add_argument("--hour", type=Path, help="an hour-long recording, for the memory run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/performance/identity.json"))
    args = parser.parse_args()
    options = ProcessOptions(detector="centerface", device="cpu")
    report: dict = {"command": f"python benchmarks/identity_speed.py {args.video.name} --runs {args.runs}"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        busy = busy_clip(tmp_path / "busy60.mp4")
        report["clips"] = [timed(v, options, args.runs, tmp_path / v.stem) for v in (args.video, busy)]
        for clip in report["clips"]:
            ratios = f"{clip['throughput_on_over_off']} (CPU time off/on {clip['cpu_off_over_on']})"
            print(f"{clip['video']}: identity on/off throughput {ratios}", flush=True)
        if args.hour:
            report["command"] += f" --hour {args.hour.name}"
            report["hour"] = hour_memory(args.hour, options, tmp_path / "hour")
            print(f"hour: RSS end/first minute {report['hour']['end_over_first_minute']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
