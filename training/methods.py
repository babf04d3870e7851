"""The training methods, as a registry: each declares what it adds to the shared KE2NT model and loss
and what its checkpoint keeps, so the loop and the export never branch on a method's name.

Every method trains the one model of ``fermon.expression.model`` (backbone, projection, cosine logits over class
embeddings) with cross-entropy; ``KE2NTLoss`` adds the emotional-to-neutral and self-contrast terms
when the model has a neutral transform. A new method is a new module with a
:class:`~training.method.Method`, registered here; the pre-training methods (HNCL) are in
``training/hncl.py``'s own registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fermon.errors import UsageError
from training.method import Method
from training.pmfer import PMFER
from training.vocabulary import class_prompts

if TYPE_CHECKING:
    from training.config import TrainConfig


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UsageError(f"unknown method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_names() -> list[str]:
    return sorted(METHODS)


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
register_method(PMFER)
