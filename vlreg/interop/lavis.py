"""LAVIS BLIP-2 checkpoints into vlreg.

A LAVIS checkpoint (``.pth``, the state dict usually nested under ``"model"``) holds::

    visual_encoder.*     EVA ViT-g (blocks.{i}.attn.q_bias / v_bias ...) or OpenAI CLIP ViT-L
    ln_vision.*          the LayerNorm after it: vlreg's encoder post_norm
    query_tokens, Qformer.bert.*, Qformer.cls.*   the Q-Former (qformer_keys.lavis_rules)
    vision_proj, text_proj, itm_head, temp         stage-1 heads
    opt_proj | t5_proj                              the projection to the LLM
    opt_model.* | t5_model.*                        the LLM (rarely: LAVIS saves trainable weights only)

It does not say which architecture it belongs to, so loading takes the vlreg model node
as well. The model is built from the node, so frozen parts the checkpoint lacks load
from their own sources (``pretrained:``, ``checkpoint:``, ``path:``); every other weight
must come from the file. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from torch import Tensor

from ..errors import ConfigError
from ..models.bridges import qformer_keys
from ..models.encoders import vision_keys
from .materialize import assign_weights
from ..io.renaming import rename
from ..io.weights import read_weights

LLM_PREFIXES = ("opt_model.", "t5_model.", "llm_model.")
VISION_PREFIXES = ("visual_encoder.", "ln_vision.")
IGNORED_SUFFIXES = ("position_ids",)
"""Buffers LAVIS saves that vlreg computes (BERT's position ids)."""

OPTIONAL_PARTS = {
    "bridge": ("word_embeddings", "position_embeddings", "text_ffn", "vision_proj", "text_proj", "itm_head", "temp",
               "lm_head", "llm_proj"),
}
"""Parts of a checkpoint a model may lack: a stage-1 checkpoint's text branch and heads in a stage-2 Q-Former,
a stage-2 checkpoint's projection in a stage-1 one."""


def state_to_vlreg(state: Mapping[str, Tensor], final_norm: str = vision_keys.POST_NORM) -> tuple[dict[str, Tensor], list[str]]:
    """A LAVIS BLIP-2 state -> (vlreg ``VisionLanguageModel`` keys, the LAVIS keys nothing maps)."""
    rules = qformer_keys.lavis_rules()
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    vision = {k: v for k, v in state.items() if k.startswith(VISION_PREFIXES)}
    out.update({f"encoder.{k}": v for k, v in vision_keys.from_lavis(vision, final_norm).items()})
    visual = {k[len("visual_encoder."):]: v for k, v in vision.items() if k.startswith("visual_encoder.")}
    if vision_keys.is_openai_clip_layout(visual):  # EVA's keys all carry over; CLIP's only where a rule matches
        clip = vision_keys.openai_clip_rules()
        unknown += [f"visual_encoder.{k}" for k, v in visual.items() if not rename({k: v}, clip, to_vlreg=True)]
    for key, value in state.items():
        if key in vision or key.endswith(IGNORED_SUFFIXES):
            continue
        llm = next((p for p in LLM_PREFIXES if key.startswith(p)), None)
        if llm is not None:
            out[f"llm.model.{key[len(llm):]}"] = value
            continue
        renamed = rename({key: value}, rules, to_vlreg=True)
        if not renamed:
            unknown.append(key)
        out.update({f"bridge.{k}": v for k, v in renamed.items() if f"bridge.{k}" not in out})
    return out, unknown


def _optional(key: str, model: Any) -> bool:
    """Whether a converted key belongs to a part that ``model`` may lack (see OPTIONAL_PARTS)."""
    role, _, rest = key.partition(".")
    if getattr(model, role, None) is None:
        return True
    return any(part in OPTIONAL_PARTS.get(role, ()) for part in rest.split("."))


def load_lavis(path: str | os.PathLike, node: Mapping[str, Any], strict: bool = True) -> Any:
    """A vlreg model (eval mode) built from ``node`` with the weights of a LAVIS BLIP-2 checkpoint.

    Keys of parts the model does not have (a stage-1 text branch in a stage-2 model, a
    projection to an LLM the model lacks) are skipped; a key that maps to nothing, and a weight
    the model needs that is neither in the file nor loaded from a component's own source,
    are ConfigErrors (the latter only when ``strict``). A component with a source whose
    weights the file overwrites (ln_vision into a pretrained encoder) forgets its source, so
    a later vlreg checkpoint saves its weights in full.
    """
    from ..models.assembly import VisionLanguageModel
    from ..io.sources import weight_sources

    model = VisionLanguageModel.from_config(node)
    origin = f"LAVIS checkpoint {str(path)!r}"
    state = read_weights(path)
    final = vision_keys.final_norm(model.encoder.state_dict()) if model.encoder is not None else vision_keys.POST_NORM
    converted, unknown = state_to_vlreg(state, final)
    if unknown:
        raise ConfigError(f"{origin} holds keys vlreg does not know: {', '.join(unknown[:6])}")
    own = model.state_dict()
    converted = {k: v for k, v in converted.items() if k in own or not _optional(k, model)}
    sources = weight_sources(model)
    unset = assign_weights(model, converted, origin, strict=False)
    needed = [k for k in unset if not any(k.startswith(f"{prefix}.") for prefix in sources)]
    if needed and strict:
        raise ConfigError(f"{origin} lacks weights the model needs, and no component loads them from its own source: "
                          f"{', '.join(needed[:6])}{' ...' if len(needed) > 6 else ''}")
    for prefix in sources:
        if any(k.startswith(f"{prefix}.") for k in converted):
            forget = getattr(model.get_submodule(prefix), "forget_weight_source", None)
            if forget is None:
                raise ConfigError(f"{origin} replaces weights of {prefix!r}, which loaded them from its own source "
                                  "and cannot record that they changed (it has no forget_weight_source())")
            forget()
    return model.eval()
