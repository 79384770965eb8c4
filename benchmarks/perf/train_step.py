"""Benchmark 1a: one stage-2 training step, vlreg against transformers' BLIP-2, same weights, same batch.

A step is the forward pass (under the pair's autocast: none in fp32, bf16 at paper scale), the
backward pass and AdamW on the trainable parts (Q-Former, queries, projection), in both frameworks:

- vlreg: ``pretrain_stage2`` task's ``train_step`` (the model's named losses), AdamW from
  ``vlreg.runner.optim`` (the runner's parameter groups and optimizer, fused);
- transformers: ``Blip2ForConditionalGeneration(pixel_values, input_ids, attention_mask,
  labels).loss``, frozen parts in eval mode as BLIP-2 trains them, ``torch.optim.AdamW``
  fused (what transformers' Trainer uses by default with this torch) over the same groups.

Sequence packing (``vlreg.models.llms.packing``) is decided by the device: dense-mask rows on a
CPU, the padded batch on a GPU with SDPA. Where the other choice changes what the LLM runs, a
second vlreg contender runs it (:func:`packing`: the padded batch, or the CPU's dense-mask rows)
and gets a row of its own: the step with packing on and off.

Every contender starts from equal weights and trains on the same batch; after every round
(untimed) the others get the first vlreg model's trainable weights again, so that each round's
losses come from equal weights and must agree (:data:`TOLERANCE`: 1e-5 in fp32, 5e-3 under bf16
autocast, whose products round to 8 bits); a timing counts only when all do. (Left to drift
apart, two correct implementations whose float operations differ in order part slowly: Adam
turns the rounding differences of near-zero gradients into whole steps.)

Benchmark 2 (:func:`precision`) times the vlreg step with its frozen parts in the device's
``auto`` precision against the fp32 one in the same way.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional

import torch

from .flops import StepFlops, counted_flops, llm_rows, stage2_flops
from .pairs import Pair, frozen_in, twin
from .results import Row, compared, note
from .timing import Samples, interleave

TOLERANCE = {"fp32": 1e-5, "bf16": 5e-3, "fp16": 5e-3}
PACKING = ("device", "padded", "dense")
"""vlreg's own packing decision for the device; the padded batch; the CPU's dense-mask rows (any device)."""


def plan_function(mode: str) -> Callable[[Any, torch.Tensor], Optional[Any]]:
    """The ``packed_plan(config, mask)`` of a packing mode (:data:`PACKING`)."""
    from vlreg.models.llms.packing import packed_plan

    if mode == "device":
        return packed_plan
    if mode == "dense":
        return lambda config, mask: packed_plan(config, mask.cpu())  # the CPU's rule and rows
    if mode == "padded":
        return lambda config, mask: None
    raise ValueError(f"unknown packing mode {mode!r}: one of {', '.join(PACKING)}")


@contextlib.contextmanager
def packing(mode: str) -> Iterator[None]:
    """Within, vlreg's causal LLMs pack their training batches as ``mode`` says (:data:`PACKING`)."""
    from vlreg.models.llms import causal

    original = causal.packed_plan
    causal.packed_plan = plan_function(mode)
    try:
        yield
    finally:
        causal.packed_plan = original


