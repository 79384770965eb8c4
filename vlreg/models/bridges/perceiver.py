"""Flamingo's Perceiver resampler: a fixed number of learned latents read the visual tokens."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import register
from ..base import Bridge, Features, Prompts
from . import require_widths


class ResamplerLayer(nn.Module):
    """Latents attend to ``[tokens; latents]``, then a feed-forward block; both pre-norm and residual.

    ``latents [B, Q, W]``, ``tokens [B, N, W]``, ``mask [B, N]`` bool or None -> ``[B, Q, W]``.
    """

    def __init__(self, width: int, num_heads: int, ffn_mult: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_tokens = nn.LayerNorm(width)
        self.norm_latents = nn.LayerNorm(width)
        self.query = nn.Linear(width, width, bias=False)
        self.key_value = nn.Linear(width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.ffn = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, ffn_mult * width, bias=False),
            nn.GELU(),
            nn.Linear(ffn_mult * width, width, bias=False),
        )

    def _heads(self, x: Tensor) -> Tensor:
        """``[B, L, W]`` -> ``[B, heads, L, W / heads]``."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, latents: Tensor, tokens: Tensor, mask: Optional[Tensor]) -> Tensor:
        normed = self.norm_latents(latents)
        context = torch.cat([self.norm_tokens(tokens), normed], dim=1)  # [B, N + Q, W]
        key, value = self.key_value(context).chunk(2, dim=-1)
        attn_mask = None
        if mask is not None:  # the latents themselves are always visible, so no row is empty
            keep = torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)
            attn_mask = torch.cat([mask.bool(), keep], dim=1)[:, None, None, :]  # [B, 1, 1, N + Q]
        attended = F.scaled_dot_product_attention(
            self._heads(self.query(normed)), self._heads(key), self._heads(value), attn_mask=attn_mask
        )
        latents = latents + self.out(attended.transpose(1, 2).flatten(2))
        return latents + self.ffn(latents)


@register("bridge", "perceiver")
class PerceiverResampler(Bridge):
    """Flamingo-style Perceiver resampler: ``num_queries`` learned latents read the visual tokens, then go to the LLM.

    Visual tokens ``[B, N, vision_width]`` are projected to ``width`` (when it differs);
    ``num_layers`` layers let the latents attend to ``[tokens; latents]`` (masked tokens
    are ignored) and pass through a feed-forward block, pre-norm with residuals; a final
    LayerNorm and a Linear map the latents to ``[B, num_queries, llm_width]``.

    Args:
        vision_width: the encoder's width (filled in by the assembled model).
        llm_width: the LLM's embedding width (filled in by the assembled model).
        num_queries: Q, the number of latents and of output prompts (Flamingo: 64).
        num_layers: resampler layers (Flamingo: 6).
        width: the latents' width; None uses ``vision_width``.
        num_heads: attention heads; must divide ``width``.
        ffn_mult: the feed-forward hidden size as a multiple of ``width``.
        frozen: freeze the resampler.
    """

    def __init__(
        self,
        vision_width: Optional[int] = None,
        llm_width: Optional[int] = None,
        num_queries: int = 64,
        num_layers: int = 6,
        width: Optional[int] = None,
        num_heads: int = 8,
        ffn_mult: int = 4,
        frozen: bool = False,
    ):
        super().__init__()
        self.vision_width, self.llm_width = require_widths("perceiver", vision_width, llm_width)
        width = width or self.vision_width
        if min(num_queries, num_layers, num_heads, ffn_mult) < 1:
            raise ConfigError("bridge 'perceiver': num_queries, num_layers, num_heads and ffn_mult must be positive")
        if width % num_heads:
            raise ConfigError(f"bridge 'perceiver': num_heads={num_heads} must divide width={width}")
        self.num_queries, self.width = num_queries, width
        self.latents = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.input_proj = nn.Linear(self.vision_width, width) if width != self.vision_width else nn.Identity()
        self.layers = nn.ModuleList(ResamplerLayer(width, num_heads, ffn_mult) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, self.llm_width)
        self.configure_frozen(frozen)

    def forward(self, features: Features) -> Prompts:
        """``Features(tokens [B, N, vision_width], mask [B, N])`` -> ``Prompts(embeds [B, Q, llm_width], None)``."""
        tokens = self.input_proj(features.tokens)
        latents = self.latents.expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(latents, tokens, features.mask)
        return Prompts(self.output_proj(self.norm(latents)))
