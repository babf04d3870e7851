"""Stage: videos in, sampled RGB frames out.

- :mod:`~fermon.video.probe`: open a video with decord (a one-line reason when it does not open),
  its container facts and every frame's start time from its index;
- :mod:`~fermon.video.decode`: the sampled frames, decoded by FFmpeg through PyAV in batches, one
  thread ahead of their consumer, with the stretches that do not decode reported as gaps.
"""

from fermon.video.decode import (
    BATCH_SAMPLES,
    DecodeGap,
    FrameBatch,
    iter_batches,
    read_ahead,
    release_freed_memory,
    sample_indices,
)
from fermon.video.probe import (
    VideoInfo,
    decoder_reason,
    native_stderr_silenced,
    open_reader,
    probe,
    quick_duration,
)

__all__ = [
    "BATCH_SAMPLES",
    "DecodeGap",
    "FrameBatch",
    "VideoInfo",
    "decoder_reason",
    "iter_batches",
    "native_stderr_silenced",
    "open_reader",
    "probe",
    "quick_duration",
    "read_ahead",
    "release_freed_memory",
    "sample_indices",
]
