"""BLIP-2's stage 2 (and captioning or VQA fine-tuning): language modelling through the frozen LLM."""

from __future__ import annotations

from torch import Tensor

from ..registry import register
from .base import MEDIA, Objective, Step


@register("objective", "lm")
class LanguageModelling(Objective):
    """The frozen LLM's loss on the batch's text after the bridge's prompts.

    A decoder-only LLM reads ``[prompts; text_input]`` and is scored on the text (LM); an
    encoder-decoder is scored on ``text_output`` after ``text_input`` where the batch has one
    (VQA answers), else on the rest of the text after a random word prefix (prefix LM). See the
    LLM adapters for the exact targets.

    Args:
        weight: the weight of ``lm``.
    """

    needs = ("encoder", "bridge", "llm")
    batch_keys = (MEDIA, "text_input")
    loss_names = ("lm",)

    def forward(self, step: Step) -> dict[str, Tensor]:
        return {"lm": step.model.llm.loss(step.prompts(), step.texts, step.samples.get("text_output"))}
