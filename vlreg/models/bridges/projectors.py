"""Per-token projectors (``linear``, ``mlp``) and the masked adaptive pooling that fixes their token count."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import register
from ..base import Bridge, Features, Prompts
from . import require_widths


def pool_tokens(tokens: Tensor, mask: Optional[Tensor], num_queries: int) -> tuple[Tensor, Tensor]:
    """Adaptive average pooling of the token axis to exactly ``num_queries`` tokens, over real tokens only.

    Each sample's n real tokens, in order, are averaged in ``num_queries`` bins as
    ``torch.nn.functional.adaptive_avg_pool1d`` would (bin i covers real tokens
    ``floor(i*n/Q)`` to ``ceil((i+1)*n/Q) - 1``); masked tokens are skipped as if they had
    been removed. Without a mask this is ``adaptive_avg_pool1d`` along N. When n < Q bins
    repeat tokens; a sample without any real token gives zeros and an all-False mask.

    Args:
        tokens: ``[B, N, D]``.
        mask: ``[B, N]`` bool (True: real) or None (all real).
        num_queries: Q.

    Returns:
        ``([B, Q, D], [B, Q] bool)``.
    """
    batch, length, _ = tokens.shape
    real = torch.ones(batch, length, dtype=torch.bool, device=tokens.device) if mask is None else mask.bool()
    count = real.sum(dim=1)[:, None, None]  # [B, 1, 1]
    rank = (real.cumsum(dim=1) - 1)[:, None, :]  # [B, 1, N]: position among the sample's real tokens
    bins = torch.arange(num_queries, device=tokens.device)[None, :, None]  # [1, Q, 1]
    start = bins * count // num_queries
    end = ((bins + 1) * count + num_queries - 1) // num_queries
    weights = ((rank >= start) & (rank < end) & real[:, None, :]).to(tokens.dtype)  # [B, Q, N]
    sizes = weights.sum(dim=2, keepdim=True)
    return weights @ tokens / sizes.clamp(min=1), sizes[..., 0] > 0


class TokenProjector(Bridge):
    """Visual tokens ``[B, N, Dv]`` -> prompts ``[B, Q, Dllm]``: optional pooling to Q tokens, then a projection.

    Subclasses build the per-token projection in :meth:`make_projection`. Pooling
    happens before the projection, on the visual tokens.

    Args:
        vision_width: Dv, the encoder's width (filled in by the assembled model).
        llm_width: Dllm, the LLM's embedding width (filled in by the assembled model).
        num_queries: None keeps every token (Q = N, with the encoder's mask); an int pools
            the token axis to exactly that many (see :func:`pool_tokens`), which P-Former
            alignment needs (an MSE against a fixed number of target prompts).
        num_tokens: the encoder's ``num_tokens``; with ``num_queries: null`` it becomes the
            ``num_queries`` attribute (None when not given). The assembled model may fill it.
        frozen: freeze the projection.
    """

    registered_name = "projector"

    def __init__(
        self,
        vision_width: Optional[int] = None,
        llm_width: Optional[int] = None,
        num_queries: Optional[int] = None,
        num_tokens: Optional[int] = None,
        frozen: bool = False,
    ):
        super().__init__()
        self.vision_width, self.llm_width = require_widths(self.registered_name, vision_width, llm_width)
        if num_queries is not None and num_queries < 1:
            raise ConfigError(f"bridge {self.registered_name!r}: num_queries must be positive or null, got {num_queries}")
        self.pool_to = num_queries
        self.num_queries = num_queries if num_queries is not None else num_tokens
        self.proj = self.make_projection()
        self.configure_frozen(frozen)

    def make_projection(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, features: Features) -> Prompts:
        """``Features(tokens [B, N, Dv], mask)`` -> ``Prompts(embeds [B, Q, Dllm], mask [B, Q] or None)``."""
        tokens, mask = features.tokens, features.mask
        if self.pool_to is not None:
            tokens, mask = pool_tokens(tokens, mask, self.pool_to)
        return Prompts(self.proj(tokens), mask)


@register("bridge", "linear")
class LinearProjector(TokenProjector):
    """One Linear(vision_width -> llm_width) applied to every visual token (optionally pooled to num_queries).

    Arguments: ``vision_width``, ``llm_width``, ``num_queries``, ``num_tokens``, ``frozen``
    (see :class:`TokenProjector`).
    """

    registered_name = "linear"

    def make_projection(self) -> nn.Module:
        return nn.Linear(self.vision_width, self.llm_width)


@register("bridge", "mlp")
class MLPProjector(TokenProjector):
    """Linear -> GELU -> Linear on every visual token, like LLaVA-1.5's projector (optionally pooled to num_queries).

    Args:
        hidden_width: the hidden size; None uses ``llm_width`` (as LLaVA-1.5 does).
        vision_width, llm_width, num_queries, num_tokens, frozen: see :class:`TokenProjector`.
    """

    registered_name = "mlp"

    def __init__(
        self,
        vision_width: Optional[int] = None,
        llm_width: Optional[int] = None,
        hidden_width: Optional[int] = None,
        num_queries: Optional[int] = None,
        num_tokens: Optional[int] = None,
        frozen: bool = False,
    ):
        self.hidden_width = hidden_width  # read by make_projection, which the base constructor calls
        super().__init__(vision_width, llm_width, num_queries, num_tokens, frozen)

    def make_projection(self) -> nn.Module:
        hidden = self.hidden_width or self.llm_width
        return nn.Sequential(nn.Linear(self.vision_width, hidden), nn.GELU(), nn.Linear(hidden, self.llm_width))
