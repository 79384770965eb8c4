"""The task protocol the runner drives, and what every task shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from ..data.collate import collate
from ..data.media import BAD_KEY


class Task:
    """Base of every task: build the model, one training step, batching, counters.

    Subclasses implement :meth:`evaluate` and may override :meth:`build_model`.
    """

    def prepare(self, node: Optional[Mapping[str, Any]], datasets: Mapping[str, Any]) -> None:
        """Create what the model needs from the data before it is built (e.g. a tokenizer); default: nothing."""

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

    @staticmethod
    def write_predictions(context: Any, name: str, predictions: Any) -> Path:
        """Write predictions (rank 0) as ``predictions/<name>_step<N>.json``; returns the path."""
        path = Path(context.output_dir) / "predictions" / f"{name}_step{context.step}.json"
        if context.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(predictions))
        return path


def eval_batches(model: nn.Module, dataset: Any, context: Any):
    """Yield ``(batch on device, bad count)`` over this rank's slice, under autocast."""
    for batch in context.loader(dataset):
        bad = len(batch.pop(BAD_KEY, []))
        if not any(isinstance(v, Tensor) for v in batch.values()):
            yield None, bad
            continue
        yield context.to_device(batch), bad


def item_text(item: Mapping[str, Any]) -> str:
    """An item's text: ``text_input``, followed by ``text_output`` when it has one (a question and its answer)."""
    return " ".join(str(item[k]) for k in ("text_input", "text_output") if item.get(k))


def dataset_texts(dataset: Any) -> list[str]:
    """The texts (:func:`item_text`) of every item of a map-style dataset, as its readers process them.

    Meant for text datasets (corpora, question-answer pairs read without media): items
    of a dataset with a media processor would be decoded too.
    """
    texts = []
    for index in range(len(dataset)):
        item = dataset[index]
        if isinstance(item, Mapping) and item_text(item):
            texts.append(item_text(item))
    return texts
