"""Projects: stages run in order, each initialised from earlier ones by reference.

A project config::

    name: pformer_video
    output_dir: outputs/pformer_video
    vars: {data: /data}                              # values the stages interpolate: ${vars.data}
    stages:
      - name: pformer                                # stage 0: text only
        task: {name: pformer_pretrain}
        model: {prompter: {...}, llm: {...}, losses: [{name: pformer_stage0}]}
        data: {train: {...}, eval: {...}}
        run: {max_steps: 300, batch_size: 32, lr: 1e-4}
      - name: stage1
        init: {prompter: pformer}                    # this model's prompter <- stage pformer's
        ...

A config without ``stages`` is a project of one stage. Each stage writes into
``<output_dir>/<stage name>`` (or its own ``run.output_dir``; :class:`~vlreg.io.run_dir.RunDir`
names its files), starting with its resolved ``config.yaml`` and ``paths.json`` (see
:mod:`vlreg.io.run_paths`) and ending with ``stage.json``: a stage whose ``stage.json``
exists is complete and skipped unless ``--force``; an interrupted stage resumes from its
newest complete checkpoint. ``init`` maps a component of this stage's
model to an earlier stage (by name) or a checkpoint path: the component's weights
are loaded from there (those the component has; a stage-2 Q-Former takes a stage-1
one's weights without its text branch).

A stage whose task is a :class:`~vlreg.tasks.preparation.Preparation` (one that
generates a dataset or trains tokenizers) has no model, data or runner: it prepares
files, only those missing, whenever the project runs it or a stage after it.

``vars`` holds values for the stages to interpolate (``${vars.NAME}``); vlreg reads
nothing else from it.

``feature_cache: true`` (or a directory) serves the stage's datasets from the
frozen-feature cache (:mod:`vlreg.runner.feature_cache`), by default
``<output_dir>/feature_cache``, shared by the project's stages. ``runner`` names
the registered runner (default ``trainer``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .build import build, call, check_args
from .distributed import is_main
from .errors import ConfigError, UserError, did_you_mean
from .io.files import write_json_atomically
from .io.run_dir import RunDir


@dataclass
class ProjectNode:
    """The keys of a project config (what :func:`~vlreg.build.check_args` checks it against)."""

    stages: Any
    name: str = ""
    description: str = ""
    output_dir: Optional[str] = None
    vars: Optional[dict[str, Any]] = None
    plugins: Optional[list[str]] = None


@dataclass
class StageNode:
    """The keys of a stage and the type of each (see the module docstring)."""

    name: str
    task: Union[str, dict]
    description: str = ""
    model: Optional[dict] = None
    data: Optional[dict] = None
    run: Optional[dict] = None
    init: Optional[dict[str, str]] = None
    runner: str = "trainer"
    feature_cache: Union[bool, str] = False


@dataclass
class Stage:
    name: str
    config: dict[str, Any]
    output_dir: Path
    saved: Optional[dict[str, Any]] = None
    """The config written to ``config.yaml``: ``config`` with ``${oc.env:...}`` left unresolved."""
    prepares: bool = False
    """Whether its task is a :class:`~vlreg.tasks.preparation.Preparation` (set when the stage is validated)."""

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.output_dir)

    @property
    def completed(self) -> bool:
        """Whether the stage ran to its end (``stage.json``); a preparation never is (it runs every time)."""
        return not self.prepares and self.run_dir.completed


def as_project(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config as a project: a config of one stage becomes a project of that stage, sharing its directory."""
    cfg = dict(cfg)
    if "stages" in cfg:
        return cfg
    if "task" not in cfg:
        raise ConfigError("the config is neither a project (stages: [...]) nor a stage (task: ...): "
                          "give a list of stages, or the task, model, data and run of one")
    stage = {k: v for k, v in cfg.items() if k not in ("plugins", "vars", "output_dir")}
    run = stage.get("run") or {}
    output_dir = (run.get("output_dir") if isinstance(run, Mapping) else None) or cfg.get("output_dir") \
        or f"outputs/{cfg.get('name', 'run')}"
    if isinstance(run, Mapping):  # anything else is named by the validation of the stage
        stage["run"] = {**run, "output_dir": output_dir}
    stage.setdefault("name", Path(str(output_dir)).name)
    return {"name": stage["name"], "output_dir": output_dir, "vars": cfg.get("vars"),
            "plugins": cfg.get("plugins"), "stages": [stage]}


