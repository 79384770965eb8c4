"""Visual question answering: answers generated or ranked, scored as VQAv2 does.

Training formats each question with ``prompt`` and trains on the chosen answer
(``text_output``). Evaluation writes the official results format
(``[{"question_id", "answer"}]``) and scores it with the official VQAv2 accuracy
when the dataset has VQAv2 annotations, or with exact-match accuracy against a
single answer per question (MSRVTT-QA). BLIP-2's zero-shot settings are the
defaults: prompt "Question: {} Short answer:", 5 beams, at most 10 new tokens,
length penalty -1.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from torch import Tensor, nn

from ..distributed import broadcast_object
from ..registry import register
from .base import Task, count_skipped, eval_batches


@register("task", "vqa")
class VQATask(Task):
    """Image or video question answering (VQAv2, MSRVTT-QA).

    Args:
        prompt: the question template; ``{}`` is replaced by the question.
        method: ``generate`` answers freely; ``rank`` picks the likeliest of the dataset's answer list.
        num_beams, max_new_tokens, min_new_tokens, length_penalty: generation settings.
    """

    trains_model_losses = True  # train_step only formats the questions

    def __init__(self, prompt: str = "Question: {} Short answer:", method: Literal["generate", "rank"] = "generate",
                 num_beams: int = 5, max_new_tokens: int = 10, min_new_tokens: int = 1, length_penalty: float = -1.0):
        self.prompt, self.method = prompt, method
        self.generation = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                               length_penalty=length_penalty)

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        batch = dict(batch, text_input=[self.prompt.format(q) for q in batch["text_input"]])
        return super().train_step(model, batch)

    def evaluate(self, model: Any, dataset: Any, context: Any) -> dict[str, float]:
        answer_list = dataset.answer_list if self.method == "rank" else None
        results, bad = [], []
        for batch, skipped in eval_batches(model, dataset, context):
            bad += skipped
            if batch is None:
                continue
            with context.autocast():
                answers = model.predict_answers(batch, prompt=self.prompt, method=self.method,
                                                answer_list=answer_list, **self.generation)
            results += [{"question_id": q, "answer": a} for q, a in zip(batch["question_id"], answers)]
        skipped = count_skipped(context, bad, len(results))
        results = context.gather(results)
        self.write_predictions(context, "vqa", results)
        metrics = score_answers(dataset, results) if context.is_main else {}
        metrics = broadcast_object(metrics)
        metrics["skipped_media"] = skipped
        return metrics

    def metric_names(self) -> list[str]:
        """``accuracy``; with VQAv2 annotations also per answer type (``accuracy_yes_no``, ``_number``, ``_other``)."""
        return ["accuracy", "accuracy_yes_no", "accuracy_number", "accuracy_other", "skipped_media"]


def score_answers(dataset: Any, results: list[dict[str, Any]]) -> dict[str, float]:
    """Official VQAv2 accuracy when annotations exist, exact-match accuracy otherwise."""
    from ..metrics.vqa import normalize_answer, vqa_accuracy

    answered = {r["question_id"] for r in results}
    annotation_file = getattr(dataset, "annotation_file", None)
    if annotation_file:
        questions = json.loads(open(dataset.question_file).read())
        annotations = json.loads(open(annotation_file).read())
        questions["questions"] = [q for q in questions["questions"] if q["question_id"] in answered]
        annotations["annotations"] = [a for a in annotations["annotations"] if a["question_id"] in answered]
        scores = vqa_accuracy(questions, annotations, results)
        metrics = {"accuracy": scores["overall"]}
        metrics.update({f"accuracy_{k.replace('/', '_')}": v for k, v in scores["per_answer_type"].items()})
        return metrics
    truth = dataset.ground_truth()
    correct = [normalize_answer(r["answer"]) == normalize_answer(truth[r["question_id"]]) for r in results]
    return {"accuracy": round(100.0 * sum(correct) / max(len(correct), 1), 2)}
