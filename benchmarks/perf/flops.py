"""The work of a training step in FLOPs, counted analytically from the model's sizes and the batch's lengths.

Matrix multiplications only; a multiply-add counts 2. With B images of P tokens (width d),
Q queries, a Q-Former of L_q layers of width h and FFN f with C cross-attention layers::

    ViT (frozen: forward only), L_v blocks, MLP m, patch p:
        2 B (P-1) 3p^2 d + L_v [ 2 B P (4 d^2 + 2 d m) + 4 B P^2 d ]

    one Q-Former pass over R rows of [Q queries; T text] (keys: K earlier positions, e.g. cached
    queries, plus the row's own Q+T):
        L_q [ 2 R (Q+T) (4 h^2 + 2 h f) + 4 R (Q+T) (K+Q+T) h ]
      + C [ 2 R Q 2h^2 + 4 R Q P h ]  (+ C 2 R P 2 d h where the pass projects the visual keys
                                         and values itself)

Stage 2 (vlreg's ``pretrain_stage2``): the ViT, one query pass (projecting the visual keys and
values) and the projection to the LLM width D (``2 B Q h D``), backward twice the Q-Former's
forward less the visual keys' and values' input gradient (the visual tokens need none); the LLM
(frozen, decoder-only) forward and input-gradient backward on the rows it runs (R rows of T
positions: the packed rows for vlreg, see ``vlreg.models.llms.packing``; the padded batch for
transformers), L layers of width e, FFN g, vocabulary V, K positions scored (vlreg) or all R T
(transformers, which projects every position)::

      forward  F_l = L [ 2 R T (4 e^2 + 2 e g) + 4 R T^2 e ] + 2 K e V
      backward F_l + L (4 R T^2 e)          one matmul per linear, two per attention one

Stage 1 (``pretrain_stage1``, no LLM), texts of T tokens (the padded batch), embeddings of width
E, a BERT vocabulary V_b: the ViT; the visual keys and values once (``C 2 B P 2 d h``, shared by
the query pass and ITM); the query pass and ``vision_proj`` (``2 B Q h E``); ITC's text pass (B rows
of T) and ``text_proj`` on [CLS] (``2 B h E``) and its two similarity products (``2 x 2 B Q E B``);
ITM over 3B pairs (positives, a negative image per text, a negative text per image) of
[Q; T] and its head (``2 3B Q h 2``); ITG's causal text pass (B rows of T, keys Q cached + T)
and its LM head (``2 B T h^2 + 2 B T h V_b``). Everything but the ViT is trained: backward is
twice the forward less the visual keys' and values' input gradient.

torch's ``FlopCounterMode`` (:func:`counted_flops`) counts the same on a real step when the
attention products are left out (``attention=False``): it does not see the CPU attention
kernels (``tests/benchmarks/test_perf.py`` checks the two agree). AdamW's elementwise update is
not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch


@dataclass
class StepFlops:
    """The analytic FLOPs of one step, by part (see the module docstring); ``llm`` is 0 in stage 1."""

    vit: float
    qformer: float
    llm: float = 0.0

    @property
    def total(self) -> float:
        return self.vit + self.qformer + self.llm

    def as_dict(self) -> dict[str, float]:
        return {"vit": self.vit, "qformer": self.qformer, "llm": self.llm, "total": self.total}


def vit_flops(encoder: Any, batch: int, attention: bool = True) -> float:
    """Forward FLOPs of a timm ViT encoder on ``batch`` pictures."""
    vit = encoder.vit
    d, tokens, depth = vit.embed_dim, encoder.num_tokens, len(vit.blocks)
    m = vit.blocks[0].mlp.fc1.out_features
    patch = vit.patch_embed.patch_size[0] * vit.patch_embed.patch_size[1]
    products = 4 * batch * tokens * tokens * d if attention else 0
    return 2 * batch * (tokens - 1) * 3 * patch * d + depth * (2 * batch * tokens * (4 * d * d + 2 * d * m) + products)


def visual_keys_flops(bridge: Any, batch: int, tokens: int) -> float:
    """The cross-attention key and value projections of ``batch`` items of ``tokens`` visual tokens, all layers."""
    crosses = sum(layer.cross_attn is not None for layer in bridge.layers)
    return crosses * 2 * batch * tokens * 2 * bridge.vision_width * bridge.hidden_size


def qformer_pass(bridge: Any, rows: int, queries: int, text: int, tokens: int, cached: int = 0,
                 attention: bool = True) -> float:
    """Forward FLOPs of one pass of the Q-Former's layers over ``rows`` rows of [``queries``; ``text``], the
    queries reading ``tokens`` visual tokens (keys and values given), the positions also attending to ``cached``
    earlier ones."""
    h = bridge.hidden_size
    f = bridge.layers[0].query_ffn.fc1.out_features
    crosses = sum(layer.cross_attn is not None for layer in bridge.layers) if queries else 0
    length = queries + text
    products = 4 * rows * length * (cached + length) * h if attention else 0
    per_layer = 2 * rows * length * (4 * h * h + 2 * h * f) + products
    cross = 2 * rows * queries * 2 * h * h + (4 * rows * queries * tokens * h if attention else 0)
    return len(bridge.layers) * per_layer + crosses * cross


def llm_flops(config: Any, rows: int, positions: int, scored: int, attention: bool = True) -> float:
    """Forward and input-gradient FLOPs of a frozen decoder-only transformers LLM (OPT-style config names)."""
    e, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    g = getattr(config, "ffn_dim", None) or config.intermediate_size
    linear = layers * 2 * rows * positions * (4 * e * e + 2 * e * g)
    products = layers * 4 * rows * positions * positions * e if attention else 0
    head = 2 * scored * e * vocab
    return 2 * (linear + head) + 3 * products


def stage2_flops(model: Any, batch: int, rows: int, positions: int, scored: int, attention: bool = True) -> StepFlops:
    """FLOPs of one stage-2 step on ``batch`` images, the LLM running ``rows`` rows of ``positions``
    (``scored`` positions in all). ``attention`` False leaves out the attention products."""
    bridge, tokens = model.bridge, model.encoder.num_tokens
    keys = visual_keys_flops(bridge, batch, tokens)
    forward = (keys + qformer_pass(bridge, batch, bridge.num_queries, 0, tokens, attention=attention)
               + 2 * batch * bridge.num_queries * bridge.hidden_size * bridge.llm_width)
    return StepFlops(vit_flops(model.encoder, batch, attention), 3 * forward - keys,
                     llm_flops(model.llm.model.config, rows, positions, scored, attention))


def stage1_flops(model: Any, batch: int, text: int, attention: bool = True) -> StepFlops:
    """FLOPs of one stage-1 step (ITC, ITM, ITG) on ``batch`` pairs whose texts are ``text`` tokens (padded)."""
    bridge, tokens = model.bridge, model.encoder.num_tokens
    Q, h = bridge.num_queries, bridge.hidden_size
    E, vocab = bridge.text_proj.out_features, bridge.word_embeddings.num_embeddings
    keys = visual_keys_flops(bridge, batch, tokens)
    query_pass = qformer_pass(bridge, batch, Q, 0, tokens, attention=attention) + 2 * batch * Q * h * E
    itc = (qformer_pass(bridge, batch, 0, text, tokens, attention=attention) + 2 * batch * h * E
           + 4 * batch * Q * E * batch)
    itm = qformer_pass(bridge, 3 * batch, Q, text, tokens, attention=attention) + 2 * 3 * batch * Q * h * 2
    itg = (qformer_pass(bridge, batch, 0, text, tokens, cached=Q, attention=attention)
           + 2 * batch * text * h * h + 2 * batch * text * h * vocab)
    forward = keys + query_pass + itc + itm + itg
    return StepFlops(vit_flops(model.encoder, batch, attention), 3 * forward - keys)


def llm_rows(model: Any, images: torch.Tensor, texts: list[str],
             plan_of: Callable[[Any, torch.Tensor], Optional[Any]]) -> tuple[int, int, int]:
    """What vlreg's LLM runs for a stage-2 batch (``images`` ``[B, 3, H, W]``, B ``texts``): (rows, positions
    per row, scored positions), the rows being those of ``plan_of(config, mask)`` (a ``PackingPlan`` of the
    ``[B, L]`` mask, or None: the padded batch)."""
    with torch.no_grad():
        _, mask, targets = model.llm.sequences(model.prompts(model.visual_tokens({"image": images})), texts)
    batch, positions = mask.shape
    scored = int((targets != -100).sum())
    plan = plan_of(model.llm.model.config, mask)
    if plan is None:
        return batch, positions, scored
    lengths = mask.sum(dim=1).tolist()
    return len(plan.rows), max(sum(lengths[i] for i in row) for row in plan.rows), scored


def counted_flops(step: Any) -> float:
    """FLOPs torch's ``FlopCounterMode`` sees in one call of ``step`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())
