"""The task protocol the runner and the pipeline drive, and what every task shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

from torch import Tensor, nn

from ..data.collate import collate
from ..data.media import BAD_KEY, BadMediaReport, log
from ..errors import ConfigError, DataError
from ..registry import registry


class Task:
    """Base of every task: what a training step and an evaluation mean.

    The runner and the pipeline call every method below; a subclass implements :meth:`evaluate`
    and overrides the hooks it needs, each of which has a default:

    ====================  =====================================================================
    hook                  default
    ====================  =====================================================================
    objectives            none: the ``model.losses`` of the stage are what it trains
    trains_model_losses   None: a training stage needs ``model.losses`` where ``train_step`` is Task's own
    build_model           the :class:`VisionLanguageModel` of the ``model:`` node
    validate_model        checks that node (every component and objective) without building
    train_step            the model's named losses for a batch (``loss`` is minimised)
    collate               :func:`vlreg.data.collate.collate` (tensors stacked, bad media set aside)
    parameter_groups      None: the runner's (no weight decay on norms, biases, embeddings)
    metric_names          None: the evaluation's metrics are not declared in advance
    counters              ``{}``: no counts of its own in ``results.json``
    export                None: the stage exports nothing
    ====================  =====================================================================
    """

    objectives: ClassVar[tuple[Mapping[str, Any], ...]] = ()
    """The objectives that define the task: a model node without ``losses`` trains these, and one with
    ``losses`` must list each of them (by name, with the weights it chooses)."""

    trains_model_losses: ClassVar[Optional[bool]] = None
    """Whether :meth:`train_step` minimises the model's ``losses``, so that a stage that trains must have
    some; None: where the task keeps Task's own :meth:`train_step` (one that overrides it and still
    trains the model's losses says True)."""

    @classmethod
    def needs_model_losses(cls) -> bool:
        """Whether a stage of this task that trains must have ``model.losses`` (see :attr:`trains_model_losses`)."""
        if cls.trains_model_losses is not None:
            return cls.trains_model_losses
        return cls.train_step is Task.train_step

    def build_model(self, node: Optional[Mapping[str, Any]]) -> nn.Module:
        """The stage's model from its ``model:`` node (a :class:`VisionLanguageModel`)."""
        from ..models.assembly import VisionLanguageModel

        self.validate_model(node, "model")
        return VisionLanguageModel.from_config(self.model_node(node), "model")

    @classmethod
    def model_node(cls, node: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        """The ``model:`` node with the task's :attr:`objectives` where it lists no ``losses``."""
        node = dict(node or {})
        if cls.objectives and not node.get("losses"):
            node["losses"] = [dict(objective) for objective in cls.objectives]
        return node

    @classmethod
    def validate_model(cls, node: Optional[Mapping[str, Any]], where: str) -> None:
        """Check the ``model:`` node (every nested component and objective) without building anything."""
        from ..models.assembly import VisionLanguageModel

        node = cls.model_node(node)
        VisionLanguageModel.check_node(node, where)
        listed = {item if isinstance(item, str) else item.get("name") for item in node.get("losses") or []}
        absent = [objective["name"] for objective in cls.objectives if objective["name"] not in listed]
        if absent:
            task = registry("task").name_of(cls) or cls.__name__
            raise ConfigError(f"{where}.losses: task {task!r} trains the objective {' and '.join(map(repr, absent))}; "
                              "list it among the losses, or leave losses out for its defaults")

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named losses for one batch; ``loss`` is what is minimised."""
        batch = dict(batch)
        batch.pop(BAD_KEY, None)
        return model(batch)

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """A batch of dataset items (see :mod:`vlreg.data.collate`)."""
        return collate(items)

    def parameter_groups(self, model: nn.Module) -> Optional[list[dict[str, Any]]]:
        """The optimizer's parameter groups (``[{"params": [...], "weight_decay": ...}]``), or None for the runner's."""
        return None

    def evaluate(self, model: nn.Module, dataset: Any, context: Any) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def metric_names(self) -> Optional[list[str]]:
        """The names of the metrics :meth:`evaluate` returns, which ``run.best_metric`` must be one of
        (checked before a run starts); None where a task does not declare them."""
        return None

    def counters(self) -> dict[str, int]:
        """``{name: count}`` the runner sums over ranks into ``results.json["counters"]``."""
        return {}

    def export(self, model: nn.Module, output_dir: str | Path) -> Optional[Path]:
        """Write what later stages load (a trained LLM, encoder weights) under ``output_dir`` after training;
        returns its path, or None when the task exports nothing."""
        return None

    @staticmethod
    def write_predictions(context: Any, name: str, predictions: Any) -> Path:
        """Write predictions (rank 0) as ``predictions/<name>_step<N>.json``; returns the path."""
        from ..io.run_dir import RunDir

        path = RunDir(context.output_dir).predictions / f"{name}_step{context.step}.json"
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
