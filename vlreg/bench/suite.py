"""What a benchmark suite is: named evaluations (a task on a dataset) read from a YAML file.

A suite file::

    name: coco
    description: COCO Karpathy test: captioning and image-text retrieval.
    world: {root: world, size: default, seed: 0}   # the synthetic world, made when a dataset reads from it
    data:
      root: ${world.root}                          # holds coco/ (and vqav2/, msrvtt/), as $VLREG_DATA does
      coco: ${data.root}/coco
    quick: {max_samples: 16, task: {num_beams: 1}} # what --quick changes
    evaluations:
      caption:
        media: image                               # the encoder modality the evaluation needs
        needs: [llm]                               # default: from the task (see default_needs)
        task: {name: caption, num_beams: 5, max_new_tokens: 30, min_new_tokens: 8}
        dataset: {name: coco_caption, root: "${data.coco}", split: test}
        metrics: [CIDEr, Bleu_4]                   # the headline numbers in the table and chart

Dataset nodes name no media ``processor``: each model brings its own (see
:mod:`vlreg.bench.sources`). Files may use ``includes:`` and ``${...}`` interpolation as
every vlreg config does, and list ``plugins:`` (modules to import first). Suites are
registered (kind ``suite``) as :class:`SuiteFile` objects; calling one loads the suite.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

from .. import recipes
from ..errors import ConfigError, UnknownComponentError, did_you_mean
from ..registry import import_plugin_modules, register, registry

BUILTIN_SUITES = ("coco", "vqav2", "msrvtt")
SUITE_KEYS = ("name", "description", "plugins", "world", "data", "quick", "evaluations")
DEFAULTS = {"world": {"root": "world", "size": "default", "seed": 0}, "data": {},
            "quick": {"max_samples": 16, "task": {"num_beams": 1}}}

Media = Literal["image", "video"]
Need = Literal["llm", "text_branch"]


@dataclass
class Quick:
    """What ``--quick`` changes: at most ``max_samples`` items per dataset, and ``task`` arguments
    (set on each evaluation whose task takes them, e.g. ``num_beams: 1``)."""

    max_samples: int = 16
    task: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """One evaluation of a suite: a task run on a dataset, by models that have the parts it needs.

    Args:
        suite, name: where it comes from; ``key`` is ``suite/name``.
        media: the encoder modality it needs (``image`` or ``video``).
        task: the task node (``{name: caption, ...}``).
        dataset: the dataset node, without a media ``processor``.
        needs: model parts besides the encoder: ``llm`` (generation), ``text_branch`` (a Q-Former's
            ITC and ITM heads); default: what the task implies (:func:`default_needs`).
        metrics: the headline metrics of the table and chart (default: every metric reported).
    """

    suite: str
    name: str
    media: Media
    task: dict[str, Any]
    dataset: dict[str, Any]
    needs: Optional[list[Need]] = None
    metrics: Optional[list[str]] = None

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"

    def dataset_node(self, processor: Mapping[str, Any]) -> dict[str, Any]:
        """The dataset node with a model's media processor."""
        return {**self.dataset, "processor": dict(processor)}

    def settings(self) -> dict[str, Any]:
        return {"media": self.media, "needs": list(self.needs or []), "metrics": self.metrics,
                "task": self.task, "dataset": self.dataset}


def default_needs(task: Mapping[str, Any], where: str) -> list[str]:
    """The model parts a task needs: retrieval tasks a Q-Former text branch, caption and VQA tasks an LLM."""
    from ..tasks.caption import CaptionTask
    from ..tasks.retrieval import RetrievalTask
    from ..tasks.vqa import VQATask

    cls = registry("task").get(task["name"])
    if issubclass(cls, RetrievalTask):
        return ["text_branch"]
    if issubclass(cls, (CaptionTask, VQATask)):
        return ["llm"]
    raise ConfigError(f"{where}: cannot tell which model parts task {task['name']!r} needs; "
                      "set needs: [llm] and/or [text_branch]")


@dataclass
class Suite:
    """A loaded suite: its evaluations in file order, the data they read, the quick settings,
    and the command-line overrides that applied to it."""

    name: str
    description: str
    evaluations: list[Evaluation]
    world: Any
    quick: Quick
    source: str
    overrides: list[str] = field(default_factory=list)

    def reads_world(self) -> bool:
        """Whether any dataset's ``root`` lies inside the synthetic world's directory."""
        world = Path(self.world.root).expanduser().resolve()
        roots = [e.dataset.get("root") for e in self.evaluations]
        return any(Path(root).expanduser().resolve().is_relative_to(world) for root in roots if root)

    def prepare(self) -> None:
        """Generate the synthetic world when a dataset reads from it and it is missing, then read every
        dataset's annotations once (without media), so that a wrong data path fails before any model loads."""
        from ..build import build

        if self.reads_world():
            self.world.prepare()
        for evaluation in self.evaluations:
            build("dataset", evaluation.dataset, f"{evaluation.key}.dataset")

    def shortened(self) -> "Suite":
        """The suite with the ``quick`` settings applied to every evaluation."""
        from ..build import parameters

        evaluations = []
        for evaluation in self.evaluations:
            accepted, _ = parameters(registry("task").get(evaluation.task["name"]))
            task = {**evaluation.task, **{k: v for k, v in self.quick.task.items() if k in accepted}}
            limit = min(evaluation.dataset.get("max_samples") or self.quick.max_samples, self.quick.max_samples)
            evaluations.append(Evaluation(evaluation.suite, evaluation.name, evaluation.media, task,
                                          {**evaluation.dataset, "max_samples": limit}, evaluation.needs,
                                          evaluation.metrics))
        return Suite(self.name, self.description, evaluations, self.world, self.quick, self.source, self.overrides)

    def describe(self) -> dict[str, Any]:
        return {"description": self.description, "source": self.source,
                "evaluations": {e.name: e.settings() for e in self.evaluations}}


