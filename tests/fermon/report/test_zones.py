"""The display zone's default: this machine's own zone, as cron and systemd find it (TZ, the
/etc/localtime link, /etc/timezone), with UTC counted as no zone set."""

from __future__ import annotations

from pathlib import Path

import pytest

from fermon.report.zones import machine_zone


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    return tmp_path / "etc"


def test_tz_names_the_zone(etc: Path) -> None:
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Tokyo")
    paths = {"localtime": etc / "localtime", "timezone_file": etc / "timezone"}
    assert machine_zone({"TZ": "America/New_York"}, **paths) == "America/New_York"
    assert machine_zone({"TZ": ":Europe/Berlin"}, **paths) == "Europe/Berlin"
    assert machine_zone({"TZ": "/usr/share/zoneinfo/Europe/Paris"}, **paths) == "Europe/Paris"
    # TZ overrides the link even where it names no IANA zone (a POSIX rule) or UTC: then no zone is set.
    assert machine_zone({"TZ": "CET-1CEST,M3.5.0,M10.5.0/3"}, **paths) is None
    assert machine_zone({"TZ": "UTC"}, **paths) is None and machine_zone({"TZ": ""}, **paths) is None


def test_the_localtime_link_then_etc_timezone(etc: Path) -> None:
    localtime, timezone_file = etc / "localtime", etc / "timezone"
    localtime.symlink_to("../usr/share/zoneinfo/Asia/Tokyo")  # relative, as some systems link it
    assert machine_zone({}, localtime, timezone_file) == "Asia/Tokyo"
    localtime.unlink()
    localtime.symlink_to("/usr/share/zoneinfo/Etc/UTC")
    assert machine_zone({}, localtime, timezone_file) is None
    localtime.unlink()
    localtime.write_bytes(b"TZif")  # a copied file names no zone: Debian's /etc/timezone does
    timezone_file.write_text("Europe/Berlin\n")
    assert machine_zone({}, localtime, timezone_file) == "Europe/Berlin"
    timezone_file.write_text("Nowhere/Special\n")
    assert machine_zone({}, localtime, timezone_file) is None
    timezone_file.unlink()
    assert machine_zone({}, localtime, timezone_file) is None