def _check_init(node: Mapping[str, Any], earlier: Sequence["Stage"], where: str) -> None:
    """Each ``init`` entry names a component of the stage's model and an earlier stage or a checkpoint directory."""
    model = node.get("model") if isinstance(node.get("model"), Mapping) else {}
    components = [k for k, v in model.items() if k != "losses" and v]
    for role, ref in (node.get("init") or {}).items():
        if role not in components:
            raise ConfigError(f"{where}.init: the model has no component {role!r}{did_you_mean(role, components)}; "
                              f"its components: {', '.join(components) or 'none'}")
        if any(s.name == ref for s in earlier):
            continue
        names = ", ".join(s.name for s in earlier) or "none"
        if not Path(ref).exists():
            raise ConfigError(f"{where}.init.{role}: {ref!r} is neither an earlier stage ({names}) "
                              "nor an existing checkpoint path")
        if Path(ref).is_file():
            raise ConfigError(f"{where}.init.{role}: {ref!r} is a file; init takes an earlier stage ({names}) or a "
                              "vlreg checkpoint directory (a weights file is read by the component itself, "
                              "e.g. its checkpoint: or init_from:)")


@dataclass
class Project:
    name: str
    output_dir: Path
    stages: list[Stage]
    source: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: str = "", saved: Optional[Mapping[str, Any]] = None) -> "Project":
        """Check a resolved config's structure (every stage's components included) and read it.

        ``saved`` is the same config as each stage's ``config.yaml`` should hold it (see
        :func:`vlreg.config.without_env`); by default ``cfg`` itself.
        """
        cfg = as_project(cfg)
        check_args(ProjectNode, cfg, "project", "project")
        output_dir = Path(cfg.get("output_dir") or f"outputs/{cfg.get('name', 'project')}")
        stages_cfg = cfg.get("stages")
        if not isinstance(stages_cfg, list) or not stages_cfg:
            raise ConfigError("project: stages must be a non-empty list of stage mappings")
        saved_stages = as_project(saved)["stages"] if saved is not None else stages_cfg
        stages: list[Stage] = []
        for i, node in enumerate(stages_cfg):
            where = f"stages[{i}]"
            if not isinstance(node, Mapping) or not node.get("name"):
                raise ConfigError(f"{where}: a stage is a mapping with a name, got {node!r}")
            where = f"stages.{node['name']}"
            check_args(StageNode, node, where, "stage")
            if any(s.name == node["name"] for s in stages):
                raise ConfigError(f"{where}: two stages are named {node['name']!r}")
            _check_init(node, stages, where)
            stage_dir = Path((node.get("run") or {}).get("output_dir") or output_dir / node["name"])
            stages.append(Stage(node["name"], dict(node), stage_dir, dict(saved_stages[i])))
        project = cls(cfg.get("name") or output_dir.name, output_dir, stages, source, cfg)
        for stage in stages:
            validate_stage(stage)
        return project

    def select(self, names: Sequence[str] | None) -> list[Stage]:
        """The stages to run: all, or those named and the preparations before them (in project order)."""
        if not names:
            return list(self.stages)
        known = [s.name for s in self.stages]
        for name in names:
            if name not in known:
                raise ConfigError(f"unknown stage {name!r}{did_you_mean(name, known)}; stages: {', '.join(known)}")
        last = max(known.index(name) for name in names)
        return [s for i, s in enumerate(self.stages) if s.name in names or (s.prepares and i < last)]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def run(self, stages: Sequence[Stage], force: bool = False) -> int:
        """Run the given stages in order; print a results table and the results file at the end.

        The run is the only writer of the project's output directory while it lasts (see
        :mod:`vlreg.runner.lock`), and first removes what interrupted checkpoint writes left.
        """
        from .io.checkpoints import remove_unfinished
        from .runner.lock import OutputLock

        with OutputLock(self.output_dir) as lock:
            for stage in stages if lock.held else ():  # the writer (rank 0 under torchrun) tidies up
                remove_unfinished(stage.run_dir.checkpoints)
            return self._run(stages, force)

    def _run(self, stages: Sequence[Stage], force: bool) -> int:
        from .reporting import print_results

        started = time.time()
        for stage in stages:
            if stage.prepares:
                prepare_stage(stage)
                continue
            if stage.completed and not force:
                print(f"[vlreg] stage {stage.name}: already complete ({stage.output_dir}); skipped")
                continue
            print(f"[vlreg] stage {stage.name}: starting ({stage.output_dir})", flush=True)
            run_stage(self, stage, force=force)
        results = {s.name: s.run_dir.read_results() for s in self.stages if s.completed}
        for name, result in results.items():
            result["export"] = self.stage(name).run_dir.read_marker().get("export")
        summary = RunDir(self.output_dir).results
        if len(self.stages) > 1:  # a single stage's own results.json is the summary
            summary.parent.mkdir(parents=True, exist_ok=True)
            payload = {"project": self.name, "source": self.source, "seconds": round(time.time() - started, 1),
                       "stages": results}
            write_json_atomically(summary, payload, indent=2)
        print_results(results, summary)
        return 0


