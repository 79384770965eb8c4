"""Benchmark 1a: one stage-2 training step, vlreg against transformers' BLIP-2, same weights, same batch.

A step is the forward pass, the backward pass and AdamW on the trainable parts (Q-Former,
queries, projection), in both frameworks:

- vlreg: ``pretrain_stage2`` task's ``train_step`` (the model's named losses), AdamW from
  ``vlreg.runner.optim`` (the runner's parameter groups and optimizer);
- transformers: ``Blip2ForConditionalGeneration(pixel_values, input_ids, attention_mask,
  labels).loss``, frozen parts in eval mode as BLIP-2 trains them, ``torch.optim.AdamW``
  fused (what transformers' Trainer uses by default with this torch) over the same groups.

Both models start from equal weights and train on the same batch; after every round (untimed)
the transformers model gets the vlreg model's trainable weights again, so that each round's two
losses come from equal weights and must agree (tolerance 1e-5); a timing counts only when all
do. (Left to drift apart, two correct implementations whose float operations differ in order
part slowly: Adam turns the rounding differences of near-zero gradients into whole steps.)

Benchmark 2 (:func:`precision`) times the vlreg step with its frozen parts in bf16 against the
fp32 one in the same way.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from .pairs import Pair, frozen_in
from .results import Row, compared
from .timing import Samples, interleave

TOLERANCE = 1e-5


def vlreg_step(model: Any, batch: dict[str, Any], lr: float = 1e-4, weight_decay: float = 0.05):
    """A closure running one vlreg training step; returns the loss."""
    from vlreg.runner.optim import build_optimizer, parameter_groups
    from vlreg.tasks.caption import Stage2Pretraining

    task = Stage2Pretraining()
    optimizer = build_optimizer(parameter_groups(model, weight_decay), lr, (0.9, 0.999), 1e-8)
    model.train()

    def step() -> float:
        loss = task.train_step(model, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def transformers_step(pair: Pair, lr: float = 1e-4, weight_decay: float = 0.05):
    """A closure running one transformers training step; returns the loss."""
    from vlreg.runner.optim import parameter_groups

    hf = pair.transformers
    hf.train()
    hf.vision_model.eval()
    hf.language_model.eval()
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in parameter_groups(hf, weight_decay)]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    inputs = dict(pixel_values=pair.images, input_ids=pair.input_ids, attention_mask=pair.attention_mask,
                  labels=pair.labels)

    def step() -> float:
        loss = hf(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def same_trainable_weights(model: Any, twin: Any) -> None:
    """Copy the vlreg model's bridge (Q-Former, queries, projection) into ``twin``: a transformers BLIP-2
    (through the interop key map) or another vlreg model."""
    from vlreg.interop.transformers_blip2 import state_to_transformers

    bridge = {k: v for k, v in model.state_dict().items() if k.startswith("bridge.")}
    if not hasattr(twin, "bridge"):
        bridge = state_to_transformers(bridge)
    twin.load_state_dict(bridge, strict=False)


def run(pair: Pair, repeats: int, target: float | None = None) -> tuple[Row, dict[str, Samples]]:
    """Time vlreg's and transformers' steps alternately; the two losses of every round must agree."""
    batch = {"image": pair.images, "text_input": pair.texts}
    same_trainable_weights(pair.vlreg, pair.transformers)
    losses: list[tuple[float, float]] = []

    def record(round_: int, results: dict[str, float]) -> None:
        losses.append((results["vlreg"], results["transformers"]))
        same_trainable_weights(pair.vlreg, pair.transformers)  # untimed: the next round starts equal again

    samples = interleave({"vlreg": vlreg_step(pair.vlreg, batch), "transformers": transformers_step(pair)},
                         repeats, warmup=1, on_round=record)
    diff = max(abs(a - b) for a, b in losses)
    row = compared("train step", f"{pair.scale}, batch {len(pair.texts)}, fp32", samples["vlreg"],
                   samples["transformers"], f"loss diff {diff:.1e} over {len(losses)} steps", diff <= TOLERANCE,
                   target, losses=[(round(a, 6), round(b, 6)) for a, b in losses])
    return row, samples


def precision(pair: Pair, repeats: int) -> tuple[Row, dict[str, Samples]]:
    """Benchmark 2: the vlreg step with the frozen encoder and LLM in bf16 against the fp32 one.

    Both get equal trainable weights every round; the row says how far apart their losses are.
    """
    batch = {"image": pair.images, "text_input": pair.texts}
    half = frozen_in(pair.vlreg, "bf16")
    same_trainable_weights(pair.vlreg, half)
    differences: list[float] = []

    def record(round_: int, results: dict[str, float]) -> None:
        differences.append(abs(results["bf16"] - results["fp32"]))
        same_trainable_weights(pair.vlreg, half)

    samples = interleave({"bf16": vlreg_step(half, batch), "fp32": vlreg_step(pair.vlreg, batch)}, repeats,
                         warmup=1, on_round=record)
    check = f"loss diff {statistics.median(differences):.1e} (median), {max(differences):.1e} at most"
    row = compared("precision", f"{pair.scale}, batch {len(pair.texts)}: vlreg bf16 frozen vs vlreg fp32",
                   samples["bf16"], samples["fp32"], check, True, differences=differences)
    return row, samples
