"""Padding-free training batches for decoder-only LLMs: sequences packed into fewer, longer rows.

A batch of ``B`` sequences padded to the longest, ``L``, spends ``B * L - sum(lengths)`` positions
of every layer on padding (a fifth of them for BLIP-2's captions after 32 prompts). Packed, the
sequences share rows: a row holds several of them one after the other, and a block-diagonal
causal mask keeps each sequence attending to its own earlier positions only, with position ids
that start again at 0 for each, so every real position computes what it computed in its own row.

Longer rows make attention dearer (its cost per position grows with the row's length) while the
linear layers only see fewer positions, so :func:`plan_rows` picks the number of rows with the
smallest estimated cost, which is ``B`` (no packing) when padding is rare or the model is narrow.

Whether to pack is decided per device (:func:`packed_plan`), because what packing costs depends on the
attention kernel the device runs:

- **CPU**, transformers' SDPA attention: the rows carry a dense block-diagonal mask, and
  :func:`plan_rows` weighs the shorter rows against the longer attention. Measured a win on CPU
  (``benchmarks/perf``), and checked equal to the padded computation in ``tests/vlreg/test_perf_paths.py``.
- **CUDA** with FlashAttention (``attn_implementation: flash_attention_2`` or ``_3``): padding-free
  in transformers' own format: every sequence end to end in one row, position ids restarting at 0 for
  each, and no attention mask; the FlashAttention path reads the sequence boundaries from the position
  ids (variable-length attention), so no position attends across sequences and none is wasted on padding.
- **CUDA** with any other attention: the padded batch. A dense mask would take SDPA off its fused
  kernels, which costs more than the padding saves (on an H200 at paper scale, packing with a dense
  mask made the stage-2 step 24 % slower than the padded one).

Model types in :data:`PACKED_MODEL_TYPES` (whose attention takes a custom 4-D boolean mask and
position ids), without sliding windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

PACKED_MODEL_TYPES = ("opt", "gpt2", "llama")
"""Model types whose training batches :func:`packed_plan` may pack."""


def packing_kernel(config: Any, device: torch.device) -> Optional[str]:
    """How training batches of a model with transformers config ``config`` are packed on ``device``.

    ``"dense"`` (CPU, SDPA: rows with a block-diagonal mask), ``"varlen"`` (CUDA, FlashAttention: one
    row, boundaries from the position ids), or None (the padded batch); see the module docstring.
    """
    if config.model_type not in PACKED_MODEL_TYPES or getattr(config, "sliding_window", None):
        return None
    attention = getattr(config, "_attn_implementation", None) or ""
    if device.type == "cpu" and attention == "sdpa":
        return "dense"
    if device.type == "cuda" and attention.startswith("flash_attention"):
        return "varlen"
    return None


def plan_rows(lengths: Sequence[int], width: int, ffn: int) -> list[list[int]]:
    """Which sequences share a row: ``rows[r]`` lists sequence indices, in order along row ``r``.

    For each row count R from 1 to ``B``, the sequences are dealt longest first, each to the
    shortest row so far; the plan kept is the one with the least estimated work per layer:
    ``R * C * (8 w^2 + 4 w f)`` for the linear layers plus ``R * C^2 * 4 w`` for attention, C being
    the longest row, ``w`` the model width and ``f`` its feed-forward width.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best_cost, best = None, [[i] for i in range(len(lengths))]
    for count in range(1, len(lengths) + 1):
        rows: list[list[int]] = [[] for _ in range(count)]
        fill = [0] * count
        for i in order:
            shortest = min(range(count), key=fill.__getitem__)
            rows[shortest].append(i)
            fill[shortest] += lengths[i]
        longest = max(fill)
        cost = count * longest * (8 * width * width + 4 * width * ffn + 4 * width * longest)
        if best_cost is None or cost < best_cost:
            best_cost, best = cost, [sorted(row) for row in rows]
    return best


@dataclass
class PackedRows:
    """Sequences packed into ``R`` rows of ``C`` positions.

    ``embeds`` ``[R, C, width]``; ``attention`` ``[R, 1, C, C]`` bool (True = may attend: earlier
    positions of the same sequence; a row's trailing padding attends to itself only), or None where
    the model reads the boundaries from the positions (``varlen``); ``positions`` ``[R, C]`` long,
    from 0 in each sequence; ``targets`` ``[R, C]`` long (``IGNORE`` where nothing is scored).
    """

    embeds: Tensor
    attention: Optional[Tensor]
    positions: Tensor
    targets: Tensor


@dataclass
class PackingPlan:
    """Which sequences share a row (``rows[r]``: sequence indices in order along row ``r``), and
    whether the rows need a dense block-diagonal mask (``dense_mask``) or none (``varlen``)."""

    rows: list[list[int]]
    dense_mask: bool


def pack(embeds: Tensor, mask: Tensor, positions: Tensor, targets: Tensor, plan: PackingPlan) -> PackedRows:
    """Pack the real positions (``mask`` True) of ``[B, L]`` sequences into the rows of a plan.

    ``embeds`` ``[B, L, width]``; ``mask``, ``positions``, ``targets`` ``[B, L]``; ``plan`` from
    :func:`packed_plan`. Masked positions (padding, masked prompts) are left out.
    """
    rows = plan.rows
    lengths = mask.sum(dim=1).tolist()
    columns = max(sum(lengths[i] for i in row) for row in rows)
    device = embeds.device
    sequence = torch.full((len(rows), columns), -1, dtype=torch.long, device=device)
    packed_positions = torch.zeros((len(rows), columns), dtype=torch.long, device=device)
    packed_targets = torch.full((len(rows), columns), -100, dtype=targets.dtype, device=device)
    rows_embeds = []
    for r, members in enumerate(rows):
        row = torch.cat([embeds[i][mask[i]] for i in members])
        rows_embeds.append(torch.nn.functional.pad(row, (0, 0, 0, columns - row.shape[0])))
        used = row.shape[0]
        sequence[r, :used] = torch.cat([torch.full((lengths[i],), i, device=device) for i in members])
        packed_positions[r, :used] = torch.cat([positions[i][mask[i]] for i in members])
        packed_targets[r, :used] = torch.cat([targets[i][mask[i]] for i in members])
    attention = None
    if plan.dense_mask:
        index = torch.arange(columns, device=device)
        causal = index[None, :] <= index[:, None]
        same = (sequence[:, :, None] == sequence[:, None, :]) & (sequence[:, None, :] >= 0)
        attention = ((same & causal) | torch.eye(columns, dtype=torch.bool, device=device))[:, None]
    return PackedRows(torch.stack(rows_embeds), attention, packed_positions, packed_targets)


def packed_plan(config: Any, mask: Tensor) -> Optional[PackingPlan]:
    """How to pack a ``[B, L]`` batch on ``mask``'s device, or None for the padded batch (no gain, or no kernel)."""
    kernel = packing_kernel(config, mask.device)
    if kernel is None or mask.shape[0] < 2:
        return None
    if kernel == "varlen":  # attention costs nothing across sequences: one row, no padding at all
        return PackingPlan([list(range(mask.shape[0]))], dense_mask=False)
    width = config.hidden_size
    ffn = getattr(config, "ffn_dim", None) or getattr(config, "intermediate_size", None) or 4 * width
    rows = plan_rows(mask.sum(dim=1).tolist(), width, ffn)
    return PackingPlan(rows, dense_mask=True) if len(rows) < mask.shape[0] else None