def validate_stage(stage: Stage) -> None:
    """Check a stage's task, model, data and run sections before anything is built."""
    from .build import validate
    from .device import resolve_precision
    from .registry import registry
    from .runner import RunConfig
    from .tasks.preparation import Preparation

    cfg, where = stage.config, f"stages.{stage.name}"
    if not cfg.get("task"):
        raise ConfigError(f"{where}: a stage needs a task")
    task = build("task", cfg["task"], f"{where}.task")
    stage.prepares = isinstance(task, Preparation)
    if stage.prepares:
        Preparation.check_stage(cfg, where)
        return
    type(task).validate_model(cfg.get("model"), f"{where}.model")
    for split, node in (cfg.get("data") or {}).items():
        if split not in ("train", "eval"):
            raise ConfigError(f"{where}.data: unknown split {split!r}; use train and eval")
        if node is not None:
            validate("dataset", node, f"{where}.data.{split}")
    run = dict(cfg.get("run") or {})
    run.setdefault("output_dir", str(stage.output_dir))
    run_config = call(RunConfig, run, f"{where}.run", "run")
    try:
        resolve_precision(run_config.precision)
    except ConfigError as exc:
        raise ConfigError(f"{where}.run.precision: {exc}") from None
    trains = run_config.max_epochs or run_config.max_steps
    if trains and task.needs_model_losses() and not type(task).model_node(cfg.get("model")).get("losses"):
        length = f"{run_config.max_epochs} epochs" if run_config.max_epochs else f"{run_config.max_steps} steps"
        raise ConfigError(f"{where}.model.losses: the stage trains for {length} but its model lists no objective; "
                          "list them, e.g. [{name: lm}] (vlreg list -l objective), or set run.max_steps: 0 "
                          "to evaluate only")
    registry("runner").get(cfg.get("runner") or "trainer")
    metrics = task.metric_names()
    best = run_config.best_metric
    if best is not None and metrics is not None and best not in metrics:
        raise ConfigError(f"{where}.run.best_metric: {best!r} is not a metric of task {type(task).__name__}"
                          f"{did_you_mean(best, metrics)}; its metrics: {', '.join(metrics)}")
    resume = run_config.resume
    if resume not in (False, "auto") and not Path(resume).exists():
        raise ConfigError(f"{where}.run.resume: {resume!r} does not exist; give a checkpoint or run directory, "
                          "auto (the newest checkpoint of output_dir, if any) or false")


def build_model(stage_config: Mapping[str, Any]) -> Any:
    """The model of a stage, as its task builds it (meta device inside ``dry_build``)."""
    return build("task", stage_config["task"], "task").build_model(stage_config.get("model"))


