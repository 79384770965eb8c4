"""Benchmark 7: one stage-1 training step (ITC, ITM with hard negatives, ITG), vlreg alone.

The stage-1 model of a scale (:func:`.pairs.stage1_node`: the scale's frozen encoder, the Q-Former
with its text branch and stage-1 heads) trains on :data:`.pairs.BATCH` random pictures with one
world caption each: ``pretrain_stage1``'s ``train_step``, backward, the runner's fused AdamW,
under the scale's autocast (bf16 at paper scale). transformers has no stage-1 BLIP-2 training,
so there is no opponent: the row gives the step time and pairs per second, and a utilisation
row (:mod:`.utilisation`) its MFU, the analytic count checked against torch's counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .flops import counted_flops, stage1_flops
from .pairs import build_model, captions, images, resolved, stage1_node
from .results import Row, seconds
from .texts import Texts
from .timing import repeat
from .train_step import Timed, vlreg_step


@dataclass
class Stage1:
    """The stage-1 model of a scale and its batch, on ``device``, running in ``precision``."""

    scale: str
    device: str
    precision: str
    model: Any
    batch: dict[str, Any]  # image [B, 3, H, W], text_input: B captions

    def step(self):
        """A closure running one training step (a fresh optimizer); returns the loss."""
        from vlreg.runner.context import autocast
        from vlreg.tasks.retrieval import Stage1Pretraining

        return vlreg_step(self.model, self.batch, Stage1Pretraining(),
                          autocast=lambda: autocast(torch.device(self.device), self.precision))

    def flops(self, attention: bool = True):
        """The step's analytic FLOPs (texts as long as the tokenised batch)."""
        text = self.model.bridge.tokenize(self.batch["text_input"])[0].shape[1]
        return stage1_flops(self.model, len(self.batch["text_input"]), text, attention)


def build(scale: str, texts: Texts, device: str = "cpu", seed: int = 0) -> Stage1:
    """The seeded stage-1 model of ``scale`` on ``device`` and its batch."""
    precision = resolved(scale, device)
    model = build_model(stage1_node(scale, texts.bert_tokenizer, precision), device, seed)
    batch = {"image": images(scale, model.encoder.image_size, device, seed), "text_input": captions(scale, texts)}
    return Stage1(scale, device, precision, model, batch)


def run(stage1: Stage1, repeats: int) -> tuple[Row, Timed, tuple[float, float]]:
    """Time the step; returns its row, the timed step and (analytic FLOPs without attention, torch's count)."""
    samples = repeat(stage1.step(), repeats, warmup=1, device=stage1.device)
    size = len(stage1.batch["text_input"])
    row = Row("stage-1 step", f"{stage1.scale}, batch {size}, {stage1.precision}: ITC + ITM + ITG",
              seconds(samples.median), check=f"{size / samples.median:.1f} pairs/s; {len(samples.wall)} steps",
              details={"ours": samples.summary()})
    counter = (stage1.flops(attention=False).total, counted_flops(stage1.step()))
    return row, Timed("vlreg", samples, stage1.flops(), stage1.precision), counter