def vlreg_step(model: Any, batch: dict[str, Any], task: Any = None,
               autocast: Callable[[], ContextManager] = contextlib.nullcontext, mode: str = "device",
               lr: float = 1e-4, weight_decay: float = 0.05) -> Callable[[], float]:
    """A closure running one vlreg training step of ``task`` (default ``pretrain_stage2``) with packing ``mode``;
    returns the loss."""
    from vlreg.runner.optim import build_optimizer, parameter_groups
    from vlreg.tasks.caption import Stage2Pretraining

    task = task or Stage2Pretraining()
    optimizer = build_optimizer(parameter_groups(model, weight_decay), lr, (0.9, 0.999), 1e-8)
    model.train()

    def step() -> float:
        with packing(mode), autocast():
            loss = task.train_step(model, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def transformers_step(pair: Pair, lr: float = 1e-4, weight_decay: float = 0.05) -> Callable[[], float]:
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
        with pair.autocast():
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


@dataclass
class Timed:
    """A timed training step: its name in the table, its samples, its analytic FLOPs, and the precision its
    frozen parts compute in (whose matmul peak its MFU is measured against)."""

    name: str
    samples: Samples
    flops: StepFlops
    precision: str


def llm_shapes(pair: Pair) -> dict[str, tuple[int, int, int]]:
    """Per packing mode, what vlreg's LLM runs for the pair's batch: (rows, positions per row, scored positions)."""
    return {mode: llm_rows(pair.vlreg, pair.images, pair.texts, plan_function(mode)) for mode in PACKING}


def packing_label(shape: tuple[int, int, int], batch: int) -> str:
    """``packed, 4 rows of 98`` or ``padded, 8 rows of 59`` for an LLM shape of :func:`llm_shapes`."""
    rows, positions, _ = shape
    return f"{'packed' if rows < batch else 'padded'}, {rows} rows of {positions}"


def run(pair: Pair, repeats: int, target: float | None = None) -> tuple[list[Row], list[Timed]]:
    """Time vlreg's step (and the other packing, where it changes the LLM's rows) and transformers' alternately;
    the losses of every round must agree. Returns a row per vlreg contender and the timed steps, transformers last."""
    batch_size = len(pair.texts)
    batch = {"image": pair.images, "text_input": pair.texts}
    shapes = llm_shapes(pair)
    other = ("padded" if shapes["device"] != shapes["padded"] else
             "dense" if shapes["dense"] != shapes["device"] else None)
    modes = {"vlreg": "device", **({f"vlreg, {other}": other} if other else {})}
    models = {name: pair.vlreg if mode == "device" else twin(pair.vlreg) for name, mode in modes.items()}
    others = [model for model in models.values() if model is not pair.vlreg] + [pair.transformers]
    for model in others:
        same_trainable_weights(pair.vlreg, model)
    losses: list[dict[str, float]] = []

    def record(round_: int, results: dict[str, float]) -> None:
        losses.append(results)
        for model in others:  # untimed: the next round starts from equal weights again
            same_trainable_weights(pair.vlreg, model)

    contenders = {name: vlreg_step(models[name], batch, autocast=pair.autocast, mode=mode)
                  for name, mode in modes.items()}
    contenders["transformers"] = transformers_step(pair)
    samples = interleave(contenders, repeats, warmup=1, on_round=record, device=pair.device)

    tolerance = TOLERANCE[pair.precision]
    rows, timed = [], []
    for name, mode in modes.items():
        diff = max(abs(round_[name] - round_["transformers"]) for round_ in losses)
        how = "vlreg's choice" if mode == "device" else "forced"
        case = f"{pair.scale}, batch {batch_size}, {pair.precision}, {how}: {packing_label(shapes[mode], batch_size)}"
        rows.append(compared("train step", case, samples[name], samples["transformers"],
                             f"loss diff {diff:.1e} over {len(losses)} steps", diff <= tolerance,
                             target if mode == "device" else None,
                             losses=[(round(r[name], 6), round(r["transformers"], 6)) for r in losses]))
        timed.append(Timed(f"vlreg ({how}: {packing_label(shapes[mode], batch_size)})", samples[name],
                           stage2_flops(pair.vlreg, batch_size, *shapes[mode]), pair.precision))
    length = pair.input_ids.shape[1]
    timed.append(Timed(f"transformers (padded, {batch_size} rows of {length})", samples["transformers"],
                       stage2_flops(pair.vlreg, batch_size, batch_size, length, batch_size * length), pair.precision))
    return rows, timed


def counted(pair: Pair) -> tuple[float, float]:
    """(analytic FLOPs without attention products, torch's counter) for one vlreg step of the pair's batch."""
    batch = {"image": pair.images, "text_input": pair.texts}
    shape = llm_shapes(pair)["device"]
    analytic = stage2_flops(pair.vlreg, len(pair.texts), *shape, attention=False).total
    return analytic, counted_flops(vlreg_step(twin(pair.vlreg), batch, autocast=pair.autocast))


def fast_precision(device: str, all_precisions: bool) -> tuple[Optional[str], str]:
    """The precision to time against fp32 on ``device`` (its ``auto``), or None and why not.

    Where ``auto`` is fp32, bf16 is timed where the CPU computes it natively (``auto`` may still keep
    fp32 there, where bf16 gains too little: this row shows how little); on a CPU that emulates it,
    tens of times slower, only when ``all_precisions`` asks for it.
    """
    from vlreg.device import cpu_bf16, resolve_precision

    auto = resolve_precision("auto", torch.device(device))
    if auto.precision != "fp32":
        return auto.precision, ""
    if all_precisions or (device == "cpu" and cpu_bf16().native):
        return "bf16", ""
    return None, f"auto is fp32 here ({auto.reason}); --all-precisions times emulated bf16"


def precision(pair: Pair, repeats: int, all_precisions: bool = False) -> tuple[Row, Optional[Timed]]:
    """Benchmark 2: the vlreg step with the frozen encoder and LLM in the device's ``auto`` precision (bf16 where
    the device computes it natively) against the fp32 one; a note row where there is nothing to compare.

    Both get equal trainable weights every round; the row says how far apart their losses are.
    """
    batch_size = len(pair.texts)
    case = f"{pair.scale}, batch {batch_size}: vlreg frozen parts in auto precision vs fp32"
    fast, why = fast_precision(pair.device, all_precisions)
    if pair.precision != "fp32":
        fast, why = None, f"the pair runs in {pair.precision} already"
    if fast is None:
        return note("precision", case, why), None
    batch = {"image": pair.images, "text_input": pair.texts}
    half = frozen_in(pair.vlreg, fast)
    same_trainable_weights(pair.vlreg, half)
    differences: list[float] = []

    def record(round_: int, results: dict[str, float]) -> None:
        differences.append(abs(results[fast] - results["fp32"]))
        same_trainable_weights(pair.vlreg, half)

    samples = interleave({fast: vlreg_step(half, batch), "fp32": vlreg_step(pair.vlreg, batch)}, repeats,
                         warmup=1, on_round=record, device=pair.device)
    check = f"loss diff {statistics.median(differences):.1e} (median), {max(differences):.1e} at most"
    row = compared("precision", f"{pair.scale}, batch {batch_size}: vlreg {fast} frozen vs vlreg fp32",
                   samples[fast], samples["fp32"], check, True, differences=differences)
    shape = llm_shapes(pair)["device"]
    return row, Timed(f"vlreg, {fast} frozen parts", samples[fast], stage2_flops(pair.vlreg, batch_size, *shape), fast)