def component_names(stage_config: Mapping[str, Any]) -> dict[str, str]:
    """``{role: registered name}`` of a stage's model components, for summaries."""
    model = stage_config.get("model") or {}
    names = {}
    for role in ("encoder", "bridge", "prompter", "llm"):
        node = model.get(role)
        if node:
            names[role] = node if isinstance(node, str) else node.get("name", "?")
    return names


def resolve_init_source(project: Project, ref: str) -> Path:
    """A stage name or a path -> the checkpoint directory to load weights from."""
    from .io.checkpoints import final_checkpoint

    if any(s.name == ref for s in project.stages):
        stage = project.stage(ref)
        found = final_checkpoint(stage.output_dir)
        if found is None:
            raise UserError(f"stage {ref!r} has no checkpoint in {stage.output_dir}: run it first")
        return found
    return Path(ref)


def initialise(project: Project, stage: Stage, model: Any) -> None:
    """Load each component named under the stage's ``init`` from its earlier stage or checkpoint."""
    from .io.checkpoints import load_component_weights

    for role, ref in (stage.config.get("init") or {}).items():
        source = resolve_init_source(project, ref)
        missing = load_component_weights(model, role, source, strict=False, ignore_unexpected=True)
        note = f"; not in it (kept as initialised): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" \
            if missing else ""
        print(f"[vlreg] stage {stage.name}: {role} initialised from {source}{note}", flush=True)


def prepare_stage(stage: Stage) -> None:
    """Run a preparation stage (see :mod:`vlreg.tasks.preparation`): it makes what is missing."""
    started = time.time()
    build("task", stage.config["task"], f"stages.{stage.name}.task").prepare()
    print(f"[vlreg] stage {stage.name}: ready ({time.time() - started:.1f} s)", flush=True)


def run_stage(project: Project, stage: Stage, force: bool = False) -> dict[str, Any]:
    """Build the task, model and data of one stage, initialise from earlier stages, and fit."""
    import torch

    from .config import save_config
    from .device import frozen_precision, resolve_precision
    from .registry import registry
    from .io.run_paths import record_paths
    from .runner import RunConfig

    cfg, where = stage.config, f"stages.{stage.name}"
    task = build("task", cfg["task"], f"{where}.task")
    run = dict(cfg.get("run") or {})
    run["output_dir"] = str(stage.output_dir)
    if force:
        run["resume"] = False
        shutil.rmtree(stage.run_dir.checkpoints, ignore_errors=True)
    run_config = call(RunConfig, run, f"{where}.run", "run")
    precision = resolve_precision(run_config.precision)
    data = cfg.get("data") or {}
    datasets = {split: build("dataset", node, f"{where}.data.{split}") for split, node in data.items() if node}
    torch.manual_seed(run_config.seed)  # components built from config get the same weights in every stage
    with frozen_precision(precision.precision):  # frozen components' "auto" follows the run
        model = task.build_model(cfg.get("model"))
    initialise(project, stage, model)
    if cfg.get("feature_cache") and getattr(model, "encoder", None) is not None:
        from .runner.feature_cache import attach_feature_cache

        cache = cfg["feature_cache"]
        root = Path(cache) if isinstance(cache, str) else RunDir(project.output_dir).feature_cache
        for dataset in datasets.values():
            attach_feature_cache(dataset, model.encoder, root)
    stage.output_dir.mkdir(parents=True, exist_ok=True)
    save_config(stage.saved or cfg, stage.run_dir.config, comment=f"precision: {precision.describe()}")
    if is_main():
        record_paths(cfg, stage.output_dir)
    runner = registry("runner").get(cfg.get("runner") or "trainer")(run_config)
    results = runner.fit(model, task, datasets.get("train"), datasets.get("eval"))
    exported = task.export(model, stage.output_dir)
    if exported is not None:
        results["export"] = str(exported)
    if is_main():
        write_json_atomically(stage.run_dir.marker, {"stage": stage.name, "export": results.get("export")}, indent=2)
    return results
