"""P-Former's stage 0 (Jian et al., 2023): prompts learned from text alone, through a frozen LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models.base import LanguageModel, Prompts
from ..models.losses import vocabulary_loss
from ..registry import register
from .base import Objective, Step

if TYPE_CHECKING:
    from ..models.assembly import VisionLanguageModel
    from ..models.prompters.pformer import PFormer


@register("objective", "pformer_stage0")
class PFormerStage0(Objective):
    """P-Former stage 0 on sentences: reconstruction through the frozen LLM, contrastive, vocabulary.

    - ``reconstruction``: ``llm.loss(prompts, texts)``: a decoder-only LLM reads ``[prompts; bos]`` and
      is scored on the sentence and eos; an encoder-decoder reads ``[prompts; a random word prefix]``
      and is scored on the rest (see the adapters).
    - ``contrastive``: symmetric InfoNCE on the P-Former's contrastive embedding of two views of each
      sentence (its ``contrastive_views``), label smoothing 0.1, negatives from every rank.
    - ``vocabulary``: :func:`~vlreg.models.losses.vocabulary_loss` of the prompts against the LLM's
      token embeddings.

    Args:
        reconstruction, contrastive, vocabulary: the weight of each loss (0: not computed; the
            paper's: 1 each).
    """

    needs = ("prompter", "llm")
    batch_keys = ("text_input",)
    loss_names = ("reconstruction", "contrastive", "vocabulary")

    def __init__(self, reconstruction: float = 1.0, contrastive: float = 1.0, vocabulary: float = 1.0):
        super().__init__()
        self.loss_weights = {"reconstruction": reconstruction, "contrastive": contrastive, "vocabulary": vocabulary}

    def check(self, model: "VisionLanguageModel") -> None:
        from ..models.prompters.pformer import PFormer

        prompter = model.prompter
        if not isinstance(prompter, PFormer):
            raise ConfigError(f"objective pformer_stage0 trains a P-Former (prompter pformer); got "
                              f"{type(prompter).__name__}")
        if self.loss_weights["contrastive"] and prompter.contrastive_views == "dropout" and prompter.dropout <= 0:
            raise ConfigError("pformer: contrastive_views 'dropout' needs dropout > 0 (without it both views "
                              "are the same); set dropout, or another contrastive_views")

    def forward(self, step: Step) -> dict[str, Tensor]:
        return self.losses(step.model.prompter, step.model.llm, step.texts)

    def losses(self, prompter: "PFormer", llm: LanguageModel, texts: Sequence[str]) -> dict[str, Tensor]:
        """The active losses of ``B`` sentences, each a scalar, by name. All views go through the encoder as one batch."""
        active = self.active()
        input_ids, mask = prompter.tokenize(texts)
        views = prompter.contrastive_inputs(input_ids, mask) if "contrastive" in active else []
        states = prompter.encode(torch.cat([input_ids, *views]), mask.repeat(1 + len(views), 1))[:, 0]
        sentence = states.split(input_ids.shape[0])
        losses: dict[str, Tensor] = {}
        if "reconstruction" in active or "vocabulary" in active:
            prompts = prompter.prompts_from(sentence[0])
            if "reconstruction" in active:
                losses["reconstruction"] = llm.loss(Prompts(prompts), texts)
            if "vocabulary" in active:
                losses["vocabulary"] = vocabulary_loss(prompts, llm.token_embeddings())
        if "contrastive" in active:
            first, second = sentence[-2:] if len(sentence) > 1 else (sentence[0], sentence[0])
            losses["contrastive"] = prompter.contrastive_loss(first, second)
        return losses
