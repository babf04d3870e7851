"""``fermon process`` end to end, as the nightly job runs it: the command with its start-up, against
decoding alone, on any recording you give it (a real camera's, or ``make_video.py``'s).

Each timed run is a fresh ``fermon process VIDEO --out TMP --no-report --quiet`` in its own
process (Python start-up, model loading, decoding, detection, classification, tracking, the Parquet
write); decode-only is decord decoding every frame of the same file (its default threads), as a
user of decord alone would. Both are measured in this one invocation, alternating, so the ratio
holds on a noisy machine. Then one more run in this process under fermon's stage profiler
(:mod:`fermon.run.stages`): CPU seconds per stage and each core's idle share. Writes a JSON record.

    python benchmarks/end_to_end.py RECORDING.mp4 --runs 3 --out reports/performance/end-to-end.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fermon.faces.runtime import x86_flags
from fermon.inputs.discover import find_inputs
from fermon.run.process import ProcessOptions, run_process
from fermon.run.stages import STAGES, profiling
from fermon.video import probe

FERMON = [sys.executable, "-c", "from fermon.cli import main; main()"]


def decode_seconds(video: Path) -> float:
    """Wall time for decord to decode every frame of ``video``, front to back."""
    import decord

    started = time.perf_counter()
    reader = decord.VideoReader(str(video), ctx=decord.cpu(0))
    for _ in range(len(reader)):
        reader.next()
    return time.perf_counter() - started


def machine() -> dict[str, object]:
    """The CPU's model and the features that decide precision and speed (Linux's /proc/cpuinfo)."""
    facts: dict[str, object] = {"processor": platform.machine(), "python": platform.python_version()}
    facts["cpu"] = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), ""
    )  # fmt: skip
    facts["cores"] = os.cpu_count()
    features = {"amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx2"}
    facts["features"] = sorted((x86_flags() or set()) & features)
    return facts


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def stage_table(video: Path, fps: float) -> dict[str, object]:
    """One run in this process under the stage profiler: where the CPU goes, and which core idles."""
    with tempfile.TemporaryDirectory() as out, profiling() as profile:
        summary = run_process([video], out, ProcessOptions(fps=fps), workers=0)
    if not summary.done:
        raise SystemExit(f"the profiled run did not finish: {summary}")
    return profile.table()


def print_stage_table(table: dict) -> None:
    cpu = table["cpu_s"]
    total = sum(cpu.values())
    print(f"stage table (one run in process, {table['wall_s']:.1f} s wall):")
    for name in STAGES:
        print(f"  {name:<11} {cpu[name]:7.1f} s CPU  {cpu[name] / total:6.1%}")
    idle = ", ".join(f"{share:.0%}" for share in table["core_idle"])
    print(f"  cores idle: {idle}")


def process_seconds(video: Path, fps: float, extra: list[str], tree: Path | None = None) -> float:
    """Wall time of one ``fermon process`` in a fresh process; ``tree``: the fermon of another checkout."""
    # ``python -c`` puts the working folder first on sys.path: the other checkout's fermon is found
    # by running there (PYTHONPATH alone would lose to this checkout's).
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())} if tree else None
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        command = [*FERMON, "process", str(video.resolve()), "--out", out, "--fps", str(fps), "--no-report", "--quiet"]
        subprocess.run([*command, *extra], check=True, env=env, cwd=tree.resolve() if tree else None)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("reports/performance/end-to-end.json"))
    parser.add_argument("--before", type=Path, help="Another checkout (a git worktree) timed in turn: before/after.")
    parser.add_argument("extra", nargs="*", help="More options for fermon process (after --).")
    args = parser.parse_args()
    info = probe(find_inputs([args.video]).sessions[0].videos[0])[0]
    decode, full, before = [], [], []
    for run in range(args.runs):
        decode.append(decode_seconds(args.video))
        full.append(process_seconds(args.video, args.fps, args.extra))
        if args.before:
            before.append(process_seconds(args.video, args.fps, args.extra, args.before))
        shown = f", before {before[-1]:.1f} s" if before else ""
        print(f"run {run + 1}: decode {decode[-1]:.1f} s, fermon process {full[-1]:.1f} s{shown}", flush=True)
    record = {
        "video": args.video.name,
        "video_info": info.to_dict(),
        "machine": machine(),
        "fps": args.fps,
        "options": args.extra,
        "decode_s": decode,
        "process_s": full,
        "median_decode_s": statistics.median(decode),
        "median_process_s": statistics.median(full),
        "realtime_factor": info.duration_s / statistics.median(full),
        "of_decode": statistics.median(decode) / statistics.median(full),
        "decode_only": "decord, every frame, its default threads",
        **(
            {"before_process_s": before, "before_of_decode": statistics.median(decode) / statistics.median(before)}
            if before
            else {}
        ),
        "stages": stage_table(args.video, args.fps),
    }
    print_stage_table(record["stages"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{args.video.name}: {info.duration_s:.0f} s of {info.width}x{info.height} video; fermon process end to end "
        f"{record['median_process_s']:.1f} s ({record['realtime_factor']:.1f}x real time), "
        f"{record['of_decode']:.2f} of decode-only"
    )


if __name__ == "__main__":
    main()
