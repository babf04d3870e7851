"""The display zone's default: this machine's own time zone, found as cron and systemd find it.

Without ``--timezone`` (and none kept in ``DIR/clinical.json``), the reports show wall-clock times
in the zone named by ``TZ``, else by the ``/etc/localtime`` link (``/usr/share/zoneinfo/Europe/Berlin``),
else by ``/etc/timezone``. A zone that is UTC counts as none set: containers and many servers are UTC
because nobody set a zone, and the study manifest's UTC offset is then nearer the patient's clock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# The tz database's names for UTC itself.
UTC_NAMES = frozenset(
    {"UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich"}
    | {f"Etc/{name}" for name in ("UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich")}
)
LOCALTIME = Path("/etc/localtime")
TIMEZONE_FILE = Path("/etc/timezone")


def machine_zone(
    environ: Mapping[str, str] | None = None, localtime: Path = LOCALTIME, timezone_file: Path = TIMEZONE_FILE
) -> str | None:
    """The IANA name of this machine's time zone, or None where none is set, it is UTC, or ``TZ``
    holds a rule with no IANA name (``CET-1CEST``)."""
    environ = os.environ if environ is None else environ
    if "TZ" in environ:
        return _zone_name(environ["TZ"].lstrip(":"))
    if localtime.is_symlink():
        return _zone_name(os.readlink(localtime))
    try:
        return _zone_name(timezone_file.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return None


def _zone_name(text: str) -> str | None:
    """``Europe/Berlin``, or the part of a zoneinfo path after ``zoneinfo/``, if the tz database knows it."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = text.split("zoneinfo/", 1)[1] if "zoneinfo/" in text else text
    if not name or name.startswith("/") or name in UTC_NAMES:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name
