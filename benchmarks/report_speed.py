"""How long ``fermon report`` takes over many sessions: a full build, a rebuild with nothing changed,
and a rebuild after a night that added a few sessions.

    python benchmarks/report_speed.py VIDEO --sessions 200 --out reports/performance/reports.json

Processes VIDEO once (or takes ``--timeline FILE``, an existing timeline, instead), then copies its
timeline under ``--sessions`` session ids (the footer and column rewritten, so each copy is a session
of its own) and builds the reports with one process per core, as ``fermon report`` does. Also says
how long rewriting ``episodes.parquet`` from the stored rows of every session took in the new night's
build (``episodes_table_seconds``; the episodes of unchanged sessions are not recomputed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fermon.report import build_reports
from fermon.run.process import ProcessOptions, run_process
from fermon.run.timeline import METADATA_KEY, TIMELINES_DIR


def copy_session(source: Path, folder: Path, session_id: str) -> None:
    table = pq.read_table(source)
    footer = json.loads(table.schema.metadata[METADATA_KEY])
    footer["session_id"] = session_id
    column = pa.array([session_id] * table.num_rows, type=table.schema.field("session_id").type)
    table = table.set_column(table.schema.get_field_index("session_id"), "session_id", column)
    table = table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY: json.dumps(footer)})
    pq.write_table(table, folder / f"{session_id}.parquet")


def timed_build(out: Path, workers: int, force: bool = False) -> tuple[float, int, float]:
    started = time.perf_counter()
    result = build_reports(out, force=force, workers=workers)
    return time.perf_counter() - started, len(result.built), getattr(result, "episodes_seconds", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, nargs="?")
    parser.add_argument("--timeline", type=Path, help="an existing timeline to copy (VIDEO is then not processed)")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--changed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/performance/reports.json"))
    args = parser.parse_args()
    if (args.video is None) == (args.timeline is None):
        parser.error("give VIDEO or --timeline FILE")
    workers = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        if args.timeline is not None:
            source = args.timeline
        else:
            processed = Path(tmp) / "processed"
            summary = run_process([args.video], processed, ProcessOptions(), workers=0)
            source = processed / summary.done[0].output
        rows = pq.read_metadata(source).num_rows
        out = Path(tmp) / "cohort"
        (out / TIMELINES_DIR).mkdir(parents=True)
        for number in range(args.sessions):
            copy_session(source, out / TIMELINES_DIR, f"patient-{number:04d}")
        full, built, _ = timed_build(out, workers)
        unchanged, _, _ = timed_build(out, workers)
        for number in range(args.changed):
            copy_session(source, out / TIMELINES_DIR, f"new-{number:04d}")
        night, night_built, episodes_table = timed_build(out, workers)
        shutil.rmtree(out)
    result = {
        "command": f"python benchmarks/report_speed.py {(args.video or args.timeline).name} --sessions {args.sessions}",
        "timeline_rows_per_session": rows,
        "processes": workers,
        "full_build": {
            "sessions": built,
            "seconds": round(full, 2),
            "ms_per_page_per_process": round(1000 * full * workers / built, 1),
        },
        "nothing_changed": {"seconds": round(unchanged, 3)},
        "new_sessions": {
            "built": night_built,
            "seconds": round(night, 2),
            "episodes_table_seconds": round(episodes_table, 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
