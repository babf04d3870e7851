"""The training methods, as a registry: each declares what it adds to the shared KE2NT model and loss
and what its checkpoint keeps, so the loop and the export never branch on a method's name.

Every method trains the one model of ``fermon.model`` (backbone, projection, cosine logits over class
embeddings) with cross-entropy; ``KE2NTLoss`` adds the emotional-to-neutral and self-contrast terms
when the model has a neutral transform. A new method is a new module with a :class:`Method` and one
``register_method`` call; the pre-training methods (HNCL) are in ``training/hncl.py``'s own registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from fermon.errors import UsageError
from training.vocabulary import class_prompts

if TYPE_CHECKING:
    from fermon.model import KE2NT
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


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    _load_entries()
    if name not in METHODS:
        raise UsageError(f"unknown method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_names() -> list[str]:
    _load_entries()
    return sorted(METHODS)


def _load_entries() -> None:
    """Methods defined in modules of their own register themselves when imported."""
    import training.pmfer  # noqa: F401


def template_prompts(class_names: Sequence[str], config: TrainConfig) -> list[str]:
    return class_prompts(class_names, config.prompt_template)


register_method(
    Method(
        "ce",
        "cross-entropy baseline: the same network and head, class vectors learned, no text",
        template_prompts,  # only the text width is used: the vectors start random
        learn_class_embeddings=True,
    )
)
register_method(
    Method(
        "ke2nt",
        "KE2NT: fixed prompt embeddings, emotional-to-neutral transformation and self-contrast losses",
        template_prompts,
        neutral_transform=True,
    )
)
