"""KE2NT's losses: cross-entropy, the emotional-to-neutral transformation, and self-contrast.

With ``f_e`` the visual feature, ``f_n`` its neutral transform, ``t_y`` the text embedding of the
sample's class and ``t_0`` that of neutral, on non-neutral samples only:

- transformation: ``1 - cos(normalize(f_e - f_n), normalize(t_y - t_0))``;
- self-contrast: ``t_y . f_n - t_y . f_e + 2`` (all unit vectors), anchor ``t_y``, positive
  ``f_e``, negative ``f_n``. ``pairing="own"`` compares each sample with its own pair, as the paper
  means; ``pairing="batch"`` averages the full batch-by-batch matrix, as the reference code does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a label distribution (one-hot targets give the ordinary loss)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def transformation_loss(
    emotional: torch.Tensor, neutral: torch.Tensor, class_text: torch.Tensor, neutral_text: torch.Tensor
) -> torch.Tensor:
    """Mean of ``1 - cos(f_e - f_n, t_y - t_0)`` over the rows given."""
    visual_shift = F.normalize(emotional - neutral, dim=-1)
    text_shift = F.normalize(class_text - neutral_text, dim=-1)
    return (1.0 - (visual_shift * text_shift).sum(dim=-1)).mean()


def self_contrast_loss(
    emotional: torch.Tensor, neutral: torch.Tensor, class_text: torch.Tensor, pairing: str = "own"
) -> torch.Tensor:
    """Mean of ``t_y . f_n - t_y . f_e + 2``, per sample (``own``) or over all pairs (``batch``)."""
    anchor = F.normalize(class_text, dim=-1)
    positive = F.normalize(emotional, dim=-1)
    negative = F.normalize(neutral, dim=-1)
    if pairing == "own":
        return ((anchor * negative).sum(-1) - (anchor * positive).sum(-1) + 2.0).mean()
    if pairing == "batch":
        return (anchor @ negative.t() - anchor @ positive.t() + 2.0).mean()
    raise ValueError(f"pairing must be 'own' or 'batch', not {pairing!r}")


@dataclass
class KE2NTLoss:
    """CE + transformation + self-contrast, weights 1, 1, 1 by default (the reference's)."""

    neutral_index: int
    transform_weight: float = 1.0
    contrast_weight: float = 1.0
    pairing: str = "own"

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        labels: torch.Tensor,
        emotional: torch.Tensor | None = None,
        neutral: torch.Tensor | None = None,
        class_embeddings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        parts = {"ce": soft_cross_entropy(logits, targets)}
        total = parts["ce"]
        expressive = labels != self.neutral_index
        if emotional is not None and neutral is not None and class_embeddings is not None and expressive.any():
            f_e, f_n = emotional[expressive].float(), neutral[expressive].float()
            t_y = class_embeddings[labels[expressive]].float()
            t_0 = class_embeddings[self.neutral_index].float().expand_as(t_y)
            parts["transform"] = transformation_loss(f_e, f_n, t_y, t_0)
            parts["contrast"] = self_contrast_loss(f_e, f_n, t_y, self.pairing)
            total = total + self.transform_weight * parts["transform"] + self.contrast_weight * parts["contrast"]
        parts["total"] = total
        return parts
