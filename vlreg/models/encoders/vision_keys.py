"""The image encoder's parameter names in transformers, LAVIS, EVA and OpenAI CLIP checkpoints.

vlreg's BLIP-2 image encoders are timm Vision Transformers (:class:`vlreg.models.encoders.timm_vit.TimmViT`);
their state dict, relative to the encoder::

    vit.cls_token [1, 1, D], vit.pos_embed [1, 1 + N, D], vit.patch_embed.proj,
    vit.norm_pre (CLIP ViT-L only), vit.blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
    post_norm  (BLIP-2's ln_vision; an encoder without one has its last LayerNorm in vit.norm)

``qkv`` is one linear layer whose bias covers query, key and value. EVA (and LAVIS's
``eva_vit_g``) keeps a query and a value bias only, ``attn.q_bias`` and ``attn.v_bias``, with
an implicit zero key bias; :func:`fuse_qv_bias` turns them into the full bias with a zero key
part, which is exactly what transformers' ``Blip2VisionModel`` stores as ``self_attn.qkv.bias``.

The rules are ``(vlreg name, other name)`` pairs (:mod:`vlreg.io.renaming`).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor

from ...io.renaming import Rule, rename

POST_NORM = "post_norm"
TIMM_NORM = "vit.norm"

_BLOCK = [("norm1", "layer_norm1"), ("attn.qkv", "self_attn.qkv"), ("attn.proj", "self_attn.projection"),
          ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")]

_OPENAI_CLIP_BLOCK = [("norm1", "ln_1"), ("attn.qkv.weight", "attn.in_proj_weight"),
                      ("attn.qkv.bias", "attn.in_proj_bias"), ("attn.proj", "attn.out_proj"), ("norm2", "ln_2"),
                      ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]


def final_norm(encoder_keys: Iterable[str]) -> str:
    """The module holding the encoder's last LayerNorm (BLIP-2's ``ln_vision``): ``post_norm`` or ``vit.norm``."""
    return POST_NORM if any(key.startswith(POST_NORM + ".") for key in encoder_keys) else TIMM_NORM


def transformers_rules(final: str = POST_NORM) -> list[Rule]:
    """The encoder's names in transformers' ``Blip2VisionModel``, under ``vision_model.``."""
    return [
        ("vit.cls_token", "vision_model.embeddings.class_embedding"),
        ("vit.pos_embed", "vision_model.embeddings.position_embedding"),
        ("vit.patch_embed.proj", "vision_model.embeddings.patch_embedding"),
        *[(f"vit.blocks.{{i}}.{ours}", f"vision_model.encoder.layers.{{i}}.{theirs}") for ours, theirs in _BLOCK],
        (final, "vision_model.post_layernorm"),
    ]


def openai_clip_rules() -> list[Rule]:
    """The names of OpenAI CLIP's visual tower (LAVIS's ``clip_vit_L.pth``), ``ln_pre`` included, no ``ln_post``."""
    return [
        ("vit.cls_token", "class_embedding"),
        ("vit.pos_embed", "positional_embedding"),
        ("vit.patch_embed.proj.weight", "conv1.weight"),
        ("vit.norm_pre", "ln_pre"),
        *[(f"vit.blocks.{{i}}.{ours}", f"transformer.resblocks.{{i}}.{theirs}") for ours, theirs in _OPENAI_CLIP_BLOCK],
    ]


def to_transformers(encoder_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """vlreg encoder state -> transformers ``vision_model.*`` keys."""
    return rename(encoder_state, transformers_rules(final_norm(encoder_state)), to_vlreg=False)


def from_transformers(state: Mapping[str, Tensor], final: str = POST_NORM) -> dict[str, Tensor]:
    """transformers BLIP-2 state -> vlreg encoder keys; ``post_layernorm`` goes to ``final``."""
    return rename(state, transformers_rules(final), to_vlreg=True)


def fuse_qv_bias(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """EVA's separate ``attn.q_bias`` / ``attn.v_bias`` -> one ``attn.qkv.bias`` = [q; 0; v]; other keys unchanged.

    A key bias (timm's Eva keeps a zero ``k_bias`` buffer) is dropped: EVA never learns one.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith((".attn.v_bias", ".attn.k_bias")):
            continue
        if key.endswith(".attn.q_bias"):
            prefix = key[: -len("q_bias")]
            v_bias = state[prefix + "v_bias"]
            out[prefix + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
        else:
            out[key] = value
    return out


def is_eva_layout(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict keeps EVA's separate query and value biases."""
    return any(key.endswith(".attn.q_bias") for key in state)


def is_openai_clip_layout(visual: Mapping[str, Tensor]) -> bool:
    """Whether a visual tower's state (without prefix) is in OpenAI CLIP's layout (``transformer.resblocks``)."""
    return any(key.startswith("transformer.resblocks.") for key in visual)


def from_lavis(state: Mapping[str, Tensor], final: str = POST_NORM) -> dict[str, Tensor]:
    """LAVIS ``visual_encoder.*`` and ``ln_vision.*`` -> vlreg encoder keys (other keys are left out).

    ``visual_encoder`` is EVA's layout (``eva_vit_g``: ``blocks.{i}.attn.q_bias`` ...) or OpenAI
    CLIP's (``clip_vit_L``: ``transformer.resblocks.{i}...``); ``ln_vision`` goes to ``final``.
    """
    visual = {key[len("visual_encoder."):]: value for key, value in state.items()
              if key.startswith("visual_encoder.")}
    if is_openai_clip_layout(visual):
        out = rename(visual, openai_clip_rules(), to_vlreg=True)
        out["vit.cls_token"] = out["vit.cls_token"].reshape(1, 1, -1)
        out["vit.pos_embed"] = out["vit.pos_embed"].reshape(1, *out["vit.pos_embed"].shape[-2:])
    else:
        out = {f"vit.{key}": value for key, value in fuse_qv_bias(visual).items()}
    out.update(rename(state, [(final, "ln_vision")], to_vlreg=True))
    return out
