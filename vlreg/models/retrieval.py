"""Image-text (or video-text) retrieval with a Q-Former: ITC for all pairs, ITM for the top k.

As in BLIP-2: every media item is compared with every text by the contrastive
similarity (the best-matching query); then, for each media item, its ``k`` most
similar texts are re-scored by the matching head, and likewise for each text its
``k`` most similar media items. A re-ranked pair scores ``ITM logit + ITC
similarity``; pairs outside the top ``k`` score -100.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import Features

OUTSIDE_TOP_K = -100.0


def require_matching_heads(bridge) -> None:
    for method in ("image_embeds", "text_embeds", "itm_logits", "tokenize"):
        if not hasattr(bridge, method):
            raise ConfigError(f"retrieval needs a bridge with contrastive and matching heads (a Q-Former); "
                              f"{type(bridge).__name__} has no {method}()")


def query_similarity_matrix(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """``[N, Q, E]`` x ``[T, E]`` -> ``[N, T]``: each pair's best-matching query."""
    from .losses import query_similarity

    return query_similarity(image_embeds, text_embeds)


@torch.no_grad()
def text_embeddings(bridge, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """Normalised text embeddings ``[T, E]``, computed in chunks."""
    chunks = [bridge.text_embeds(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def rerank(bridge, features: Features, texts: Sequence[str], sim: Tensor, rows: Sequence[int], k: int,
           direction: str, batch_size: int = 128) -> Tensor:
    """Re-score the top ``k`` of each of ``rows`` with the ITM head.

    Args:
        features: every media item's visual tokens ``[N, Ntok, D]`` (mask ``[N, Ntok]`` optional).
        texts: the ``T`` texts.
        sim: ITC similarities ``[N, T]``.
        rows: media indices (``direction="i2t"``) or text indices (``"t2i"``) to re-rank.
        k: how many candidates to re-score per row.
    Returns:
        ``[len(rows), T]`` for i2t or ``[len(rows), N]`` for t2i: ITM + ITC on the top k, -100 elsewhere.
    """
    input_ids, text_mask = bridge.tokenize(list(texts))
    by_row = sim if direction == "i2t" else sim.t()
    k = min(k, by_row.shape[1])
    scores = torch.full((len(rows), by_row.shape[1]), OUTSIDE_TOP_K, device=sim.device)
    pairs = []  # (output row, candidate, media index, text index, itc)
    for out, row in enumerate(rows):
        top_sim, top_idx = by_row[row].topk(k)
        for s, c in zip(top_sim.tolist(), top_idx.tolist()):
            media, text = (row, c) if direction == "i2t" else (c, row)
            pairs.append((out, c, media, text, s))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        media = torch.tensor([p[2] for p in chunk], device=features.tokens.device)
        text = torch.tensor([p[3] for p in chunk], device=input_ids.device)
        mask = None if features.mask is None else features.mask[media]
        logits = bridge.itm_logits(Features(features.tokens[media], mask), input_ids[text], text_mask[text])
        itm = logits[:, 1].float().to(scores.device)
        for (out, c, _, _, s), value in zip(chunk, itm.tolist()):
            scores[out, c] = value + s
    return scores
