"""The task protocol the runner drives, and what every task shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from ..data.collate import collate
from ..data.media import BAD_KEY, BadMediaReport, log
from ..errors import DataError


class Task:
    """Base of every task: build the model, one training step, batching, counters.

    Subclasses implement :meth:`evaluate` and may override :meth:`build_model`.
    """

    def build_model(self, node: Optional[Mapping[str, Any]]) -> nn.Module:
        """The stage's model from its ``model:`` node (a :class:`VisionLanguageModel`)."""
        from ..models.assembly import VisionLanguageModel

        return VisionLanguageModel.from_config(node or {}, "model")

    @classmethod
    def validate_model(cls, node: Optional[Mapping[str, Any]], where: str) -> None:
        """Check the ``model:`` node (every nested component) without building anything."""
        from ..build import check_args
        from ..models.assembly import VisionLanguageModel

        check_args(VisionLanguageModel, node or {}, where, "model")

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named losses for one batch; ``loss`` is what is minimised."""
        batch = dict(batch)
        batch.pop(BAD_KEY, None)
        return model(batch)

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return collate(items)

    def evaluate(self, model: nn.Module, dataset: Any, context: Any) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def metric_names(self) -> Optional[list[str]]:
        """The names of the metrics :meth:`evaluate` returns, which ``run.best_metric`` must be one of
        (checked before a run starts); None where a task does not declare them."""
        return None

    @staticmethod
    def write_predictions(context: Any, name: str, predictions: Any) -> Path:
        """Write predictions (rank 0) as ``predictions/<name>_step<N>.json``; returns the path."""
        path = Path(context.output_dir) / "predictions" / f"{name}_step{context.step}.json"
        if context.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(predictions))
        return path


def eval_batches(model: nn.Module, dataset: Any, context: Any):
    """Yield ``(batch on device, bad files)`` over this rank's slice; ``batch`` is None when all were bad."""
    for batch in context.loader(dataset):
        bad = batch.pop(BAD_KEY, [])
        if not any(isinstance(v, Tensor) for v in batch.values()):
            yield None, bad
            continue
        yield context.to_device(batch), bad


def count_skipped(context: Any, bad: list[Any], evaluated: int) -> int:
    """The media files skipped on all ranks, named in a warning (rank 0); every file of the evaluation set
    failing is a DataError."""
    skipped = context.gather([(evaluated, list(bad))])
    report = BadMediaReport("evaluation", max_bad_fraction=1.0)
    report.record(sum(s[0] for s in skipped), [b for s in skipped for b in s[1]])
    if report.bad and report.seen == report.bad_items:
        raise DataError(f"every media file of the evaluation set failed to load ({report.num_bad}), e.g. "
                        f"{'; '.join(str(b) for b in report.bad[:3])[:500]}")
    if report.bad and context.is_main:
        log.warning(report.summary())
    return report.num_bad


def item_text(item: Mapping[str, Any]) -> str:
    """An item's text: ``text_input``, followed by ``text_output`` when it has one (a question and its answer)."""
    return " ".join(str(item[k]) for k in ("text_input", "text_output") if item.get(k))


def dataset_texts(dataset: Any) -> list[str]:
    """The texts (:func:`item_text`) of a map-style dataset (or of each part of a ``concat``).

    A dataset read without media gives its items' texts, as its readers process them
    (answers drawn, questions templated); one with a media processor gives its records'
    ``text_input`` through its text processor, without decoding any media.
    """
    texts = []
    for part in getattr(dataset, "datasets", None) or [dataset]:
        if getattr(part, "processor", None) is None:
            items = (part[i] for i in range(len(part)))
            texts.extend(item_text(item) for item in items if isinstance(item, Mapping) and item_text(item))
        else:
            process = getattr(part, "text_processor", None) or (lambda text: text)
            texts.extend(process(r["text_input"]) for r in getattr(part, "records", []) if r.get("text_input"))
    return texts
