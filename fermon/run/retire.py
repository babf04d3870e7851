"""Sessions that no input maps to any more: retired, never silently deleted.

After a change of session layout (a study manifest after plain runs, ``--session-by folder`` after
file mode), the same videos belong to new sessions, and the old timelines would be counted twice by
anything that reads ``DIR/timelines/``. A session is retired when **every** one of its videos is part
of another session of this run, with the content it had: its timeline moves to ``DIR/retired/`` and its ledger row says
``retired``. A session whose videos this run did not see (a mount that is down, a manifest row not
copied yet, a run over another folder into the same ``DIR``) is left as it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fermon.inputs import storage
from fermon.inputs.sessions import Session
from fermon.run.ledger import Ledger
from fermon.run.plan import content_fingerprint

RETIRED_DIR = "retired"


def retire_stale_sessions(sessions: list[Session], ledger: Ledger, out: Path | str) -> list[str]:
    """Retire the sessions whose videos this run maps, all of them and unchanged (the same content
    fingerprint as when the session was made), to other sessions; their ids."""
    current = {session.session_id for session in sessions}
    mapped = {video.relative: session.session_id for session in sessions for video in session.videos}
    files = {video.relative: video for session in sessions for video in session.videos}
    retired = []
    for row in ledger.all():
        if row["session_id"] in current or row["status"] == "retired":
            continue
        videos = json.loads(row["videos"] or "[]")
        if not videos or not all(video in mapped for video in videos):
            continue
        # The same names under another input (another folder into the same DIR) are not these videos.
        if (
            content_fingerprint(Session(row["session_id"], [files[video] for video in videos]))
            != row["input_fingerprint"]
        ):
            continue
        moved = _move_aside(out, row["output"], row["session_id"]) if row["output"] else None
        ledger.retire(row["session_id"], moved, sorted({mapped[video] for video in videos}))
        retired.append(row["session_id"])
    return retired


def _move_aside(out: Path | str, output: str, session_id: str) -> str | None:
    """Move a timeline from ``DIR/timelines/`` to ``DIR/retired/`` (a stamped name if one is there);
    the new path relative to ``DIR``, or None when there was no file."""
    source = storage.join(out, *output.split("/"))
    if not storage.is_file(source):
        return None
    name = f"{session_id}.parquet"
    if storage.is_file(storage.join(out, RETIRED_DIR, name)):
        name = f"{session_id}.{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    target = storage.join(out, RETIRED_DIR, name)
    storage.write_bytes_atomic(target, storage.read_bytes(source))
    storage.remove(source)
    return f"{RETIRED_DIR}/{name}"
