"""What a ``--model`` value is: the models it offers, what each can run, and which one runs an evaluation.

A source is one of:

- a vlreg run directory (a stage's ``<output_dir>/<stage>``, its ``checkpoints/`` or one
  ``step_N`` checkpoint): one model;
- a project output directory (``<output_dir>`` with a subdirectory per stage): one model per
  stage that has a checkpoint, in the order the project ran them (the order of the project's
  ``results.json``, then of the stages' ``config.yaml`` times); evaluation-only stages, which
  have no checkpoint, are skipped;
- a transformers BLIP-2 directory or hub name (read by :func:`vlreg.load_model`). A LAVIS
  ``.pth`` file does not say which model it belongs to: convert it first
  (``vlreg.load_model(path, config=...)``, then ``vlreg.interop.save_transformers``).

The rule for a project: **each evaluation runs on the last stage trained for its task whose
model has the parts it needs, else on the last stage whose model has those parts**. A stage
is trained for an evaluation's task when its own task is that task or a specialisation of it
(``pretrain_stage2`` is captioning, ``pretrain_stage1`` retrieval), so a project with stage 1,
stage 2 and a VQA fine-tuning stage is captioned by stage 2, answers questions with the VQA
stage and retrieves with stage 1. The parts: the evaluation's media encoder, an LLM behind
the bridge for captioning and VQA, a Q-Former text branch for retrieval.
``--model <project>/<stage>`` names a stage explicitly. A source none of whose models fits
an evaluation gets "n/a" with the reason.

Media processors: each model's own evaluation processor (see :mod:`vlreg.interop.processors`):
a vlreg run's from its stage config, a transformers checkpoint's from its image processor
settings; failing both, the encoder's own input size with CLIP's normalisation.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, UserError
from ..io.run_dir import RunDir
from .suite import Evaluation


@dataclass(frozen=True)
class Capabilities:
    """What a model can run: its encoder's modality (None without one), an LLM behind its bridge,
    a Q-Former text branch, and the processor node its media need (None when unknown)."""

    media: Optional[str]
    llm: bool
    text_branch: bool
    processor: Optional[dict[str, Any]]


def capabilities(model: Any, processor: Optional[dict[str, Any]] = None) -> Capabilities:
    """The :class:`Capabilities` of a model (real or built on the meta device)."""
    from ..interop.processors import encoder_processor

    encoder, bridge = getattr(model, "encoder", None), getattr(model, "bridge", None)
    heads = ("image_embeds", "text_embeds", "itm_logits", "tokenize")
    processor = processor or getattr(model, "eval_processor", None) or encoder_processor(encoder)
    return Capabilities(
        media=getattr(encoder, "modality", None),
        llm=bridge is not None and getattr(model, "llm", None) is not None,
        text_branch=bool(getattr(bridge, "text_branch", False)) and all(hasattr(bridge, h) for h in heads),
        processor=dict(processor) if processor else None,
    )


def _an(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def shortfall(evaluation: Evaluation, caps: Capabilities) -> Optional[str]:
    """Why a model with ``caps`` cannot run ``evaluation``, or None when it can."""
    if caps.media is None:
        return "it has no media encoder"
    if caps.media != evaluation.media:
        return f"it is {_an(caps.media)} model; this evaluation needs {_an(evaluation.media)} encoder"
    if "llm" in evaluation.needs and not caps.llm:
        return "it has no LLM behind its bridge to generate text with"
    if "text_branch" in evaluation.needs and not caps.text_branch:
        return "it has no Q-Former text branch (retrieval needs a stage-1 model's ITC and ITM heads)"
    if caps.processor is None:
        return "no evaluation processor is known for its media"
    return None


class Candidate:
    """One model of a source: a vlreg run (``config`` given: its stage config) or a checkpoint
    :func:`vlreg.load_model` reads. Loaded on first use and kept until :meth:`release`."""

    def __init__(self, location: str, label: str, config: Optional[dict[str, Any]] = None,
                 precision: Optional[str] = None):
        self.location, self.label, self.config, self.precision = location, label, config, precision
        self._model: Any = None
        self._caps: Optional[Capabilities] = None

    def capabilities(self) -> Capabilities:
        """What the model can run: a run's from its config, built on the meta device (loaded where a
        dry build cannot build it); other models' once loaded."""
        if self._caps is None:
            if self.config is not None:
                from ..interop.processors import run_processor
                from ..interop.runs import without_prompter
                from ..models.assembly import VisionLanguageModel
                from ..models.base import dry_build

                node = dict(self.config.get("model") or {})
                try:
                    with dry_build():
                        model = VisionLanguageModel.from_config(without_prompter(node) if node.get("bridge") else node)
                except UserError:  # e.g. an LLM given by path only: a dry build cannot build it, loading can
                    model = self.load()
                self._caps = capabilities(model, run_processor(self.config))
            else:
                self._caps = capabilities(self.load())
        return self._caps

    def trained_for(self, evaluation: Evaluation) -> bool:
        """Whether the run's task is the evaluation's task or a specialisation of it."""
        from ..registry import registry

        task = (self.config or {}).get("task")
        if not task:
            return False
        tasks = registry("task")
        own = tasks.get(task if isinstance(task, str) else task["name"])
        return issubclass(own, tasks.get(evaluation.task["name"]))

    def load(self) -> Any:
        if self._model is None:
            from ..interop import load_model

            self._model = load_model(self.location, precision=self.precision)
        return self._model

    def release(self) -> None:
        """Drop the loaded model (and free accelerator memory)."""
        if self._model is not None:
            self._model = None
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


