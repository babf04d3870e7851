"""PMFER: fine-grained action-unit prompts, prompt masking with cross-attention, modal-adversarial training.

Ren et al., "Facial Expression Monitoring via Fine-Grained Vision-Language Alignment", IEEE T-ASE
2024. From the abstract: class prompts are built from facial action units instead of "a photo of
[class]"; during training one phrase of a prompt is dropped at random and predicted through
cross-attention between the two modalities; a modal-adversarial strategy closes the gap between
visual and text embeddings in a common space.

The full text is not public; these details are our choices, the simplest that follow the abstract:

- Prompts: "a photo of a face with {phrases}." with one phrase per prototype action unit
  (``fermon/data/prompts.json``: ``action_units`` and the ``au`` templates); phrases joined with
  commas and "and". Their text embeddings are the KE2NT class embeddings (centred like KE2NT's when
  ``center_text``), so inference is KE2NT's cosine classifier and a checkpoint is an ordinary one.
- Masking: each sample's class prompt loses one of its phrases, uniformly at random (neutral's single
  phrase leaves "a photo of a face."). Every masked prompt is encoded once before training.
- Cross-attention predictor: query = the masked prompt's text embedding, projected to 256-d; keys
  and values = the backbone's spatial feature map (``forward_features``) as tokens, projected to
  256-d with LayerNorm; one ``nn.MultiheadAttention`` layer (4 heads), residual on the query, then a
  linear map back to the text space. Its output is scored by cosine (scale 1/0.07) against the
  embeddings of all distinct AU phrases; cross-entropy to the dropped phrase.
- Modal-adversarial: an MLP discriminator (d-256-1) tells normalised image embeddings ``f_e`` (label
  1) from the class text embeddings ``t_y`` of the same samples (label 0), binary cross-entropy on
  both; the image side goes through a gradient-reversal layer (coefficient 1), so one optimiser
  step trains the discriminator to separate and the image encoder to confuse it.
- Total: CE + ``mask_weight`` (1.0) * masked-phrase CE + ``adversarial_weight`` (0.1) * adversarial.
  The predictor and discriminator are trained with the model's SGD and never exported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.method import Method
from training.text import TextEncoder
from training.vocabulary import action_unit_phrases, prompt_templates

if TYPE_CHECKING:
    from fermon.expression.model import KE2NT
    from training.config import TrainConfig

PHRASE_LOGIT_SCALE = 1 / 0.07  # CLIP's initial temperature


# ---------------------------------------------------------------- prompts and masking


def au_prompt(phrases: Sequence[str]) -> str:
    """A fine-grained prompt from action-unit phrases ("a, b and c"); no phrases: the bare template."""
    templates = prompt_templates()
    if not phrases:
        return templates["au_none"]
    joined = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return templates["au"].format(phrases=joined)


def class_au_prompts(class_names: Sequence[str]) -> list[str]:
    return [au_prompt(action_unit_phrases(name)) for name in class_names]


def phrase_vocabulary(class_names: Sequence[str]) -> list[str]:
    """Every distinct action-unit phrase of these classes, in first-seen order."""
    seen: dict[str, None] = {}
    for name in class_names:
        seen.update(dict.fromkeys(action_unit_phrases(name)))
    return list(seen)


@dataclass
class MaskedPrompts:
    """All masked prompts of all classes: prompt ``m`` is class ``owner[m]``'s minus phrase ``target[m]``."""

    prompts: list[str]
    owner: np.ndarray  # (M,) class index
    target: np.ndarray  # (M,) index into the phrase vocabulary
    vocabulary: list[str]

    @classmethod
    def build(cls, class_names: Sequence[str]) -> MaskedPrompts:
        vocabulary = phrase_vocabulary(class_names)
        prompts, owner, target = [], [], []
        for c, name in enumerate(class_names):
            phrases = action_unit_phrases(name)
            for dropped, phrase in enumerate(phrases):
                prompts.append(au_prompt(phrases[:dropped] + phrases[dropped + 1 :]))
                owner.append(c)
                target.append(vocabulary.index(phrase))
        return cls(prompts, np.array(owner), np.array(target), vocabulary)

    def sample(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each label, the row of one of its class's masked prompts, uniformly at random."""
        rows = np.empty(len(labels), np.int64)
        for c in np.unique(labels):
            where = np.flatnonzero(labels == c)
            rows[where] = rng.choice(np.flatnonzero(self.owner == c), size=len(where))
        return rows


def centred(embeddings: torch.Tensor) -> torch.Tensor:
    """Remove the shared component (see ``training.build.class_embeddings_for``), then renormalise."""
    return F.normalize(embeddings - embeddings.mean(dim=0, keepdim=True), dim=-1)


# ---------------------------------------------------------------- modules


def spatial_tokens(features: torch.Tensor, channels: int) -> torch.Tensor:
    """A backbone's ``forward_features`` output as tokens (B, L, C).

    timm gives (B, C, H, W) for CNNs, (B, H, W, C) for Swin and (B, L, C) for ViTs.
    """
    if features.ndim == 3:
        return features
    if features.ndim != 4:
        raise ValueError(f"unexpected feature shape {tuple(features.shape)}")
    if features.shape[1] == channels:
        return features.flatten(2).transpose(1, 2)
    if features.shape[-1] == channels:
        return features.flatten(1, 2)
    raise ValueError(f"no axis of {tuple(features.shape)} has {channels} channels")


class CrossAttentionPredictor(nn.Module):
    """Predict a dropped phrase's text embedding from a masked prompt (query) and image tokens (keys, values)."""

    def __init__(self, text_dim: int, image_channels: int, hidden: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.query = nn.Linear(text_dim, hidden)
        self.tokens = nn.Sequential(nn.Linear(image_channels, hidden), nn.LayerNorm(hidden))
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, text_dim)

    def forward(self, masked_text: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, text_dim) and (B, L, C) to a predicted phrase embedding (B, text_dim)."""
        query = self.query(masked_text.float()).unsqueeze(1)
        keys = self.tokens(tokens.float())
        attended, _ = self.attention(query, keys, keys, need_weights=False)
        return self.out(self.norm(query + attended)).squeeze(1)


def phrase_logits(predicted: torch.Tensor, phrase_embeddings: torch.Tensor) -> torch.Tensor:
    """Scaled cosine of each prediction with every phrase embedding: (B, V)."""
    return PHRASE_LOGIT_SCALE * F.normalize(predicted, dim=-1) @ F.normalize(phrase_embeddings, dim=-1).t()


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:  # type: ignore[override]
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.coefficient * grad, None


def grad_reverse(x: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient times ``-coefficient`` backward (Ganin and Lempitsky 2015)."""
    return _GradientReversal.apply(x, coefficient)


class ModalityDiscriminator(nn.Module):
    """An MLP that scores an embedding as image (logit > 0) or text (logit < 0)."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings.float()).squeeze(-1)


def modal_adversarial_loss(
    discriminator: ModalityDiscriminator, image: torch.Tensor, text: torch.Tensor, coefficient: float = 1.0
) -> dict[str, torch.Tensor]:
    """Discriminator BCE on image (label 1, through gradient reversal) and text (label 0) embeddings."""
    image_logits = discriminator(grad_reverse(F.normalize(image.float(), dim=-1), coefficient))
    text_logits = discriminator(F.normalize(text.float(), dim=-1))
    parts = {
        "image": F.binary_cross_entropy_with_logits(image_logits, torch.ones_like(image_logits)),
        "text": F.binary_cross_entropy_with_logits(text_logits, torch.zeros_like(text_logits)),
    }
    parts["total"] = 0.5 * (parts["image"] + parts["text"])
    return parts


# ---------------------------------------------------------------- the training-only head


class PMFERHead(nn.Module):
    """Everything PMFER adds for training: masked-prompt table, phrase embeddings, predictor, discriminator."""

    needs_feature_map = True  # the masked phrase is predicted from the backbone's spatial tokens

    def __init__(
        self,
        masked: MaskedPrompts,
        masked_embeddings: torch.Tensor,
        phrase_embeddings: torch.Tensor,
        image_channels: int,
        mask_weight: float = 1.0,
        adversarial_weight: float = 0.1,
    ) -> None:
        super().__init__()
        dim = int(phrase_embeddings.shape[1])
        self.masked = masked
        self.mask_weight = mask_weight
        self.adversarial_weight = adversarial_weight
        self.channels = image_channels
        self.register_buffer("masked_embeddings", masked_embeddings.float())
        self.register_buffer("phrase_embeddings", phrase_embeddings.float())
        self.register_buffer("masked_target", torch.from_numpy(masked.target))
        self.predictor = CrossAttentionPredictor(dim, image_channels)
        self.discriminator = ModalityDiscriminator(dim)

    @classmethod
    def create(
        cls,
        class_names: Sequence[str],
        encoder: TextEncoder,
        image_channels: int,
        center_text: bool = True,
        **weights: float,
    ) -> PMFERHead:
        masked = MaskedPrompts.build(class_names)
        masked_embeddings = torch.from_numpy(encoder.encode(masked.prompts))
        phrase_embeddings = torch.from_numpy(encoder.encode(masked.vocabulary))
        if center_text:
            phrase_embeddings = centred(phrase_embeddings)
        return cls(masked, masked_embeddings, phrase_embeddings, image_channels, **weights)

    def losses(
        self,
        feature_map: torch.Tensor,
        emotional: torch.Tensor,
        labels: torch.Tensor,
        class_embeddings: torch.Tensor,
        rng: np.random.Generator,
    ) -> dict[str, torch.Tensor]:
        """The masked-phrase CE and the adversarial loss for one batch, and their weighted sum."""
        rows = torch.from_numpy(self.masked.sample(labels.cpu().numpy(), rng)).to(labels.device)
        predicted = self.predictor(self.masked_embeddings[rows], spatial_tokens(feature_map, self.channels))
        mask_loss = F.cross_entropy(phrase_logits(predicted, self.phrase_embeddings), self.masked_target[rows])
        adversarial = modal_adversarial_loss(self.discriminator, emotional, class_embeddings[labels])
        return {
            "mask": mask_loss,
            "adversarial": adversarial["total"],
            "pmfer": self.mask_weight * mask_loss + self.adversarial_weight * adversarial["total"],
        }


def forward_with_feature_map(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KE2NT's ``f_e`` and the backbone's spatial feature map, from one backbone pass."""
    # timm's forward is forward_head(forward_features(x)); split here so the map is not computed twice.
    feature_map = model.backbone.forward_features(images)
    return model.projection(model.backbone.forward_head(feature_map)), feature_map


# ---------------------------------------------------------------- the method's registry entry


def build_pmfer_head(config: TrainConfig, model: KE2NT, class_names: list[str]) -> PMFERHead:
    """PMFER's training-only parts; kept outside the model so checkpoints stay ordinary KE2NT ones."""
    from training.text import create_text_encoder

    return PMFERHead.create(
        class_names,
        create_text_encoder(config.text_encoder),
        int(model.backbone.num_features),
        center_text=config.center_text,
        mask_weight=config.mask_weight,
        adversarial_weight=config.adversarial_weight,
    )


PMFER = Method(
    "pmfer",
    "PMFER: action-unit prompts, masked-phrase prediction and a modal-adversarial term",
    lambda class_names, config: class_au_prompts(class_names),
    extra=build_pmfer_head,
)
