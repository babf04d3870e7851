"""What configures a run: the options (``ProcessOptions``) and the weights it uses (``ModelIdentity``).

Both are small frozen records that the client resolves once and hands to every worker unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fermon.errors import InputError, UsageError
from fermon.faces.detector import DEFAULT_MIN_FACE
from fermon.faces.runtime import PRECISIONS
from fermon.faces.track import TARGET_MODES

SESSION_MODES = ("file", "folder")
DEVICES = ("auto", "cpu", "cuda")


# Face crops per classifier call. On 2 CPU cores 16 beat 64 at 5 samples/s and every frame alike
# (reports/performance.md: 6% faster with AMX, 11-15% without), probably because smaller calls
# interleave with the detection threads instead of holding a core in long bursts.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class ProcessOptions:
    """Everything that configures a run. ``relevant()`` is the part that shapes a timeline."""

    fps: float = 5.0
    target: str = "largest"
    checkpoint: str = "default"
    detector: str = "auto"
    model_dir: str | None = None
    threshold: float = 0.5
    min_face: float = DEFAULT_MIN_FACE  # video pixels; sets the detector's input scale
    whole_frames: bool = False  # search every sample whole, not only around the faces of the one before
    device: str = "auto"
    precision: str = "auto"  # the networks' number format (fermon.faces.runtime.network_dtype)
    batch_size: int = DEFAULT_BATCH_SIZE
    session_by: str = "file"
    threads: int | None = None  # detection threads per worker; None: the cores available
    target_reference: str | None = None  # a photo of the patient: the person nearest it is the target
    identity: bool = True  # False: no face-recognition model; tracks join into persons by position only
    manifest: str | None = None  # a study manifest (fermon.inputs.manifest): sessions, patients, starts

    def validate(self) -> None:
        """Raise UsageError, naming the option, for any value that cannot work."""
        if not math.isfinite(self.fps) or self.fps < 0:
            raise UsageError("--fps must be 0 (every frame) or a positive number of samples per second")
        if self.target not in TARGET_MODES:
            raise UsageError(f"--target must be one of {', '.join(TARGET_MODES)}")
        if self.session_by not in SESSION_MODES:
            raise UsageError("--session-by must be 'file' or 'folder'")
        if not 0 < self.threshold < 1:
            raise UsageError(f"--threshold must be between 0 and 1 (exclusive), not {self.threshold:g}")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if not math.isfinite(self.min_face) or self.min_face <= 0:
            raise UsageError("--min-face must be a positive width in pixels")
        if self.device not in DEVICES:
            raise UsageError("--device must be auto, cpu or cuda")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.precision == "float16" and self.device == "cpu":
            raise UsageError("--precision float16 runs on CUDA only; on a CPU use auto, bfloat16 or float32")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if self.target_reference is not None:
            if not Path(self.target_reference).is_file():
                raise InputError(f"{self.target_reference}: no such reference photo (--target-reference)")
            if self.target != "largest":
                raise UsageError("--target-reference chooses the target itself: leave out --target")
            if not self.identity:
                raise UsageError("--target-reference needs the identity model")

    def relevant(self) -> dict[str, Any]:
        """Options that change the rows written (device, precision, batch size and workers do not: the
        precision moves probabilities by 0.0004 on average, as the device does)."""
        from fermon.people.linking import identity_settings

        return {
            "fps": float(self.fps),
            "target": self.target,
            "threshold": float(self.threshold),
            "min_face": float(self.min_face),  # 64 and 64.0 are one setting
            "whole_frames": self.whole_frames,
            "session_by": self.session_by,
            "identity": identity_settings() if self.identity else None,
            # The photo's content, not its name: another photo of the same name is another setting.
            "target_reference_sha256": reference_sha256(self.target_reference) if self.target_reference else None,
        }

    def public(self) -> dict[str, Any]:
        """The configuration as written to outputs: no absolute paths."""
        config = asdict(self)
        config["checkpoint"] = "default" if self.checkpoint == "default" else Path(self.checkpoint).name
        config["model_dir"] = Path(self.model_dir).name if self.model_dir else None
        # Its hash only: a photo's file name is often the patient's name.
        config["target_reference"] = reference_sha256(self.target_reference) if self.target_reference else None
        config["manifest"] = Path(self.manifest).name if self.manifest else None
        return config


def reference_sha256(path: str) -> str:
    """The sha256 of a reference photo's bytes. Raises InputError when it cannot be read."""
    from fermon.faces.detector import file_sha256

    try:
        return file_sha256(Path(path))
    except OSError as error:
        raise InputError(f"{Path(path).name}: cannot read the reference photo ({error.strerror})") from error


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights a run uses, resolved once in the client and checked again in each worker."""

    model_name: str
    checkpoint_path: str
    checkpoint_sha256: str
    class_names: tuple[str, ...]
    detector_name: str
    detector_path: str
    detector_sha256: str
    # sha256 of the checkpoint file's bytes (``checkpoint_sha256`` hashes its tensors): the name of the
    # copy a cluster worker is sent (fermon.run.cluster), so that a client-only path works on any worker.
    checkpoint_file_sha256: str = ""

    def fingerprint(self) -> dict[str, Any]:
        return {
            "checkpoint_sha256": self.checkpoint_sha256,
            "class_names": list(self.class_names),
            "detector": self.detector_name,
            "detector_sha256": self.detector_sha256,
        }


def resolve_models(options: ProcessOptions) -> ModelIdentity:
    """Load the checkpoint's metadata and hash the detector file, without building the detector."""
    from fermon.expression.checkpoint import load_checkpoint
    from fermon.faces.detector import file_sha256, resolve_detector

    checkpoint = load_checkpoint(options.checkpoint)
    name, detector_path = resolve_detector(options.detector, options.model_dir)
    metadata = checkpoint.metadata
    return ModelIdentity(
        model_name=str(metadata.get("name") or checkpoint.path.stem),
        checkpoint_path=str(checkpoint.path.resolve()),
        checkpoint_sha256=str(metadata["content_sha256"]),
        class_names=tuple(checkpoint.class_names),
        detector_name=name,
        detector_path=str(detector_path),
        detector_sha256=file_sha256(detector_path),
        checkpoint_file_sha256=file_sha256(checkpoint.path),
    )
