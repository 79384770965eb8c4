"""P-Former alignment (Jian et al., 2023): a bridge's prompts pulled towards a frozen P-Former's for the caption."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models.losses import alignment_loss
from ..registry import register
from .base import MEDIA, Objective, Step

if TYPE_CHECKING:
    from ..models.assembly import VisionLanguageModel


@register("objective", "pformer_alignment")
class PFormerAlignment(Objective):
    """Mean squared error between the bridge's prompts for the media and the frozen P-Former's for its caption.

    Works with any bridge whose prompts live in the LLM's embedding space and number the
    P-Former's ``num_prompts`` (the paper's weights: 10 in stage 1, 100 in stage 2). The
    targets carry no gradient.

    Args:
        weight: the weight of ``align``.
    """

    needs = ("encoder", "bridge", "prompter")
    batch_keys = (MEDIA, "text_input")
    loss_names = ("align",)

    def check(self, model: "VisionLanguageModel") -> None:
        bridge, prompter = model.bridge, model.prompter
        if getattr(bridge, "num_queries", None) not in (None, prompter.num_prompts):
            raise ConfigError(
                f"alignment compares {bridge.num_queries} bridge prompts with {prompter.num_prompts} P-Former "
                "prompts: set the bridge's num_queries to the prompter's num_prompts"
            )
        if not prompter.frozen:
            raise ConfigError("the P-Former used as alignment target must be frozen (prompter.frozen: true)")

    def forward(self, step: Step) -> dict[str, Tensor]:
        prompts = step.prompts()
        with torch.no_grad():
            targets = step.model.prompter(step.texts)
        return {"align": alignment_loss(prompts.embeds, targets.embeds.to(prompts.embeds.dtype))}
