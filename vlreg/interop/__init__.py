"""Checkpoints of other code bases in and out of vlreg, and :func:`load_model`.

- :mod:`.transformers_blip2`: ``Blip2ForConditionalGeneration`` in (``load_transformers``,
  ``from_transformers``) and out (``to_transformers``, ``save_transformers``).
- :mod:`.lavis`: LAVIS BLIP-2 checkpoints in.
- :mod:`.runs`: vlreg run checkpoints as ready models.
- :mod:`.materialize`: installing converted weights into a skeleton built without them.

The parameter names of the Q-Former and the image encoder in those checkpoints are
tables next to the modules they name (:mod:`vlreg.models.bridges.qformer_keys`,
:mod:`vlreg.models.encoders.vision_keys`); weight files are read with :mod:`vlreg.io.weights`.

Importing this package imports nothing heavy; each submodule imports what it needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ConfigError

__all__ = ["load_model", "save_transformers", "to_transformers", "with_precision"]

ModelConfig = Union[Mapping[str, Any], str, os.PathLike]


def load_model(
    source: str | os.PathLike,
    config: Optional[ModelConfig] = None,
    precision: Optional[str] = None,
    prompter: Optional[bool] = None,
    strict: bool = True,
    device: Optional[str] = None,
    overrides: Sequence[str] = (),
) -> Any:
    """A ready :class:`~vlreg.models.assembly.VisionLanguageModel`, in eval mode, from any of:

    - a vlreg run directory, its ``checkpoints/`` folder or one checkpoint directory: the
      model node comes from the run's ``config.yaml`` (see :func:`vlreg.interop.runs.load_run`;
      ``prompter`` keeps or drops a P-Former, which by default is dropped when the model has a bridge;
      ``overrides``, ``key.path=value`` changes to that config, e.g. ``model.llm.path=/moved/lm`` for a
      frozen source that is no longer where the run found it; a moved or copied run finds its paths
      again by itself where it can, see :mod:`vlreg.io.run_paths`);
    - a transformers ``Blip2ForConditionalGeneration`` directory or hub name, OPT or T5, with its
      tokenizer when saved alongside (:func:`vlreg.interop.transformers_blip2.load_transformers`);
    - a LAVIS BLIP-2 ``.pth`` file, with ``config``: the vlreg model node it belongs to, or a
      YAML file holding one (a model node file such as ``configs/models/blip2_opt2.7b_vit_g.yaml``,
      or a stage config with ``model:``). ``strict``: every weight of the model must come from
      the file or from a component's own source (:func:`vlreg.interop.lavis.load_lavis`).

    ``precision`` (``fp32``, ``bf16``, ``fp16``) sets the dtype of the frozen encoder and LLM
    (default: the config's; fp32 for transformers checkpoints). ``device`` moves the model.

    The model carries ``eval_processor``, the processor node its media are prepared with (the
    run's evaluation processor, a transformers checkpoint's image processor settings, else the
    encoder's size with CLIP's normalisation; see :mod:`vlreg.interop.processors`), or None for
    a model without a media encoder; ``model.preprocess(image=..., video=..., features=...)``
    turns files into a batch with it.
    """
    from .lavis import load_lavis
    from .processors import encoder_processor
    from ..io.checkpoints import is_run_checkpoint
    from .runs import load_run
    from .transformers_blip2 import load_transformers

    path = Path(source).expanduser()
    if overrides and not (path.is_dir() and is_run_checkpoint(path)):
        raise ConfigError(f"overrides change a vlreg run's config.yaml; {source} is not a vlreg run")
    if path.is_dir() and is_run_checkpoint(path):
        model = load_run(path, prompter, precision, overrides)
    elif path.is_file():
        if config is None:
            raise ConfigError(f"{source} is a weights file (LAVIS layout?), which does not say which model it belongs "
                              "to: pass config=, a model node or a config file holding one")
        model = load_lavis(path, with_precision(model_node(config), precision), strict)
    elif path.is_dir() or not path.exists() and not str(source).startswith((".", "/", "~")):
        model = load_transformers(source, precision or "fp32")
    else:
        raise ConfigError(f"{source} does not exist")
    if model.eval_processor is None:
        model.eval_processor = encoder_processor(model.encoder)
    return model.to(device) if device is not None else model


def model_node(config: ModelConfig) -> dict[str, Any]:
    """A model node from a mapping or a YAML file: a model node itself, or a stage config's ``model:``."""
    from ..config import load_config, to_plain

    node = to_plain(load_config(config)) if isinstance(config, (str, os.PathLike)) else to_plain(config)
    if not isinstance(node, Mapping):
        raise ConfigError(f"config must be a model node (encoder, bridge, llm, ...), got {node!r}")
    if isinstance(node.get("model"), Mapping) and not any(k in node for k in ("encoder", "bridge", "llm")):
        node = node["model"]
    return dict(node)


def with_precision(node: Mapping[str, Any], precision: Optional[str]) -> dict[str, Any]:
    """The model node with ``precision`` set on its encoder and LLM (unchanged when None)."""
    node = dict(node)
    if precision is None:
        return node
    for role in ("encoder", "llm"):
        part = node.get(role)
        if part:
            node[role] = {**({"name": part} if isinstance(part, str) else part), "precision": precision}
    return node


def to_transformers(model: Any, image_token_index: Optional[int] = None) -> Any:
    """See :func:`vlreg.interop.transformers_blip2.to_transformers`."""
    from .transformers_blip2 import to_transformers as convert

    return convert(model, image_token_index)


def save_transformers(model: Any, directory: str | os.PathLike) -> Path:
    """See :func:`vlreg.interop.transformers_blip2.save_transformers`."""
    from .transformers_blip2 import save_transformers as save

    return save(model, directory)
