"""What averaging each face with its mirror image costs `fermon process`, in one run.

    python benchmarks/make_video.py ward60.mp4 --seconds 60
    python benchmarks/flip_cost.py ward60.mp4 --runs 5

The same checkpoint twice: as it ships, and with ``flip_average`` set in its metadata (the same
tensors; the classifier then reads every crop and its mirror and averages the logits). The full
pipeline runs in-process at 5 samples/s, the two alternating run by run so that drift on this
shared machine falls on both; the report gives each one's median and their ratio. Accuracy of the
flip-averaged model is measured elsewhere (`reports/accuracy/ensemble.py`). Writes
``reports/performance/flip-average.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import machine  # the benchmark's folder is on sys.path when run as a script

from fermon.expression.checkpoint import load_checkpoint, save_checkpoint
from fermon.inputs.discover import find_inputs
from fermon.run.options import ProcessOptions, resolve_models
from fermon.run.session import process_session
from fermon.video import probe


def write_flip_averaged(spec: str, path: Path) -> Path:
    """A copy of the checkpoint whose metadata asks for mirror averaging; the tensors are untouched."""
    checkpoint = load_checkpoint(spec)
    save_checkpoint(path, checkpoint.build_model(), dict(checkpoint.metadata, flip_average=True))
    return path


def time_alternating(session, variants: dict[str, ProcessOptions], runs: int, out: Path) -> dict[str, list[float]]:
    identities = {name: resolve_models(options) for name, options in variants.items()}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for attempt in range(runs + 1):  # the first round warms models and caches and is not counted
        for name, options in variants.items():
            started = time.perf_counter()
            result = process_session(session, options, identities[name], str(out))
            if result.status != "done":
                raise SystemExit(f"{name}: {result.error}")
            if attempt:
                seconds[name].append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--out", type=Path, default=Path("reports/performance/flip-average.json"))
    args = parser.parse_args()
    session = find_inputs([args.video]).sessions[0]
    base = ProcessOptions(checkpoint=args.checkpoint, device="cpu", detector="centerface", fps=5.0, batch_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        flipped = write_flip_averaged(args.checkpoint, Path(tmp) / "flip-averaged.safetensors")
        variants = {"as shipped": base, "flip-averaged": replace(base, checkpoint=str(flipped))}
        seconds = time_alternating(session, variants, args.runs, Path(tmp) / "out")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    payload = {
        "command": f"python benchmarks/flip_cost.py {args.video.name} --runs {args.runs}",
        "video": {"name": args.video.name, **probe(session.videos[0])[0].to_dict()},
        "machine": machine(),
        "checkpoint": args.checkpoint,
        "seconds": seconds,
        "median_s": medians,
        "flip_averaged_over_shipped": round(medians["flip-averaged"] / medians["as shipped"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: payload[k] for k in ("median_s", "flip_averaged_over_shipped")}, indent=2))


if __name__ == "__main__":
    main()
