"""The codec and creation time come from the container's header as FFmpeg's demuxers read it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fermon.inputs.containers import container_facts
from tests.videos import blank_frames, write_video


@pytest.mark.parametrize(
    ("name", "codec", "params", "expected"),
    [
        ("phone.mov", "libx265", ("-tag:v", "hvc1"), "hevc"),
        ("camera.mov", "libx265", ("-tag:v", "hev1"), "hevc"),
        # A title that names another codec: a search of the header's bytes reads it before the
        # track's own codec ID and calls this HEVC file H.264.
        ("export.mkv", "libx265", ("-metadata", "title=avc1 export V_MPEG4/ISO/AVC"), "hevc"),
        ("clip.mkv", "libvpx-vp9", (), "vp9"),
        ("clip.avi", "mjpeg", (), "mjpeg"),
        ("clip.mp4", "libx264", ("-metadata", "comment=hvc1"), "h264"),
    ],
)
def test_codec_is_read_from_the_container(tmp_path: Path, name: str, codec: str, params: tuple, expected: str) -> None:
    path = write_video(tmp_path / name, blank_frames(0.5, 10), codec=codec, extra_params=params)
    assert container_facts(path).codec == expected


def test_hevc_mov_with_creation_time(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "ward.mov", blank_frames(0.5, 10), codec="libx265", creation_time="2026-10-25T00:30:00Z",
        extra_params=("-tag:v", "hvc1"),
    )  # fmt: skip
    facts = container_facts(path)
    assert (facts.codec, facts.created) == ("hevc", datetime(2026, 10, 25, 0, 30, tzinfo=UTC))


def test_unreadable_container_says_neither(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mov"
    junk.write_bytes(b"\x00\x00\x00\x14ftypqt  " + bytes(200))
    facts = container_facts(junk)
    assert (facts.codec, facts.created) == ("unknown", None)
