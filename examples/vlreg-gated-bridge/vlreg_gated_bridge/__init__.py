"""An example vlreg plugin: a bridge and an objective registered from a package of its own.

Installing this package makes the bridge ``gated_projector`` and the objective
``prompt_text_contrastive`` (:mod:`.prompt_contrastive`) available to every vlreg config,
through the ``vlreg.plugins`` entry-point group declared in pyproject.toml; vlreg imports
this module on the first component lookup.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vlreg import register
from vlreg.models.base import Bridge, Features, Prompts

from . import prompt_contrastive  # noqa: F401  (registers the objective prompt_text_contrastive)


@register("bridge", "gated_projector")
class GatedProjector(Bridge):
    """Projects each visual token into the LLM's space through a learned sigmoid gate.

    Args:
        vision_width: the encoder's token width (filled in by vlreg).
        llm_width: the LLM's embedding width (filled in by vlreg).
        num_queries: fixed number of prompts (tokens are average-pooled), or None to keep every token.
    """

    def __init__(self, vision_width: Optional[int] = None, llm_width: Optional[int] = None,
                 num_queries: Optional[int] = None):
        super().__init__()
        if vision_width is None or llm_width is None:
            raise ValueError("gated_projector needs vision_width and llm_width")
        self.vision_width, self.llm_width, self.num_queries = vision_width, llm_width, num_queries
        self.value = nn.Linear(vision_width, llm_width)
        self.gate = nn.Linear(vision_width, llm_width)
        self.configure_frozen(False)

    def forward(self, features: Features) -> Prompts:
        """``Features [B, N, Dv]`` -> ``Prompts [B, Q, Dllm]``."""
        tokens = features.tokens
        if self.num_queries is not None:
            tokens = nn.functional.adaptive_avg_pool1d(tokens.transpose(1, 2), self.num_queries).transpose(1, 2)
        return Prompts(self.value(tokens) * torch.sigmoid(self.gate(tokens)))
