"""What a report build reads besides the timelines: the ledger's failures (read-only, through
:class:`~fermon.run.ledger.Ledger`), the previous build's manifest, and a session's decode gaps."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fermon.run.ledger import LEDGER_NAME, Ledger


def read_failures(out_dir: Path) -> list[dict[str, Any]]:
    """Inputs whose latest attempt failed (or never finished), read-only from the ledger: failed
    sessions, and the bad files of sessions that were done without them (a folder's corrupt chunk)."""
    path = out_dir / LEDGER_NAME
    if not path.is_file():
        return []
    with Ledger(out_dir, read_only=True) as ledger:
        rows = ledger.all()
    failures = []
    for row in rows:
        session_id, videos, status, error = row["session_id"], row["videos"], row["status"], row["error"]
        finished, started, details = row["finished_at"], row["started_at"], row["details"]
        when = finished or started
        stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M") if when else ""
        if status == "retired":  # its videos belong to other sessions now: nothing failed
            continue
        if status == "done":
            for video in json.loads(details or "{}").get("failed_videos", []):
                failures.append(
                    {
                        "session_id": session_id,
                        "videos": [video["video"]],
                        "status": "video failed",
                        "error": video["reason"],
                        "when": stamp,
                    }
                )
            continue
        failures.append(
            {
                "session_id": session_id,
                "videos": json.loads(videos or "[]"),
                "status": "interrupted" if status == "running" else status,
                "error": error if status != "running" else "the run stopped before this session finished",
                "when": stamp,
            }
        )
    return failures


def file_stamp(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def load_manifest(path: Path, builder: dict[str, Any]) -> dict[str, Any]:
    """Recorded sessions, or none when the manifest is missing, unreadable or from another builder."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest.get("sessions", {}) if manifest.get("builder") == builder else {}


def session_gaps(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode gaps moved onto the session's time axis (each video starts at its offset)."""
    offsets = {v["video"]: float(v.get("offset_s") or 0.0) for v in metadata.get("videos") or []}
    return [
        {
            **g,
            "start_s": g["start_s"] + offsets.get(g["video"], 0.0),
            "end_s": g["end_s"] + offsets.get(g["video"], 0.0),
        }
        for g in metadata.get("decode_gaps") or []
    ]
