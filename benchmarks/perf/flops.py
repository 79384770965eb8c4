"""Benchmark 6: achieved FLOP/s of the stage-2 training step, against the matmul peak of this machine.

The step's work is counted analytically, from the model's sizes and the batch's lengths
(matrix multiplications only; a multiply-add counts 2)::

    ViT (frozen: forward only), B images of P tokens, L_v blocks of width d, MLP m, patch p:
        2 B (P-1) 3p^2 d                                  patch embedding
      + L_v [ 2 B P (4 d^2 + 2 d m) + 4 B P^2 d ]         qkv + proj + MLP, then QK^T and AV

    Q-Former (trained), Q queries, L_q layers of width h, FFN f, C cross-attention layers,
    visual tokens N = P of width d, projection to the LLM width D:
      forward  F_q = L_q [ 2 B Q (4 h^2 + 2 h f) + 4 B Q^2 h ]
                   + C [ 2 B Q 2h^2 + 2 B N 2 d h + 4 B Q N h ] + 2 B Q h D
      backward 2 F_q - C (2 B N 2 d h)                     weight and input gradients, except
                                                          the input gradient of the cross-attention
                                                          keys and values (the visual tokens need none)

    LLM (frozen, decoder-only), B rows of T positions (for vlreg: the packed rows it runs, see
    vlreg.models.llms.packing), L layers of width e, FFN g, vocabulary V, K positions scored
    (vlreg) or B T (transformers, which projects every position):
      forward  F_l = L [ 2 B T (4 e^2 + 2 e g) + 4 B T^2 e ] + 2 K e V
      backward F_l + L (4 B T^2 e)                        input gradients only (frozen weights):
                                                          one matmul per linear, two per attention one

The analytic count is checked against torch's ``FlopCounterMode`` on one real step (which
does not count the CPU attention kernels: the check leaves the attention products out). AdamW's
elementwise update is not counted. The peaks are the best of several 2048 x 2048 matmuls in
fp32 and bf16, with the same threads, in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .pairs import Pair
from .results import Row


@dataclass
class StepFlops:
    """The analytic FLOPs of one stage-2 step, by part (see the module docstring)."""

    vit: float
    qformer: float
    llm: float

    @property
    def total(self) -> float:
        return self.vit + self.qformer + self.llm


def step_flops(model: Any, batch: int, rows: int, positions: int, scored: int, attention: bool = True) -> StepFlops:
    """FLOPs of one vlreg stage-2 step on ``batch`` images, the LLM running ``rows`` rows of ``positions``
    (``scored`` positions in all).

    ``attention`` False leaves out the attention products (QK^T, AV), which torch's
    ``FlopCounterMode`` does not count for the CPU attention kernels.
    """
    a = 1 if attention else 0
    vit = model.encoder.vit
    d, P, depth = vit.embed_dim, model.encoder.num_tokens, len(vit.blocks)
    m = vit.blocks[0].mlp.fc1.out_features
    patch = vit.patch_embed.patch_size[0] * vit.patch_embed.patch_size[1]
    vit_flops = 2 * batch * (P - 1) * 3 * patch * d + depth * (2 * batch * P * (4 * d * d + 2 * d * m)
                                                              + a * 4 * batch * P * P * d)

    bridge = model.bridge
    Q, h, layers = bridge.num_queries, bridge.hidden_size, len(bridge.layers)
    f = bridge.layers[0].query_ffn.fc1.out_features
    crosses = sum(layer.cross_attn is not None for layer in bridge.layers)
    visual_kv = 2 * batch * P * 2 * d * h
    forward = (layers * (2 * batch * Q * (4 * h * h + 2 * h * f) + a * 4 * batch * Q * Q * h)
               + crosses * (2 * batch * Q * 2 * h * h + visual_kv + a * 4 * batch * Q * P * h)
               + 2 * batch * Q * h * bridge.llm_width)
    qformer_flops = forward + 2 * forward - crosses * visual_kv

    return StepFlops(vit_flops, qformer_flops, llm_flops(model.llm.model.config, rows, positions, scored, attention))


def llm_flops(config: Any, rows: int, positions: int, scored: int, attention: bool = True) -> float:
    """Forward and input-gradient FLOPs of a frozen decoder-only transformers LLM (OPT-style config names)."""
    e, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    g = getattr(config, "ffn_dim", None) or config.intermediate_size
    linear = layers * 2 * rows * positions * (4 * e * e + 2 * e * g)
    products = layers * 4 * rows * positions * positions * e if attention else 0
    head = 2 * scored * e * vocab
    return 2 * (linear + head) + 3 * products


def counted_flops(step: Any) -> float:
    """FLOPs torch's ``FlopCounterMode`` sees in one call of ``step`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of ``size`` x ``size`` matmuls in ``dtype`` (after one warm-up)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def utilisation(pair: Pair, seconds: dict[str, float], counted: float) -> list[Row]:
    """Rows of achieved FLOP/s for each timed step (``{"fp32": s, "bf16": s}``), against both peaks."""
    from vlreg.models.llms.packing import packed_plan

    llm = pair.vlreg.llm
    with torch.no_grad():
        _, mask, targets = llm.sequences(pair.vlreg.prompts(pair.vlreg.visual_tokens({"image": pair.images})),
                                         pair.texts)
    batch, positions = mask.shape
    plan = packed_plan(llm.model.config, mask)  # the rows the LLM really runs (packed, or the padded batch)
    llm_rows = batch if plan is None else len(plan.rows)
    if plan is not None:
        lengths = mask.sum(dim=1).tolist()
        positions = max(sum(lengths[i] for i in row) for row in plan.rows)
    scored = int((targets != -100).sum())
    flops = step_flops(pair.vlreg, batch, llm_rows, positions, scored)
    matmuls = step_flops(pair.vlreg, batch, llm_rows, positions, scored, attention=False).total
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for precision, step_seconds in seconds.items():
        achieved = flops.total / step_seconds
        rows.append(Row(
            "utilisation", f"{pair.scale} train step, vlreg {precision} frozen parts",
            f"{achieved / 1e9:.0f} GFLOP/s",
            f"peak fp32 {peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s",
            check=(f"{achieved / peaks['fp32']:.0%} of fp32 peak, {achieved / peaks['bf16']:.0%} of bf16 peak; "
                   f"{flops.total / 1e9:.3g} GFLOP/step; without attention {matmuls / 1e9:.4g}, "
                   f"torch's counter {counted / 1e9:.4g}"),
            details={"llm_rows": llm_rows, "llm_positions": positions, "analytic_gflop": {"vit": flops.vit / 1e9, "qformer": flops.qformer / 1e9,
                                        "llm": flops.llm / 1e9, "total": flops.total / 1e9},
                     "analytic_without_attention_gflop": matmuls / 1e9, "counted_gflop": counted / 1e9, "step_s": step_seconds,
                     "peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
                     "fraction_of_peak": {k: achieved / v for k, v in peaks.items()}}))
    return rows
