"""The fermon checkpoint: one safetensors file, its JSON metadata in the header. Never unpickled.

Metadata (key ``fermon`` of the safetensors header, a JSON object): ``format``, ``name``,
``method``, ``architecture`` (the whole :class:`~fermon.expression.model.Architecture`), ``class_names`` in
logit order, ``prompts``, ``text_encoder``, ``crop`` (template points, size and colour),
``temperature`` (calibration, applied at inference), ``class_bias`` (optional per-class offsets
added after the temperature: a prior adjustment for the rare classes), ``flip_average`` (logits
averaged over each crop and its mirror image), ``training`` (data, recipe), ``metrics``
(validation figures) and ``content_sha256``, a hash of the tensors that loading verifies. The
class text embeddings are the tensor ``class_embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fermon.errors import ModelError
from fermon.expression.model import KE2NT, Architecture
from fermon.inputs.storage import atomic_path

FORMAT = "fermon-checkpoint/1"
METADATA_KEY = "fermon"
DEFAULT_CHECKPOINT_NAME = "ke2nt_cnn48_ferplus.safetensors"
# The models that ship inside the package, by the name users pass as --checkpoint. `fast` is the
# small CPU model (the default); `accurate` is dlib's face-recognition ResNet fine-tuned (issue 14),
# the model a GPU run uses when none is named.
EMBEDDED_CHECKPOINTS = {
    "default": DEFAULT_CHECKPOINT_NAME,
    "fast": DEFAULT_CHECKPOINT_NAME,
    "accurate": "ke2nt_dlib112_ferplus.safetensors",
}
AUTO_CHECKPOINT = "auto"  # --checkpoint's default: `accurate` on a GPU, else `default`


def embedded_checkpoint_path(name: str) -> Path:
    """The file of an embedded model (``default``, ``fast``, ``accurate``) inside the installed package."""
    return Path(str(resources.files("fermon").joinpath("weights", EMBEDDED_CHECKPOINTS[name])))


def default_checkpoint_path() -> Path:
    """The embedded default checkpoint inside the installed package."""
    return embedded_checkpoint_path("default")


def checkpoint_for_device(spec: str | None, device: str) -> str:
    """The checkpoint a run uses: the one named, or for ``auto``/None the embedded model for the device.

    On a GPU (``--device cuda``, or ``auto`` where CUDA is available) that is ``accurate`` where this
    installation ships it: the larger network costs little there. On a CPU, or without ``accurate``,
    it is ``default``, the small model that keeps a night's batch fast.
    """
    if spec is not None and spec != AUTO_CHECKPOINT:
        return spec
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "accurate" if on_gpu and embedded_checkpoint_path("accurate").is_file() else "default"


def resolve_checkpoint(spec: str | os.PathLike[str] | None) -> Path:
    """``None`` means the embedded default, an embedded model's name that model; anything else is a path."""
    if spec is None:
        return default_checkpoint_path()
    if str(spec) in EMBEDDED_CHECKPOINTS:
        return embedded_checkpoint_path(str(spec))
    return Path(spec)


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors and metadata, before a model is built from them."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    path: Path

    @property
    def architecture(self) -> Architecture:
        return Architecture.from_dict(self.metadata["architecture"])

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("temperature", 1.0))

    @property
    def class_bias(self) -> np.ndarray:
        """Per-class offsets added to the tempered logits (a prior adjustment fitted on validation;
        zeros for checkpoints without one)."""
        bias = self.metadata.get("class_bias")
        return np.zeros(len(self.class_names), np.float32) if bias is None else np.asarray(bias, np.float32)

    @property
    def flip_average(self) -> bool:
        """Whether the model reads each crop and its mirror image and averages their logits (its
        temperature was fitted on the averaged logits)."""
        return bool(self.metadata.get("flip_average", False))

    @property
    def short_hash(self) -> str:
        return self.metadata["content_sha256"][:16]

    def build_model(self) -> KE2NT:
        """A KE2NT model in eval mode with these weights, in float32."""
        model = KE2NT(
            self.architecture,
            self.tensors["class_embeddings"],
            logit_scale=float(self.tensors["logit_scale"].float().exp()),
        )
        state = {
            name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in self.tensors.items()
        }
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{self.path.name}: weights do not fit the architecture "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model.eval()


def stored_tensors(model: KE2NT, half: bool = True) -> dict[str, torch.Tensor]:
    """The inference weights as a checkpoint stores them: fp16, except where fp16 buys nothing.

    BatchNorm statistics and the logit scale stay float32 (they are tiny, and fp16 would shift them).
    """
    tensors = {}
    for name, tensor in model.inference_state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        keep_fp32 = "running_" in name or name == "logit_scale"
        tensors[name] = tensor.half() if half and tensor.is_floating_point() and not keep_fp32 else tensor
    return tensors


def save_checkpoint(
    path: str | os.PathLike[str], model: KE2NT, metadata: dict[str, Any], half: bool = True
) -> dict[str, Any]:
    """Write the model's inference weights (fp16 by default) and metadata; return the metadata written."""
    tensors = stored_tensors(model, half)
    full = dict(metadata)
    full.update(
        format=FORMAT,
        architecture=model.architecture.to_dict(),
        content_sha256=content_hash(tensors),
    )
    full.setdefault("temperature", 1.0)
    path = Path(path)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={METADATA_KEY: json.dumps(full, sort_keys=True)})
    return full


def load_checkpoint(spec: str | os.PathLike[str] | None = None) -> Checkpoint:
    """Read and verify a checkpoint (``None``/``"default"``: the embedded one)."""
    path = resolve_checkpoint(spec)
    if not path.is_file():
        if str(spec) in EMBEDDED_CHECKPOINTS:
            raise ModelError(
                f"{path.name}: the embedded model '{spec}' is not in this version of fermon "
                "(reports/accuracy.md says why); name a checkpoint file instead"
            )
        raise ModelError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path.name}: not a safetensors checkpoint ({error})") from error
    if METADATA_KEY not in header:
        raise ModelError(f"{path.name}: safetensors file without fermon metadata")
    metadata = json.loads(header[METADATA_KEY])
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{path.name}: unsupported checkpoint format {metadata.get('format')!r}")
    if content_hash(tensors) != metadata.get("content_sha256"):
        raise ModelError(f"{path.name}: content hash mismatch, the file is damaged")
    return Checkpoint(tensors=tensors, metadata=metadata, path=path)


def write_untrained_checkpoint(
    path: str | os.PathLike[str], architecture: str = "cnn48", seed: int = 0, embedding_dim: int = 384
) -> dict[str, Any]:
    """A valid checkpoint with random weights, for building and testing the pipeline without training.

    Its metadata says ``"method": "untrained"``; its probabilities mean nothing.
    """
    from fermon.expression.model import load_architecture
    from fermon.expression.vocab import canonical_classes
    from fermon.faces.align import crop_template

    torch.manual_seed(seed)
    arch = load_architecture(architecture)
    classes = canonical_classes()
    model = KE2NT(arch, torch.randn(len(classes), embedding_dim))
    template = crop_template(arch.crop)
    metadata = {
        "name": f"untrained-{architecture}",
        "method": "untrained",
        "class_names": classes,
        "crop": {"template": arch.crop, "size": template["size"], "points": template["points"], "colour": arch.colour},
        "temperature": 1.0,
    }
    return save_checkpoint(path, model.eval(), metadata)