@dataclass
class ModelSource:
    """A ``--model`` value: a display name, where it is, and its candidate models in run order."""

    name: str
    location: str
    kind: str
    candidates: list[Candidate]

    def choose(self, evaluation: Evaluation) -> tuple[Optional[Candidate], Optional[str]]:
        """The candidate to run ``evaluation`` on (see the module docstring), or None and the reason none can."""
        reasons = {c.label: shortfall(evaluation, c.capabilities()) for c in self.candidates}
        fits = [c for c in self.candidates if reasons[c.label] is None]
        if fits:
            trained = [c for c in fits if c.trained_for(evaluation)]
            return (trained or fits)[-1], None
        if self.kind == "project":
            return None, "; ".join(f"{label}: {why}" for label, why in reasons.items())
        return None, reasons[self.candidates[0].label]

    def describe(self) -> dict[str, Any]:
        return {"source": self.location, "kind": self.kind, "models": [c.label for c in self.candidates]}


def project_stages(directory: Path) -> list[Path]:
    """The stage directories of a project output that hold a checkpoint, in the order they ran."""
    from ..io.checkpoints import final_checkpoint

    stages = [d for d in directory.iterdir() if d.is_dir() and RunDir(d).config.is_file() and final_checkpoint(d)]
    project = RunDir(directory)
    order = list(project.read_results().get("stages") or {}) if project.results.is_file() else []
    ranked = {name: i for i, name in enumerate(order)}
    return sorted(stages, key=lambda d: (ranked.get(d.name, len(order)), RunDir(d).config.stat().st_mtime_ns))


def open_source(location: str | os.PathLike, name: str, precision: Optional[str] = None) -> ModelSource:
    """The :class:`ModelSource` of a ``--model`` value (see the module docstring for the kinds)."""
    from ..interop.runs import read_run_config
    from ..io.checkpoints import is_run_checkpoint

    path = Path(location).expanduser()
    if path.is_dir() and is_run_checkpoint(path):
        candidate = Candidate(str(path), path.name, read_run_config(path), precision)
        return ModelSource(name, str(path), "run", [candidate])
    if path.is_dir() and not (path / "config.json").is_file():
        stages = project_stages(path)
        if not stages:
            raise ConfigError(f"--model {location}: neither a vlreg run, a project output with a finished stage, "
                              "nor a transformers checkpoint (no config.json)")
        candidates = [Candidate(str(s), s.name, read_run_config(s), precision) for s in stages]
        return ModelSource(name, str(path), "project", candidates)
    if path.is_file():
        raise ConfigError(f"--model {location} is a weights file (a LAVIS checkpoint?), which does not say which model "
                          "it belongs to: convert it with vlreg.load_model(path, config=<model node>) and "
                          "vlreg.interop.save_transformers, then benchmark that directory")
    return ModelSource(name, str(location), "transformers", [Candidate(str(location), Path(location).name, None,
                                                                       precision)])
