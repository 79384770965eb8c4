"""Suites x models: choose each evaluation's model, load each model once, evaluate, record.

The record (written as ``results.json`` by :mod:`vlreg.bench.report`)::

    {"suites": {suite: {description, source, evaluations: {name: {media, needs, metrics, task, dataset}}}},
     "quick": bool,
     "evaluations": ["coco/caption", ...],
     "models": {model: {source, kind, models}},
     "results": {model: {"coco/caption": {"status": "ok", "stage", "model", "processor", "metrics", "seconds"},
                         "coco/retrieval": {"status": "n/a", "reason"}}}}

Each evaluation's predictions and the runner's ``results.json`` go to
``<out>/runs/<model>/<suite>/<evaluation>/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from .sources import Candidate, ModelSource
from .suite import Evaluation, Options, Suite, evaluate


def say(message: str) -> None:
    """Progress on the main process."""
    from .. import distributed

    if distributed.is_main():
        print(f"[bench] {message}", flush=True)


def safe_name(name: str) -> str:
    """A name usable as a directory name."""
    return re.sub(r"[^\w.+-]+", "_", name).strip("_") or "model"


def run_source(source: ModelSource, evaluations: list[Evaluation], out_dir: Path,
               options: Options) -> dict[str, dict[str, Any]]:
    """Every evaluation on one source: ``{evaluation key: record}`` in evaluation order."""
    records: dict[str, dict[str, Any]] = {}
    plan: dict[str, tuple[Candidate, list[Evaluation]]] = {}  # by candidate label, in first-use order
    for evaluation in evaluations:
        candidate, reason = source.choose(evaluation)
        if candidate is None:
            records[evaluation.key] = {"status": "n/a", "reason": reason}
            say(f"{source.name} {evaluation.key}: n/a ({reason})")
        else:
            plan.setdefault(candidate.label, (candidate, []))[1].append(evaluation)
    for candidate, chosen in plan.values():
        model = candidate.load()
        processor = candidate.capabilities().processor
        try:
            for evaluation in chosen:
                say(f"{source.name} {evaluation.key}: {candidate.location}")
                run_dir = Path(out_dir, "runs", *map(safe_name, (source.name, evaluation.suite, evaluation.name)))
                metrics, seconds = evaluate(model, evaluation, processor, run_dir, options)
                records[evaluation.key] = {"status": "ok", "stage": candidate.label, "model": candidate.location,
                                           "processor": processor, "metrics": metrics, "seconds": seconds}
        finally:
            candidate.release()
    for candidate in source.candidates:  # those loaded only to learn what they can run
        candidate.release()
    return {e.key: records[e.key] for e in evaluations}


def run_bench(suites: list[Suite], sources: list[ModelSource], out_dir: Path, quick: bool = False,
              options: Optional[Options] = None) -> dict[str, Any]:
    """Run every suite's evaluations on every source; returns the record (see the module docstring)."""
    options = options or Options()
    if quick:
        suites = [suite.shortened() for suite in suites]
    for suite in suites:
        suite.prepare()
    evaluations = [e for suite in suites for e in suite.evaluations]
    return {
        "suites": {suite.name: suite.describe() for suite in suites},
        "quick": quick,
        "evaluations": [e.key for e in evaluations],
        "models": {source.name: source.describe() for source in sources},
        "results": {source.name: run_source(source, evaluations, out_dir, options) for source in sources},
    }
