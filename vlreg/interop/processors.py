"""The processor a model prepares its media with for inference: ``model.eval_processor``.

- A vlreg run: the processor of its evaluation data (``data.eval.processor``), else the
  evaluation form of its training data's (:func:`evaluation_form`): the size, normalisation
  and frames it was trained on, without the random parts.
- A transformers BLIP-2: its image processor's settings
  (:func:`vlreg.interop.transformers_blip2.processor_settings`).
- Otherwise (a LAVIS file, a run that names no processor): the encoder's own input size
  with CLIP's normalisation, and its number of frames for video (:func:`encoder_processor`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

RANDOM_ARGUMENTS = ("sampling", "scale", "ratio", "hflip")
"""Arguments of training processors that draw at random, left to the evaluation processor's defaults."""


def evaluation_form(node: Mapping[str, Any] | str) -> dict[str, Any]:
    """A processor node as used for evaluation: ``image_train`` -> ``image_eval`` and ``video_train`` ->
    ``video_eval`` with the same size, frames and normalisation; any other node unchanged."""
    node = {"name": node} if isinstance(node, str) else dict(node)
    if not str(node.get("name", "")).endswith("_train"):
        return node
    kept = {k: v for k, v in node.items() if k != "name" and k not in RANDOM_ARGUMENTS}
    return {"name": node["name"][: -len("_train")] + "_eval", **kept}


def with_defaults(node: Mapping[str, Any]) -> dict[str, Any]:
    """A processor node with every argument it leaves out set to the processor's default, so that it states
    all its settings (``mean`` and ``std`` too); tuples as lists, as YAML and JSON hold them."""
    import inspect

    from ..registry import registry

    signature = inspect.signature(registry("processor").get(node["name"]))
    defaults = {p.name: list(p.default) if isinstance(p.default, tuple) else p.default
                for p in signature.parameters.values() if p.default is not p.empty}
    return {"name": node["name"], **defaults, **{k: v for k, v in node.items() if k != "name"}}


def run_processor(config: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The evaluation processor node of a run's stage config, every setting stated; None when its data name none."""
    data = config.get("data") or {}
    for split in ("eval", "train"):
        node = data.get(split)
        if isinstance(node, Mapping) and node.get("processor"):
            return with_defaults(evaluation_form(node["processor"]))
    return None


def encoder_processor(encoder: Any) -> Optional[dict[str, Any]]:
    """An evaluation processor node from the encoder alone: its input size, CLIP's normalisation, and for
    video its number of frames; None for an encoder of neither images nor video."""
    from .transformers_blip2 import default_processor

    modality = getattr(encoder, "modality", None)
    frames = getattr(encoder, "frame_encoder", None)
    size = getattr(frames if modality == "video" else encoder, "image_size", None)
    if modality not in ("image", "video") or not size:
        return None
    node = default_processor(int(size[0]))
    if modality == "video":
        node.update(name="video_eval", num_frames=int(encoder.num_frames))
    return with_defaults(node)
