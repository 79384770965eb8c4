"""A run directory and the name of every file in it: :class:`RunDir`.

A stage runs in its own directory (``<output_dir>/<stage>``; a config of one stage
uses ``output_dir`` itself) and writes there, in this order::

    config.yaml      the stage's resolved config (first, before any work)
    paths.json       where the paths its model names were (vlreg.io.run_paths)
    metrics.jsonl    one JSON object per logged step and evaluation
    tensorboard/     the same, for TensorBoard (when it is installed)
    checkpoints/     step_N checkpoints and best/ (vlreg.io.checkpoints)
    predictions/     the task's predictions, per evaluation
    results.json     final and best metrics, steps, seconds, counters (the runner, at the end)
    export/          what the task exports for later stages (an LLM, an encoder's weights)
    stage.json       last, after training, evaluation and export: the stage is complete

A project's output directory holds its stages' directories and three files of its own::

    results.json     every stage's results (a project of several stages)
    .vlreg.lock      names the run that writes there now
    feature_cache/   the frozen-feature cache the stages share
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError


class RunDir:
    """The files of one run directory (see the module docstring); nothing is created until written."""

    CONFIG = "config.yaml"
    PATHS = "paths.json"
    METRICS = "metrics.jsonl"
    TENSORBOARD = "tensorboard"
    CHECKPOINTS = "checkpoints"
    PREDICTIONS = "predictions"
    RESULTS = "results.json"
    EXPORT = "export"
    MARKER = "stage.json"
    LOCK = ".vlreg.lock"
    FEATURE_CACHE = "feature_cache"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def paths(self) -> Path:
        return self.path / self.PATHS

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS

    @property
    def export(self) -> Path:
        return self.path / self.EXPORT

    @property
    def marker(self) -> Path:
        """Written last, after training, evaluation and export: the stage is complete."""
        return self.path / self.MARKER

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def feature_cache(self) -> Path:
        return self.path / self.FEATURE_CACHE

    @property
    def completed(self) -> bool:
        """Whether the stage that runs here completed (its ``stage.json`` exists)."""
        return self.marker.is_file()

    def read_results(self) -> dict[str, Any]:
        return json.loads(self.results.read_text(encoding="utf-8"))

    def read_marker(self) -> dict[str, Any]:
        return json.loads(self.marker.read_text(encoding="utf-8"))

    @classmethod
    def holding(cls, path: str | os.PathLike) -> "RunDir":
        """The run directory of ``path``: the run directory itself, its ``checkpoints/`` or one checkpoint in it
        (the first of them and its two parents that holds a ``config.yaml``)."""
        path = Path(path)
        for directory in (path, path.parent, path.parent.parent):
            if (directory / cls.CONFIG).is_file():
                return cls(directory)
        raise ConfigError(f"no {cls.CONFIG} next to checkpoint {path} or in its run directory; "
                          "it says which model the weights belong to")
