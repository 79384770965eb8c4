"""Tasks that prepare files for later stages instead of training a model.

A stage whose task is a :class:`Preparation` (the synthetic world's ``make_world`` and
``train_tokenizers``, for example) builds no model and runs no runner: the pipeline
calls :meth:`Preparation.prepare` whenever the project runs the stage or one after it.
``prepare`` makes only what is missing, so running it again costs a check; the stage
writes no files of its own and is never "complete". Its task's arguments say what it
makes and from what: the stage's ``data:``, ``run:`` and ``feature_cache:`` are not read
(so that ``all.run.*`` overrides apply to a project's every stage), and a ``model:`` or
``init:`` is an error.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError


class Preparation:
    """Base of a task that writes files later stages read (a dataset, tokenizers); its arguments name them."""

    def prepare(self) -> None:
        """Make what is missing; called on every process (the main one works, the others wait)."""
        raise NotImplementedError(f"{type(self).__name__} does not prepare anything")

    @staticmethod
    def check_stage(stage: Mapping[str, Any], where: str) -> None:
        """A preparation's stage builds no model: it has no ``model`` and no ``init``."""
        for key in ("model", "init"):
            if stage.get(key):
                raise ConfigError(f"{where}.{key}: this stage's task prepares files and builds no model; remove {key}")
