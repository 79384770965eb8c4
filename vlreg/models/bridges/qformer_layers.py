"""The Q-Former's building blocks: attention masks, attention, feed-forward, one layer.

A Q-Former layer sees one sequence ``[queries; text]`` of shape ``[B, Q+T, H]``.
Queries and text share the self-attention weights; only the ``Q`` query positions
cross-attend to the visual tokens, and queries and text have separate feed-forward
weights. Every sub-layer is BERT's post-norm residual ``norm(x + dropout(f(x)))``.

Which positions may attend to which is a boolean mask (True = may attend), built by
:func:`joint_attention_mask` for BLIP-2's three stage-1 objectives.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MaskMode = Literal["bidirectional", "causal", "unimodal"]
KeyValue = tuple[Tensor, Tensor]


def joint_attention_mask(mode: MaskMode, num_queries: int, text_mask: Tensor) -> Tensor:
    """Self-attention mask over ``[queries; text]``: ``[B, 1, Q+T, Q+T]`` bool, True = may attend.

    ``text_mask``: ``[B, T]`` bool, True at real (not padding) text tokens.

    - ``bidirectional`` (image-text matching): every position sees every query and every real text token.
    - ``causal`` (image-grounded text generation): queries see queries only; text token ``i`` sees
      every query and the real text tokens ``j <= i``.
    - ``unimodal`` (image-text contrastive): queries see queries only, text sees text only.
    """
    batch, length = text_mask.shape[0], num_queries + text_mask.shape[1]
    position = torch.arange(length, device=text_mask.device)
    query_row = (position < num_queries)[:, None]
    query_col = (position < num_queries)[None, :]
    if mode == "bidirectional":
        allowed = torch.ones(length, length, dtype=torch.bool, device=text_mask.device)
    elif mode == "causal":
        earlier_or_same = position[None, :] <= position[:, None]
        allowed = torch.where(query_row, query_col, query_col | earlier_or_same)
    elif mode == "unimodal":
        allowed = query_row == query_col
    else:
        raise ValueError(f"unknown attention mask mode {mode!r}; one of bidirectional, causal, unimodal")
    real_key = torch.cat([text_mask.new_ones(batch, num_queries), text_mask.bool()], dim=1)
    return (allowed[None] & real_key[:, None, :])[:, None]


class Attention(nn.Module):
    """Multi-head attention in a post-norm residual: ``norm(x + dropout(out(attend(x, context))))``.

    Self-attention when ``context`` is None; cross-attention to ``context`` ``[B, N, context_width]``
    otherwise. ``prefix`` (key, value) ``[B, heads, P, head_dim]`` are prepended to this call's own
    keys and values (the queries' cached keys and values, for text generation).
    """

    def __init__(self, width: int, num_heads: int, context_width: int, dropout: float, eps: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(context_width, width)
        self.value = nn.Linear(context_width, width)
        self.out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)

    def _split_heads(self, x: Tensor) -> Tensor:
        """``[B, L, H]`` -> ``[B, heads, L, H / heads]``."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def keys_values(self, context: Tensor) -> KeyValue:
        """The keys and values of ``context`` ``[B, N, context_width]``: each ``[B, heads, N, H / heads]``."""
        return self._split_heads(self.key(context)), self._split_heads(self.value(context))

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        context: Optional[Union[Tensor, KeyValue]] = None,
        prefix: Optional[KeyValue] = None,
        context_rows: Optional[Tensor] = None,
    ) -> tuple[Tensor, KeyValue]:
        """``x`` ``[B, L, H]``, ``mask`` broadcastable to ``[B, heads, L, P+N]`` (bool, True = attend).

        ``context`` may also be the context's :meth:`keys_values`, computed once for several passes.
        ``context_rows`` ``[B]`` (long): row ``b`` of ``x`` attends to ``context[context_rows[b]]``;
        the keys and values of each context row are then computed once however many rows read it.
        Returns the output ``[B, L, H]`` and this call's own (key, value) ``[B, heads, N, H / heads]``.
        """
        query = self._split_heads(self.query(x))
        key, value = context if isinstance(context, tuple) else self.keys_values(x if context is None else context)
        if context_rows is not None:
            key, value = key[context_rows], value[context_rows]
        own = (key, value)
        if prefix is not None:
            key, value = torch.cat([prefix[0], key], dim=2), torch.cat([prefix[1], value], dim=2)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).flatten(2)
        return self.norm(x + F.dropout(self.out(attended), self.dropout, self.training)), own