def applicable(overrides: Sequence[str], cfg: Any) -> list[str]:
    """The ``key.path=value`` overrides whose enclosing mapping exists in ``cfg``."""
    from omegaconf import OmegaConf

    chosen = []
    for item in overrides:
        key = item.split("=", 1)[0]
        parent = key.rpartition(".")[0]
        if not parent or OmegaConf.is_dict(OmegaConf.select(cfg, parent, default=None)):
            chosen.append(item)
    return chosen


def read_suite(path: str | os.PathLike, name: Optional[str] = None, overrides: Sequence[str] = ()) -> Suite:
    """Load, override and check a suite file; every task and dataset node is validated, nothing is built.

    Overrides whose enclosing mapping the suite lacks are ignored (see :func:`applicable`).
    """
    from omegaconf import OmegaConf

    from ..build import call, validate
    from ..config import apply_overrides, load_config, to_plain
    from ..world.make_world import MakeWorld

    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), load_config(path))
    chosen = applicable(overrides, cfg)
    cfg = apply_overrides(cfg, chosen)
    cfg = to_plain(cfg)
    name = name or cfg.get("name") or Path(path).stem
    for key in cfg:
        if key not in SUITE_KEYS:
            raise ConfigError(f"suite {name}: unknown key {key!r}{did_you_mean(key, SUITE_KEYS)}; "
                              f"valid keys: {', '.join(SUITE_KEYS)}")
    import_plugin_modules(cfg.get("plugins") or [])
    nodes = cfg.get("evaluations")
    if not isinstance(nodes, Mapping) or not nodes:
        raise ConfigError(f"suite {name}: evaluations must be a non-empty mapping of name -> evaluation")
    evaluations = []
    for label, node in nodes.items():
        where = f"suite {name}: evaluations.{label}"
        if not isinstance(node, Mapping):
            raise ConfigError(f"{where}: expected a mapping with media, task and dataset, got {node!r}")
        evaluation = call(Evaluation, node, where, "evaluation", defaults={"suite": name, "name": label})
        validate("task", evaluation.task, f"{where}.task")
        if "processor" in evaluation.dataset:
            raise ConfigError(f"{where}.dataset: remove 'processor'; each model brings its own evaluation processor")
        validate("dataset", evaluation.dataset, f"{where}.dataset")
        if evaluation.needs is None:
            evaluation.needs = default_needs(evaluation.task, where)
        evaluations.append(evaluation)
    world = call(MakeWorld, cfg["world"], f"suite {name}: world", "world")
    quick = call(Quick, cfg["quick"], f"suite {name}: quick", "quick")
    return Suite(name, str(cfg.get("description") or ""), evaluations, world, quick, str(path), chosen)


class SuiteFile:
    """A suite defined by a YAML file; calling it loads the suite (registered under kind ``suite``)."""

    def __init__(self, path: str | os.PathLike, name: Optional[str] = None):
        import yaml

        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise ConfigError(f"suite file {self.path} not found")
        header = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        self.name = name or header.get("name") or self.path.stem
        self.__doc__ = str(header.get("description") or f"The suite in {self.path}.")
        self.__qualname__ = f"SuiteFile[{self.path}]"  # where the suite comes from, for `vlreg info suite NAME`

    def __call__(self, overrides: Sequence[str] = ()) -> Suite:
        """The suite, with ``key.path=value`` overrides applied where the suite has the key's mapping."""
        return read_suite(self.path, self.name, overrides)

    def __repr__(self) -> str:
        return self.__qualname__


def register_suite(name: str, path: str | os.PathLike) -> SuiteFile:
    """Register the suite YAML file ``path`` as ``name`` (from a plugin module, so ``--suite name`` finds it)."""
    return register("suite", name)(SuiteFile(path, name))


def find_suites(spec: str) -> list[SuiteFile]:
    """``--suite``'s value: a registered name, ``all`` (every registered suite) or a YAML file path."""
    if spec == "all":
        return [registry("suite").get(name) for name in registry("suite").names()]
    if spec.endswith((".yaml", ".yml")) or os.sep in spec:
        return [SuiteFile(spec)]
    try:
        return [registry("suite").get(spec)]
    except UnknownComponentError as exc:
        raise UnknownComponentError(f"{exc}; or all, or the path of a suite YAML file") from None


@dataclass
class Options:
    """How evaluations run: samples per batch and process, loader workers, autocast precision."""

    batch_size: int = 16
    num_workers: int = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def evaluate(model: Any, evaluation: Evaluation, processor: Mapping[str, Any], output_dir: Path,
             options: Options) -> tuple[dict[str, float], float]:
    """Run one evaluation on a model through the runner's evaluation-only path (``Trainer.fit``
    without a training set), so that one process or many run it the same way.

    Returns the task's metrics and the seconds taken. The runner writes its
    ``results.json`` and the task's predictions under ``output_dir``.
    """
    from ..build import build
    from ..runner import Trainer

    where = evaluation.key
    dataset = build("dataset", evaluation.dataset_node(processor), f"{where}.dataset")
    task = build("task", evaluation.task, f"{where}.task")
    run = {"output_dir": str(output_dir), "max_steps": 0, "batch_size": options.batch_size,
           "eval_batch_size": options.batch_size, "num_workers": options.num_workers, "precision": options.precision}
    started = time.perf_counter()
    results = Trainer(run).fit(model, task, None, dataset)
    return dict(results["final"]), round(time.perf_counter() - started, 2)


for _name in BUILTIN_SUITES:
    register_suite(_name, recipes.suites_dir() / f"{_name}.yaml")
