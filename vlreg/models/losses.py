"""The losses of BLIP-2's stage 1 and of P-Former alignment, as plain functions.

- :func:`itc_loss`: image-text contrastive loss over query embeddings (max over queries), with
  negatives from every rank;
- :func:`sample_hard_negatives` and :func:`itm_loss`: image-text matching with hard negatives
  drawn in proportion to the contrastive similarities;
- :func:`alignment_loss`: mean squared distance between a bridge's prompts and P-Former's;
- :func:`vocabulary_loss`: mean squared distance of prompts to their nearest token embeddings (P-Former stage 0).

The objectives (:mod:`vlreg.objectives`) decide when each runs.

Without a process group every collective is a no-op, so one process runs the same code.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed


def query_similarity(image_feats: Tensor, text_feats: Tensor) -> Tensor:
    """Image-text similarity as the best-matching query: ``[Bi, Q, E]`` x ``[Bt, E]`` -> ``[Bi, Bt]``."""
    return torch.einsum("iqe,te->iqt", image_feats, text_feats).amax(dim=1)


def positive_pairs(batch_size: int, image_ids: Optional[Tensor], device: torch.device) -> Tensor:
    """Which gathered columns are positives of this rank's rows: ``[B, B * world]`` bool.

    Row ``b`` is this rank's pair ``b``. Without ``image_ids`` ``[B]`` only the pair itself is
    positive; with them, every pair (on any rank) of the same image.
    """
    if image_ids is None:
        own = torch.arange(batch_size, device=device) + distributed.rank() * batch_size
        columns = torch.arange(batch_size * distributed.world_size(), device=device)
        return own[:, None] == columns[None, :]
    image_ids = image_ids.to(device).view(-1)
    return image_ids[:, None] == distributed.all_gather(image_ids)[None, :]


def itc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    temp: Union[Tensor, float],
    image_ids: Optional[Tensor] = None,
    label_smoothing: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Image-text contrastive loss, BLIP-2 style.

    Args:
        image_feats: ``[B, Q, E]`` normalised query embeddings of this rank's images.
        text_feats: ``[B, E]`` normalised embeddings of this rank's texts (pair ``b`` = image ``b``).
        temp: the temperature (scalar).
        image_ids: ``[B]`` optional; texts of the same image count as positives, and the target
            probability is spread evenly over them.
        label_smoothing: mass spread uniformly over all columns, as in cross-entropy.

    Negatives are the pairs of every rank (gathered with gradients). Returns the loss (a
    scalar, the mean of image-to-text and text-to-image) and the temperature-scaled
    similarities ``sim_i2t`` and ``sim_t2i``, each ``[B, B * world]`` (rows: this rank's images,
    resp. texts; columns: all texts, resp. images), for hard-negative mining.
    """
    image_all = distributed.all_gather(image_feats, with_grad=True)
    text_all = distributed.all_gather(text_feats, with_grad=True)
    sim_i2t = query_similarity(image_feats, text_all) / temp
    sim_t2i = query_similarity(image_all, text_feats).t() / temp
    targets = positive_pairs(image_feats.shape[0], image_ids, image_feats.device).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    targets = (1 - label_smoothing) * targets + label_smoothing / targets.shape[1]
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2, sim_i2t, sim_t2i


