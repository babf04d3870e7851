"""What a training method is: what it adds to the shared KE2NT model and loss (see :mod:`training.methods`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from fermon.expression.model import KE2NT
    from training.config import TrainConfig


class TrainingExtra(Protocol):
    """A method's training-only module (PMFER's head): kept outside the model, so checkpoints stay
    ordinary KE2NT ones. Its losses are added to the total under the method's name."""

    needs_feature_map: bool

    def losses(
        self,
        feature_map: torch.Tensor,
        emotional: torch.Tensor,
        labels: torch.Tensor,
        class_embeddings: torch.Tensor,
        rng: Any,
    ) -> dict[str, torch.Tensor]: ...


PromptBuilder = Callable[[Sequence[str], "TrainConfig"], list[str]]
ExtraBuilder = Callable[["TrainConfig", "KE2NT", list[str]], nn.Module]


@dataclass(frozen=True)
class Method:
    """One supervised training method.

    ``learn_class_embeddings``: class vectors are learned weights, not text (the cross-entropy
    baseline; its checkpoint records no prompts or text encoder). ``neutral_transform``: the model
    carries KE2NT's emotional-to-neutral MLP, which switches on its two losses (training only).
    ``prompts``: the class prompts whose text embeddings the classifier compares against.
    ``extra``: a training-only module whose losses are added (None for most)."""

    name: str
    summary: str
    prompts: PromptBuilder
    learn_class_embeddings: bool = False
    neutral_transform: bool = False
    extra: ExtraBuilder | None = None

    @property
    def uses_text(self) -> bool:
        """Whether the checkpoint's class embeddings come from text (and it records prompts)."""
        return not self.learn_class_embeddings
