"""A vlreg run's checkpoint as a ready model.

A stage writes ``<run>/config.yaml`` (the stage's resolved config), ``<run>/paths.json``
(where the paths its model names were: :mod:`vlreg.io.run_paths`) and
``<run>/checkpoints/step_N/`` (see :class:`vlreg.io.run_dir.RunDir` and
:mod:`vlreg.io.checkpoints`). Loading reads the config (:func:`read_run_config`: overrides
applied, paths found again where the run was moved), rebuilds the ``model:`` node with
:meth:`VisionLanguageModel.from_config` (frozen parts load from their own sources) and loads
the checkpoint's weights with :func:`~vlreg.io.checkpoints.load_weights`, which checks the
frozen sources' checksums. The model's ``eval_processor``
is the run's (:func:`vlreg.interop.processors.run_processor`).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from ..errors import ConfigError
from ..io.checkpoints import load_weights, resolve_checkpoint
from ..io.run_dir import RunDir
from ..io.run_paths import relocate

def without_prompter(node: dict[str, Any]) -> dict[str, Any]:
    """The model node without its P-Former, and without the objectives that need one."""
    from ..registry import registry

    def needs_prompter(item: Any) -> bool:
        return "prompter" in registry("objective").get(item if isinstance(item, str) else item["name"]).needs

    node = {k: v for k, v in node.items() if k != "prompter"}
    if isinstance(node.get("losses"), list):
        node["losses"] = [item for item in node["losses"] if not needs_prompter(item)]
    return node


def with_objectives(config: dict[str, Any]) -> dict[str, Any]:
    """A stage config whose ``model.losses`` is a mapping of loss weights, as runs written before objectives
    have it, with that mapping as the list of objectives it means (see
    :func:`vlreg.models.assembly.objectives_from_weights`)."""
    from ..models.assembly import objectives_from_weights

    model = config.get("model")
    if isinstance(model, dict) and isinstance(model.get("losses"), dict):
        config = {**config, "model": {**model, "losses": objectives_from_weights(model["losses"])}}
    return config


def read_run_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The stage config of a run directory or checkpoint, with ``key.path=value`` overrides applied and the
    paths its model names found where they are now (see :mod:`vlreg.io.run_paths`)."""
    from ..config import load_config, to_plain

    run = RunDir.holding(resolve_checkpoint(path))
    return relocate(with_objectives(to_plain(load_config(run.config, overrides))), run.path)


def load_run(path: str | os.PathLike, prompter: Optional[bool] = None, precision: Optional[str] = None,
             overrides: Sequence[str] = ()) -> Any:
    """The model of a run directory's newest checkpoint (or of the given checkpoint directory), in eval mode.

    ``prompter``: keep the P-Former. By default it is kept only in a model without a bridge
    (stage 0, where it is the model); elsewhere it was an alignment target for training and
    inference does not need it: the model is built without it, and the weights that were there
    for it are skipped (its own, and the projection of a bridge into its space in a model
    without an LLM, as a stage-1 model aligned to a P-Former has).
    ``precision``: dtype of the frozen encoder and LLM (default: the config's).
    ``overrides``: ``key.path=value`` changes to the run's ``config.yaml`` (``model.llm.path=...``).
    """
    from ..models.assembly import VisionLanguageModel
    from . import with_precision
    from .processors import encoder_processor, run_processor

    checkpoint = resolve_checkpoint(path)
    config = read_run_config(checkpoint, overrides)
    node = config.get("model")
    if not isinstance(node, dict) or not node:
        raise ConfigError(f"{RunDir.holding(checkpoint).config} has no model: node")
    keep = prompter if prompter is not None else not node.get("bridge")
    if not keep:
        node = without_prompter(node)
    model = VisionLanguageModel.from_config(with_precision(node, precision))
    load_weights(model, checkpoint, exclude=() if keep else ("prompter",), ignore_unexpected=not keep)
    model.eval_processor = run_processor(config) or encoder_processor(model.encoder)
    return model.eval()
