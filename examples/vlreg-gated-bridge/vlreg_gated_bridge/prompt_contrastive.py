"""An objective from a plugin: image-text contrastive learning for any bridge, a linear one included.

Registering it makes ``{name: prompt_text_contrastive, weight: 0.5}`` a valid item of any stage's
``model.losses``, beside the built-in objectives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlreg import register
from vlreg.objectives import Objective, Step


@register("objective", "prompt_text_contrastive")
class PromptTextContrastive(Objective):
    """InfoNCE between the mean of the bridge's prompts and the mean frozen LLM embedding of the caption.

    Both live in the LLM's embedding space, so a bridge needs no contrastive head of its own (a
    linear projector has none). The temperature is learned with the bridge.

    Args:
        weight: the weight of ``prompt_itc``.
        temperature: the temperature's initial value.
    """

    needs = ("encoder", "bridge", "llm")
    batch_keys = ("media", "text_input")
    loss_names = ("prompt_itc",)

    def __init__(self, weight: float = 1.0, temperature: float = 0.07):
        super().__init__(weight)
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())

    def forward(self, step: Step) -> dict[str, Tensor]:
        llm = step.model.llm
        prompts = step.prompts().embeds                                    # [B, Q, D]
        media = F.normalize(prompts.float().mean(dim=1), dim=-1)           # [B, D]
        tokens = llm.tokenizer(list(step.texts), padding=True, return_tensors="pt")
        ids = tokens["input_ids"].to(prompts.device)                       # [B, T]
        mask = tokens["attention_mask"].to(prompts.device)[..., None].float()
        words = llm.token_embeddings().detach()[ids].float()               # [B, T, D]
        text = F.normalize((words * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1), dim=-1)
        logits = media @ text.T / self.log_temperature.exp()               # [B, B]
        labels = torch.arange(logits.shape[0], device=logits.device)
        return {"prompt_itc": (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2}