def _negative_weights(sim: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """Sampling weights ``softmax(sim)`` over the non-positive columns, made safe.

    NaN counts as impossible, +inf as certain (all +inf entries of a row share its mass). A
    row with no finite mass left falls back to uniform over its negatives. Returns the
    weights ``[R, C]`` and which rows have any negative at all ``[R]``.
    """
    sim = torch.nan_to_num(sim.detach().float(), nan=-torch.inf, posinf=torch.finfo(torch.float32).max)
    sim = sim.masked_fill(positive, -torch.inf)
    row_max = sim.amax(dim=1, keepdim=True)
    has_mass = torch.isfinite(row_max)
    weights = torch.exp(sim - torch.where(has_mass, row_max, torch.zeros_like(row_max)))
    negative = ~positive
    weights = torch.where(has_mass, weights, negative.float())
    has_negative = negative.any(dim=1)
    return torch.where(has_negative[:, None], weights, torch.ones_like(weights)), has_negative


def sample_hard_negatives(
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    image_ids: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """One hard negative per row, drawn from ``softmax(sim)`` with the row's positives excluded.

    Args:
        sim_i2t: ``[B, B * world]`` this rank's images against all texts (from :func:`itc_loss`).
        sim_t2i: ``[B, B * world]`` this rank's texts against all images.
        image_ids: ``[B]`` optional; pairs of the same image are positives, never negatives.
        generator: for reproducible draws.

    Robust where LAVIS's sampling crashes: NaN entries are never drawn, +inf entries take the
    row's whole mass, and a row without finite mass draws uniformly among its negatives.

    Returns ``(negative_text, negative_image)``, each ``[B]`` long: the gathered index of a
    negative text for each image and of a negative image for each text; -1 for a row that
    has no negative at all (every pair in the batch shows the same image).
    """
    positive = positive_pairs(sim_i2t.shape[0], image_ids, sim_i2t.device)
    draws = []
    for sim in (sim_i2t, sim_t2i):
        weights, has_negative = _negative_weights(sim, positive)
        index = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        draws.append(torch.where(has_negative, index, torch.full_like(index, -1)))
    return draws[0], draws[1]


def itm_loss(positive_logits: Tensor, negative_logits: Tensor) -> Tensor:
    """Image-text matching: cross-entropy of match (class 1) vs. no match (class 0).

    ``positive_logits`` ``[P, 2]`` for matching pairs, ``negative_logits`` ``[M, 2]`` for the hard
    negatives (BLIP-2: each text with a negative image, each image with a negative text).
    Returns the mean over all ``P + M`` pairs.
    """
    labels = torch.cat([
        torch.ones(positive_logits.shape[0], dtype=torch.long, device=positive_logits.device),
        torch.zeros(negative_logits.shape[0], dtype=torch.long, device=negative_logits.device),
    ])
    return F.cross_entropy(torch.cat([positive_logits, negative_logits]), labels)


def alignment_loss(prompts: Tensor, targets: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """P-Former alignment: mean squared error between prompts ``[B, Q, D]`` and targets ``[B, Q, D]``.

    ``mask`` ``[B, Q]`` bool limits the mean to the prompt positions where it is True.
    Targets are used as given (detach them if they must not receive gradients).
    """
    if prompts.shape != targets.shape:
        raise ValueError(f"alignment_loss: prompts {tuple(prompts.shape)} and targets {tuple(targets.shape)} differ")
    if mask is None:
        return F.mse_loss(prompts, targets)
    per_position = (prompts - targets).pow(2).mean(dim=-1)
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


def vocabulary_loss(prompts: Tensor, embeddings: Tensor, chunk: int = 1024) -> Tensor:
    """Mean squared distance of each prompt vector to its nearest token embedding (by L2).

    ``prompts`` ``[B, Q, D]``; ``embeddings`` ``[V, D]`` (the LLM's input embeddings, detached:
    only the prompts move). Keeps the prompts near the LLM's vocabulary. A scalar.
    """
    flat = prompts.reshape(-1, prompts.shape[-1])
    nearest = embeddings.detach()[nearest_rows(flat, embeddings, chunk)]
    return F.mse_loss(flat.float(), nearest.float())


@torch.no_grad()
def nearest_rows(vectors: Tensor, table: Tensor, chunk: int = 1024) -> Tensor:
    """For each row of ``vectors`` ``[N, D]``, the index of the nearest row of ``table`` ``[V, D]`` by L2: ``[N]`` long.

    Computed in float32, ``chunk`` rows at a time (a ``[chunk, V]`` distance block).
    """
    with torch.autocast(vectors.device.type, enabled=False):
        table = table.detach().float()
        squared = table.pow(2).sum(-1)
        return torch.cat([(squared[None] - 2 * part.float() @ table.T).argmin(-1)
                          for part in vectors.detach().split(chunk)])