class FeedForward(nn.Module):
    """BERT's feed-forward sub-layer: ``norm(x + dropout(fc2(gelu(fc1(x)))))``, ``[B, L, H]`` -> ``[B, L, H]``."""

    def __init__(self, width: int, intermediate_size: int, dropout: float, eps: float):
        super().__init__()
        self.dropout = dropout
        self.fc1 = nn.Linear(width, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, width)
        self.norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + F.dropout(self.fc2(F.gelu(self.fc1(x))), self.dropout, self.training))


class QFormerLayer(nn.Module):
    """Shared self-attention; cross-attention and feed-forward for queries; a text feed-forward.

    ``cross_attention`` False leaves out the cross-attention sub-layer; ``text_branch`` False
    leaves out the text feed-forward (the layer then takes queries only).
    """

    def __init__(self, width: int, num_heads: int, intermediate_size: int, vision_width: int,
                 cross_attention: bool, text_branch: bool, dropout: float, eps: float):
        super().__init__()
        self.self_attn = Attention(width, num_heads, width, dropout, eps)
        self.cross_attn = Attention(width, num_heads, vision_width, dropout, eps) if cross_attention else None
        self.query_ffn = FeedForward(width, intermediate_size, dropout, eps)
        self.text_ffn = FeedForward(width, intermediate_size, dropout, eps) if text_branch else None

    def forward(
        self,
        x: Tensor,
        num_queries: int,
        mask: Optional[Tensor] = None,
        visual: Optional[Union[Tensor, KeyValue]] = None,
        visual_mask: Optional[Tensor] = None,
        prefix: Optional[KeyValue] = None,
        visual_rows: Optional[Tensor] = None,
    ) -> tuple[Tensor, KeyValue]:
        """``x`` ``[B, Q+T, H]`` whose first ``num_queries`` positions are queries.

        ``mask``: self-attention mask (see :func:`joint_attention_mask`); ``visual`` ``[B, N, Dv]``
        with ``visual_mask`` ``[B, 1, 1, N]`` bool, or ``[U, N, Dv]`` distinct items with
        ``visual_rows`` ``[B]`` naming each row's item (``visual`` may also be the cross-attention's
        ``keys_values`` of those tokens); ``prefix``: cached (key, value) of queries
        that the text positions of ``x`` attend to as well. Returns ``[B, Q+T, H]`` and the
        self-attention's own (key, value).
        """
        x, own = self.self_attn(x, mask, prefix=prefix)
        queries, text = x[:, :num_queries], x[:, num_queries:]
        parts = []
        if num_queries:
            if self.cross_attn is not None:
                if visual is None:
                    raise ValueError("the Q-Former's queries need visual tokens to cross-attend to")
                queries, _ = self.cross_attn(queries, visual_mask, context=visual, context_rows=visual_rows)
            parts.append(self.query_ffn(queries))
        if text.shape[1]:
            if self.text_ffn is None:
                raise ValueError("this Q-Former has no text branch (text_branch: false)")
            parts.append(self.text_ffn(text))
        return torch.cat(parts, dim=1), own


class LMHead(nn.Module):
    """BERT's language-model head: ``gelu`` dense + norm, then scores against the tied word embeddings.

    ``[B, T, H]`` -> ``[B, T, V]``.
    """

    def __init__(self, width: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, word_embeddings: Tensor) -> Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), word_embeddings, self.bias)
