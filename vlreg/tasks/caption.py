"""Captioning: train with the language-modelling loss; evaluate generated captions.

Predictions are written in the COCO caption results format
(``[{"image_id", "caption"}]``) and scored with pycocoevalcap (BLEU-1..4, METEOR,
ROUGE-L, CIDEr; SPICE where Stanford CoreNLP is available). The defaults follow
BLIP-2's captioning evaluation: 5 beams, at most 30 new tokens, at least 8.
"""

from __future__ import annotations

from typing import Any, Optional

from ..distributed import broadcast_object
from ..registry import register
from .base import Task, count_skipped, eval_batches


@register("task", "caption")
class CaptionTask(Task):
    """Image or video captioning: LM loss for training, generated captions scored for evaluation.

    Args:
        num_beams: beam width for generation (1 = greedy).
        max_new_tokens: the most tokens a caption may have.
        min_new_tokens: the fewest tokens a caption may have.
        length_penalty: beam-search length penalty.
        repetition_penalty: generation's repetition penalty.
        metrics: which caption metrics to compute (default: all available).
    """

    def __init__(self, num_beams: int = 5, max_new_tokens: int = 30, min_new_tokens: int = 8,
                 length_penalty: float = 1.0, repetition_penalty: float = 1.0, metrics: Optional[list[str]] = None):
        self.generation = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                               length_penalty=length_penalty, repetition_penalty=repetition_penalty)
        self.metrics = metrics

    def evaluate(self, model: Any, dataset: Any, context: Any) -> dict[str, float]:
        from ..metrics.caption import caption_scores

        predictions, bad = [], []
        for batch, skipped in eval_batches(model, dataset, context):
            bad += skipped
            if batch is None:
                continue
            with context.autocast():
                captions = model.generate(batch, **self.generation)
            predictions += [{"image_id": i, "caption": c} for i, c in zip(batch["image_id"], captions)]
        skipped = count_skipped(context, bad, len(predictions))
        predictions = context.gather(predictions)
        self.write_predictions(context, "caption", predictions)
        metrics: dict[str, float] = {}
        if context.is_main:
            references = dataset.references()
            results = {p["image_id"]: p["caption"] for p in predictions}
            scores = caption_scores({i: references[i] for i in results}, results, metrics=self.metrics)
            metrics = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and v is not None}
        metrics = broadcast_object(metrics)
        metrics["skipped_media"] = skipped
        return metrics

    def metric_names(self) -> list[str]:
        from ..metrics.caption import caption_score_names

        return [*caption_score_names(self.metrics), "skipped_media"]


@register("task", "pretrain_stage2")
class Stage2Pretraining(CaptionTask):
    """BLIP-2 stage 2: generative learning through the frozen LLM (objective ``lm``), evaluated by captioning.

    The model's ``losses`` must list ``lm`` (LM for a decoder-only LLM, prefix LM for an
    encoder-decoder), and may add others (``pformer_alignment``); without ``losses`` it trains
    ``[{name: lm}]``. Arguments as for ``caption``.
    """

    objectives = ({"name": "lm"},)
