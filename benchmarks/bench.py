"""Speed of fermon's pipeline on one recording, stage by stage, in one run.

    python benchmarks/bench.py VIDEO --runs 3 --out reports/performance

Writes ``reports/performance.json`` and ``reports/performance.md``. Every figure is the median of
``--runs`` timed runs after one untimed warm-up, and every ratio is between stages measured in the
same invocation (this machine is shared and noisy; absolute figures drift between runs).

Stages, all through fermon's own code: decode only (the physical limit of this job on this machine:
decord, the same sampling and segments as the pipeline), decode + detect, and the full pipeline
(decode, detect, align, classify, track, Parquet) in-process for two batch sizes; then through Dask
with 1 and 2 local workers, where each worker gets its own copy of the video (Dask spreads sessions,
not frames, so two workers need two sessions to be busy) and throughput is video time over wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import fermon
from fermon.expression.classify import cpu_has_amx
from fermon.faces.detector import available_cores, detect_in_parallel, detect_tracked, detector_scale
from fermon.inputs.discover import find_inputs
from fermon.inputs.sessions import Session
from fermon.run.models import cached_models
from fermon.run.options import ProcessOptions, resolve_models
from fermon.run.process import run_process
from fermon.run.session import process_session
from fermon.video import iter_batches, probe, read_ahead, sample_indices


@dataclass
class Measurement:
    stage: str
    fps: float
    workers: int
    batch_size: int | None
    seconds: list[float] = field(default_factory=list)
    samples: int = 0
    video_seconds: float = 0.0

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.median_s

    @property
    def realtime_factor(self) -> float:
        return self.video_seconds / self.median_s

    def row(self) -> dict[str, object]:
        return {
            **asdict(self),
            "median_s": round(self.median_s, 3),
            "samples_per_s": round(self.samples_per_s, 1),
            "realtime_factor": round(self.realtime_factor, 1),
        }


def _timed(runs: int, work: Callable[[], int]) -> tuple[list[float], int]:
    work()  # warm-up: models loaded, caches filled, code paths compiled
    seconds, samples = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        samples = work()
        seconds.append(time.perf_counter() - started)
    return seconds, samples


def _decode(session: Session, fps: float, detector=None, threads: int = 1) -> int:
    """Decode only (as the pipeline decodes), or decode and detect as the pipeline overlaps them."""
    video = session.videos[0]
    _, starts = probe(video)
    batches = iter_batches(video, sample_indices(starts, fps), starts, [])
    if detector is None:
        return sum(len(batch.frame_indices) for batch in batches)
    detect = partial(detect_tracked, detector)
    return sum(len(batch.frame_indices) for batch, _ in detect_in_parallel(detect, read_ahead(batches), threads))


def measure_in_process(session: Session, options: ProcessOptions, runs: int, out: Path) -> list[Measurement]:
    identity = resolve_models(options)
    threads = options.threads or available_cores()
    duration = probe(session.videos[0])[0].duration_s
    results = []
    for fps in (5.0, 0.0):
        detector, _ = cached_models(identity, replace(options, fps=fps))
        stages: list[tuple[str, int | None, Callable[[], int]]] = [
            ("decode", None, lambda fps=fps: _decode(session, fps)),
            ("decode+detect", None, lambda fps=fps, d=detector: _decode(session, fps, d, threads)),
        ]
        for batch_size in (16, 64):
            run_options = replace(options, fps=fps, batch_size=batch_size)
            stages.append(
                ("full", batch_size, lambda o=run_options: process_session(session, o, identity, str(out)).samples)
            )
        if fps > 0:  # the cost of searching every sample whole (--whole-frames)
            whole = replace(options, fps=fps, batch_size=64, whole_frames=True)
            stages.append(
                ("full, whole frames", 64, lambda o=whole: process_session(session, o, identity, str(out)).samples)
            )
        for stage, batch_size, work in stages:
            seconds, samples = _timed(runs, work)
            results.append(Measurement(stage, fps, 0, batch_size, seconds, samples, duration))
            print(f"{stage:14s} fps={fps:g} batch={batch_size}: {results[-1].samples_per_s:7.1f} samples/s", flush=True)
    return results


def measure_dask(video: Path, options: ProcessOptions, runs: int, workdir: Path) -> list[Measurement]:
    from distributed import Client, LocalCluster

    duration = probe(find_inputs([video]).sessions[0].videos[0])[0].duration_s
    results = []
    for workers in (1, 2):
        inputs = workdir / f"inputs-{workers}"
        inputs.mkdir()
        for copy in range(workers):
            shutil.copy(video, inputs / f"copy{copy}{video.suffix}")
        threads = max(1, available_cores() // workers)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
        with cluster, Client(cluster):
            run_options = replace(options, threads=threads)
            address = cluster.scheduler_address

            def work(inputs: Path = inputs, o: ProcessOptions = run_options, address: str = address) -> int:
                out = Path(tempfile.mkdtemp(dir=workdir))
                summary = run_process([inputs], out, o, scheduler=address, force=True)
                return sum(result.samples for result in summary.done)

            seconds, samples = _timed(runs, work)
        total = duration * workers
        results.append(Measurement("full (Dask)", options.fps, workers, options.batch_size, seconds, samples, total))
        print(f"dask workers={workers}: {results[-1].realtime_factor:.1f}x real time", flush=True)
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    import onnxruntime
    import torch

    return {
        "cpu": _cpu_name(),
        "amx": cpu_has_amx(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "fermon": fermon.__version__,
    }


def write_report(
    path: Path, video: Path, info: dict[str, object], rows: list[Measurement], command: str, options: ProcessOptions
) -> None:
    decode = {m.fps: m for m in rows if m.stage == "decode"}
    payload = {
        "video": {"name": video.name, **info},
        "machine": machine(),
        "command": command,
        "options": options.public(),
        "results": [
            {**m.row(), "ratio_to_decode": round(decode[m.fps].median_s / m.median_s, 3) if m.fps in decode else None}
            for m in rows
        ],
    }
    path.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"Measured on {payload['machine']['cores']} cores ({payload['machine']['cpu']}"
        f"{', AMX' if payload['machine']['amx'] else ''}), "
        f"CUDA: {payload['machine']['cuda'] or 'none'}; video {video.name}: {info['width']}x{info['height']}, "
        f"{info['fps']:g} fps, {info['duration_s']:.0f} s, {info['codec']}. Detector CenterFace with "
        f"--min-face {options.min_face:g} (frames shrunk by {detector_scale(options.min_face):g}), the default model.",
        "",
        f"Reproduce: `{command}`",
        "",
        "Medians of the timed runs; 'of decode' is the stage's throughput over decode-only throughput at the same",
        "sampling rate, measured in the same invocation. Real-time factor: seconds of video per second of wall time.",
        "",
        "| stage | sampling | workers | batch | samples | median s | samples/s | real-time factor | of decode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in payload["results"]:
        setting = "every frame" if result["fps"] == 0 else f"{result['fps']:g}"
        ratio = f"{result['ratio_to_decode']:.2f}" if result["ratio_to_decode"] and result["workers"] == 0 else "-"
        lines.append(
            f"| {result['stage']} | {setting} | {result['workers'] or 'in-process'} | {result['batch_size'] or '-'} | "
            f"{result['samples']} | {result['median_s']:.2f} | {result['samples_per_s']:.1f} | "
            f"{result['realtime_factor']:.1f}x | {ratio} |"
        )
    _write_between_markers(path.with_suffix(".md"), "\n".join(lines))


BEGIN, END = "<!-- bench.py writes from here -->", "<!-- to here -->"


def _write_between_markers(path: Path, table: str) -> None:
    """Replace the measured part of the report and keep the written analysis around it."""
    text = path.read_text() if path.is_file() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = f"{BEGIN}\n{END}\n\n{text}"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("reports/performance"))
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    options = ProcessOptions(checkpoint=args.checkpoint, device=args.device, detector="centerface")
    session = find_inputs([args.video]).sessions[0]
    info = probe(session.videos[0])[0].to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure_in_process(session, options, args.runs, Path(tmp))
        if not args.skip_dask:
            rows += measure_dask(args.video, options, args.runs, Path(tmp))
    command = f"python benchmarks/bench.py {args.video.name} --runs {args.runs} --device {args.device}"
    write_report(args.out, args.video, info, rows, command, options)
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
