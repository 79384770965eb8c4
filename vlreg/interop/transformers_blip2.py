"""transformers' ``Blip2ForConditionalGeneration`` in and out of vlreg.

A transformers BLIP-2 is a vlreg model with these parts::

    vision_model                         -> encoder: a timm VisionTransformer (``eva_vit_g`` for ViT-g,
                                            ``timm_vit`` for other shapes), post_layernorm = post_norm
    query_tokens, qformer,
    language_projection                  -> bridge: ``qformer`` without its text branch (qformer_keys)
    language_model                       -> llm: ``causal_lm`` (OPT, ...) or ``seq2seq_lm`` (T5, ...)
                                            built from the text config, same transformers class

Both directions build the target's skeleton with its parameters on the meta device and
install the source's tensors (:mod:`vlreg.interop.materialize`), so no second copy of a
multi-billion-parameter model is initialised; the two models share tensor storage
where dtypes agree.

Text layout: transformers' processor puts ``num_query_tokens`` image tokens before the
tokenizer's encoding of the text, and the model writes the query embeddings over them;
vlreg's LLM adapters put the prompts before the same encoding, so both see the same
sequence (see :mod:`vlreg.models.llms.common`).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from torch import Tensor

from ..errors import ConfigError, UserError
from ..models.bridges import qformer_keys
from ..models.encoders import vision_keys
from .materialize import assign_weights, parameters_on_meta

IMAGE_TOKEN = "<image>"

VIT_G = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16, patch_size=14,
             hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)
"""transformers' ``Blip2VisionConfig`` of EVA ViT-g, which vlreg builds as ``eva_vit_g``."""

ACTIVATIONS = {"gelu": None, "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
"""transformers ``hidden_act`` -> timm ``act_layer`` (None: timm's default, exact GELU)."""

TEXT_BRANCH = ("word_embeddings", "position_embeddings", "text_ffn", "vision_proj", "text_proj", "itm_head",
               "temp", "lm_head")
"""The stage-1 parts of a vlreg Q-Former, which ``Blip2ForConditionalGeneration`` has no place for."""

CONFIG_BOOKKEEPING = ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype")
"""Text-config keys that record where a config came from, not what the model computes."""


# -- configs -> vlreg nodes -----------------------------------------------------------------
def encoder_node(vision_config: Any, precision: str = "fp32") -> dict[str, Any]:
    """A vlreg encoder node with the architecture of a transformers ``Blip2VisionConfig``."""
    act = vision_config.hidden_act
    if act not in ACTIVATIONS:
        raise ConfigError(f"transformers BLIP-2 vision activation {act!r} has no timm counterpart; "
                          f"supported: {', '.join(ACTIVATIONS)}")
    size = vision_config.image_size
    if all(getattr(vision_config, key) == value for key, value in VIT_G.items()):
        return {"name": "eva_vit_g", "img_size": size, "precision": precision}
    width, hidden = vision_config.hidden_size, vision_config.intermediate_size
    ratio = hidden / width
    if int(width * ratio) != hidden:  # timm sizes its MLP as int(width * mlp_ratio)
        ratio = math.nextafter(ratio, math.inf)
    kwargs = {"embed_dim": width, "depth": vision_config.num_hidden_layers,
              "num_heads": vision_config.num_attention_heads, "mlp_ratio": ratio,
              "patch_size": vision_config.patch_size, "qkv_bias": vision_config.qkv_bias,
              "pre_norm": False, "final_norm": False}
    if ACTIVATIONS[act]:
        kwargs["act_layer"] = ACTIVATIONS[act]
    return {"name": "timm_vit", "model": "vit_giant_patch14_clip_224", "img_size": size, "model_kwargs": kwargs,
            "layer_norm_eps": vision_config.layer_norm_eps, "final_norm": True, "precision": precision}


def bridge_node(config: Any) -> dict[str, Any]:
    """A vlreg stage-2 Q-Former node (no text branch) from a ``Blip2Config``."""
    qformer = config.qformer_config
    if qformer.hidden_act != "gelu":
        raise ConfigError(f"transformers BLIP-2 Q-Former activation {qformer.hidden_act!r}: vlreg's Q-Former uses gelu")
    return {"name": "qformer", "num_queries": config.num_query_tokens, "num_layers": qformer.num_hidden_layers,
            "hidden_size": qformer.hidden_size, "num_heads": qformer.num_attention_heads,
            "intermediate_size": qformer.intermediate_size, "cross_attention_every": qformer.cross_attention_frequency,
            "dropout": qformer.hidden_dropout_prob, "layer_norm_eps": qformer.layer_norm_eps, "text_branch": False}


def config_settings(config: Any) -> dict[str, Any]:
    """Every setting of a transformers config (its class's own ``to_dict()``) that its class defines,
    without the bookkeeping.

    All of them, not only those that differ from the defaults: a config class may derive one
    setting from another when it is built (transformers 5's ``T5Config`` derives
    ``scale_decoder_outputs`` from ``tie_word_embeddings``), so a setting left out could come
    back different. Built again from these, the config has the same settings. Keys the class
    does not define are left out: leftovers of older releases that hub configs still carry
    (T5's ``n_positions``, ``output_past``), which no model code reads and which an llm
    node's ``config:`` refuses (:mod:`vlreg.models.llms.config_keys`).
    """
    from ..models.llms.config_keys import config_keys

    known = config_keys(type(config))
    return {k: v for k, v in config.to_dict().items() if k in known and k not in CONFIG_BOOKKEEPING}


def llm_node(config: Any, tied: bool, tokenizer: Optional[str] = None, precision: str = "fp32") -> dict[str, Any]:
    """A vlreg llm node from a ``Blip2Config``: the text config's settings as ``config:``
    (:func:`config_settings`), and ``tie_word_embeddings: tied``, whether the output head shares
    the input embeddings (FlanT5's does not), which is what an llm node's ``tie_word_embeddings`` says."""
    text = config.text_config
    settings = {"model_type": text.model_type, **config_settings(text), "tie_word_embeddings": tied}
    name = "causal_lm" if config.use_decoder_only_language_model else "seq2seq_lm"
    return {"name": name, "config": settings, "tokenizer": tokenizer, "precision": precision}


def model_node(config: Any, tied: bool, tokenizer: Optional[str] = None, precision: str = "fp32") -> dict[str, Any]:
    """The vlreg model node of a transformers ``Blip2Config`` (see :func:`llm_node` for ``tied``).

    ``precision`` applies to the frozen encoder and LLM; the Q-Former stays fp32.
    """
    return {"encoder": encoder_node(config.vision_config, precision), "bridge": bridge_node(config),
            "llm": llm_node(config, tied, tokenizer, precision)}


# -- state dicts ------------------------------------------------------------------------------
def state_to_vlreg(state: dict[str, Tensor], final_norm: str = vision_keys.POST_NORM) -> dict[str, Tensor]:
    """A ``Blip2ForConditionalGeneration`` state dict -> vlreg ``VisionLanguageModel`` keys.

    ``final_norm``: the encoder module that takes ``post_layernorm`` (see :func:`vision_keys.final_norm`).
    """
    out = {f"encoder.{k}": v for k, v in vision_keys.from_transformers(state, final_norm).items()}
    out.update({f"bridge.{k}": v for k, v in qformer_keys.from_transformers(state).items()})
    out.update({f"llm.model.{k[len('language_model.'):]}": v for k, v in state.items()
                if k.startswith("language_model.")})
    return out


def state_to_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A vlreg ``VisionLanguageModel`` state dict -> ``Blip2ForConditionalGeneration`` keys.

    The Q-Former's stage-1 text branch and any prompter are left out: transformers' class has no place for them.
    """
    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    bridge = {k: v for k, v in part("bridge.").items() if not any(name in TEXT_BRANCH for name in k.split("."))}
    out = vision_keys.to_transformers(part("encoder."))
    out.update(qformer_keys.to_transformers(bridge))
    out.update({f"language_model.{k}": v for k, v in part("llm.model.").items()})
    return out


def _unconsumed(state: dict[str, Tensor], converted: dict[str, Tensor]) -> list[str]:
    """Keys of a transformers state that no rule carried over (found by converting back)."""
    return sorted(set(state) - set(state_to_transformers(converted)))


# -- transformers -> vlreg --------------------------------------------------------------------------
def _output_head_tied(language_model: Any) -> bool:
    head = language_model.get_output_embeddings()
    return head is None or head.weight is language_model.get_input_embeddings().weight


def from_transformers(blip2: Any, tokenizer: Optional[str] = None, precision: str = "fp32") -> Any:
    """A vlreg ``VisionLanguageModel`` (eval mode) with the weights of a ``Blip2ForConditionalGeneration``.

    Args:
        blip2: the transformers model (any dtype; its tensors are shared where the dtype agrees).
        tokenizer: the LLM tokenizer's directory or hub name (with the BLIP-2 checkpoint: the same).
        precision: dtype of the frozen encoder and LLM (``fp32``, ``bf16``, ``fp16``).
    """
    from ..models.assembly import VisionLanguageModel

    tokenizer = None if tokenizer is None else str(tokenizer)
    node = model_node(blip2.config, _output_head_tied(blip2.language_model), tokenizer, precision)
    with parameters_on_meta():
        model = VisionLanguageModel.from_config(node)
    _check_same_text_config(model.llm.model.config, blip2.config.text_config)
    _check_projection_width(blip2.config.text_config, model.llm.width)
    state = blip2.state_dict()
    converted = state_to_vlreg(state, vision_keys.final_norm(model.encoder.state_dict()))
    leftover = _unconsumed(state, converted)
    if leftover:
        raise ConfigError(f"transformers BLIP-2 weights without a vlreg counterpart: {', '.join(leftover[:6])}")
    assign_weights(model, converted, "transformers BLIP-2")
    return model.eval()


def _check_same_text_config(ours: Any, theirs: Any) -> None:
    """The config of the LLM vlreg built must have every setting of the checkpoint's text config.

    ``tie_word_embeddings`` is left out: vlreg ties the output head as the checkpoint's weights are tied.
    """
    mine, expected = config_settings(ours), config_settings(theirs)
    differ = sorted(k for k in mine.keys() | expected.keys()
                    if k != "tie_word_embeddings" and mine.get(k) != expected.get(k))
    if differ:
        raise ConfigError(f"the rebuilt LLM's config differs from the checkpoint's in {', '.join(differ)}")


def _check_projection_width(text_config: Any, llm_width: int) -> None:
    """transformers' BLIP-2 projects the queries to ``text_config.hidden_size``, which must be the LLM's input width."""
    if text_config.hidden_size != llm_width:
        raise ConfigError(
            f"transformers' BLIP-2 projects the queries to the text config's hidden_size ({text_config.hidden_size}), "
            f"but this LLM's input embeddings are {llm_width} wide (as OPT's with word_embed_proj_dim different "
            "from hidden_size, e.g. OPT-350m): Blip2ForConditionalGeneration cannot hold it")


def _find_file(source: str, name: str) -> Optional[str]:
    """A file of a transformers checkpoint (local directory or hub name), or None when it has none."""
    from transformers.utils import cached_file

    return cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)


def default_processor(image_size: int) -> dict[str, Any]:
    """The ``image_eval`` processor node of a BLIP-2 image model: S x S bicubic, CLIP's normalisation."""
    from ..data.processors import CLIP_MEAN, CLIP_STD

    return {"name": "image_eval", "image_size": image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}


def processor_settings(source: str, image_size: int) -> dict[str, Any]:
    """The vlreg ``image_eval`` processor node for a checkpoint's image processor settings.

    Reads ``preprocessor_config.json`` (how the hub's BLIP-2 checkpoints store them) or the
    ``image_processor`` entry of ``processor_config.json`` (how transformers 5 saves a processor):
    size, image_mean, image_std. A checkpoint with neither gets ``image_size`` and CLIP's
    normalisation, which BLIP-2 uses.
    """
    settings = default_processor(image_size)
    config = None
    for name, entry in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = _find_file(source, name)
        if path is not None:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
            config = content.get(entry) if entry else content
            if config:
                break
    if not config:
        return settings
    size = config.get("size")
    if isinstance(size, dict):
        height, width = size.get("height", size.get("shortest_edge")), size.get("width", size.get("shortest_edge"))
        if height != width:
            raise ConfigError(f"{source}: image processor size {size} is not square; vlreg's image_eval resizes to S x S")
        size = height
    settings["image_size"] = int(size or image_size)
    settings["mean"] = list(config.get("image_mean") or settings["mean"])
    settings["std"] = list(config.get("image_std") or settings["std"])
    return settings


def load_transformers(source: str | os.PathLike, precision: str = "fp32") -> Any:
    """A vlreg model (eval mode) from a transformers BLIP-2 checkpoint directory or hub name.

    The tokenizer saved with the checkpoint becomes the LLM's; the image processor settings
    become ``model.eval_processor``, an ``image_eval`` processor node
    (``{name, image_size, mean, std}``).
    """
    from transformers import Blip2ForConditionalGeneration

    from ..models.base import DTYPES

    source = str(source)
    try:
        blip2, info = Blip2ForConditionalGeneration.from_pretrained(source, dtype=DTYPES[precision],
                                                                     output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load transformers BLIP-2 {source!r}: {' '.join(str(exc).split())[:300]}") from None
    if info["missing_keys"]:  # transformers would fill them with random values
        missing = sorted(info["missing_keys"])
        raise UserError(f"{source!r} is not a complete Blip2ForConditionalGeneration checkpoint: it lacks "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    tokenizer = source if _find_file(source, "tokenizer_config.json") else None
    model = from_transformers(blip2, tokenizer, precision)
    model.eval_processor = processor_settings(source, model.encoder.image_size[0])
    return model


# -- vlreg -> transformers ----------------------------------------------------------------------------
def vision_config(encoder: Any) -> Any:
    """The ``Blip2VisionConfig`` of a vlreg timm-ViT encoder; a ConfigError when transformers cannot hold it."""
    from timm.layers import QuickGELU
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn
    from transformers import Blip2VisionConfig

    vit = getattr(encoder, "vit", None)

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"encoder {type(encoder).__name__} cannot become transformers' Blip2VisionModel: {why}")

    if not isinstance(vit, VisionTransformer):
        raise refuse("it is not a timm VisionTransformer")
    if vit.cls_token is None or vit.num_reg_tokens or vit.no_embed_class or vit.pos_embed is None:
        raise refuse("it needs one class token, no registers and a learned position embedding that covers it")
    if not isinstance(vit.norm_pre, nn.Identity):
        raise refuse("it has a LayerNorm before its blocks (CLIP's ln_pre)")
    norms = [m for m in (encoder.post_norm, vit.norm) if isinstance(m, nn.LayerNorm)]
    if len(norms) != 1:
        raise refuse(f"it needs exactly one LayerNorm after its blocks, it has {len(norms)}")
    block = vit.blocks[0]
    if not isinstance(block.ls1, nn.Identity) or not isinstance(block.attn.q_norm, nn.Identity):
        raise refuse("its blocks have layer scale or query/key norms")
    acts = {nn.GELU: "gelu", QuickGELU: "quick_gelu"}
    act = type(block.mlp.act)
    if act not in acts or getattr(block.mlp.act, "approximate", "none") != "none":
        raise refuse(f"its activation {act.__name__} has no transformers name here")
    eps = {m.eps for m in encoder.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) != 1:
        raise refuse(f"its LayerNorms use different epsilons {sorted(eps)}")
    height, width = vit.patch_embed.img_size
    patch = vit.patch_embed.patch_size
    if height != width or patch[0] != patch[1]:
        raise refuse("its images or patches are not square")
    return Blip2VisionConfig(
        hidden_size=vit.embed_dim, intermediate_size=block.mlp.fc1.out_features, num_hidden_layers=len(vit.blocks),
        num_attention_heads=block.attn.num_heads, image_size=height, patch_size=patch[0], hidden_act=acts[act],
        layer_norm_eps=eps.pop(), qkv_bias=block.attn.qkv.bias is not None)


def qformer_config(bridge: Any) -> Any:
    """The ``Blip2QFormerConfig`` of a vlreg Q-Former (which needs its projection to the LLM)."""
    from transformers import Blip2QFormerConfig

    from ..models.bridges.qformer import QFormer

    if not isinstance(bridge, QFormer) or bridge.llm_proj is None:
        raise ConfigError(f"bridge {type(bridge).__name__} cannot become transformers' Q-Former: it needs a "
                          "qformer with llm_width (its projection to the LLM)")
    crossing = [i for i, layer in enumerate(bridge.layers) if layer.cross_attn is not None]
    every = crossing[1] - crossing[0] if len(crossing) > 1 else len(bridge.layers)
    if crossing[0] != 0 or crossing != list(range(0, len(bridge.layers), every)):
        raise ConfigError(f"Q-Former cross-attention layers {crossing} are not every k-th from layer 0")
    first = bridge.layers[0]
    return Blip2QFormerConfig(
        hidden_size=bridge.hidden_size, num_hidden_layers=len(bridge.layers),
        num_attention_heads=first.self_attn.num_heads, intermediate_size=first.query_ffn.fc1.out_features,
        hidden_dropout_prob=first.self_attn.dropout, attention_probs_dropout_prob=first.self_attn.dropout,
        layer_norm_eps=bridge.embed_norm.eps, cross_attention_frequency=every, encoder_hidden_size=bridge.vision_width)


def transformers_config(model: Any, image_token_index: int) -> Any:
    """The ``Blip2Config`` of a vlreg encoder + Q-Former + LLM model."""
    from transformers import Blip2Config

    _check_parts(model)
    text = copy.deepcopy(model.llm.model.config)
    _check_projection_width(text, model.llm.width)
    return Blip2Config(vision_config=vision_config(model.encoder), qformer_config=qformer_config(model.bridge),
                       text_config=text, num_query_tokens=model.bridge.num_queries,
                       image_token_index=image_token_index)


def _check_parts(model: Any) -> None:
    missing = [part for part in ("encoder", "bridge", "llm") if getattr(model, part) is None]
    if missing:
        raise ConfigError(f"transformers' Blip2ForConditionalGeneration needs an encoder, a bridge and an llm; "
                          f"this model has no {' and no '.join(missing)}")


def image_tokenizer(llm: Any) -> Any:
    """A copy of the LLM's tokenizer with BLIP-2's ``<image>`` token, whose id must be a row of the embeddings."""
    from transformers import AddedToken

    tokenizer = copy.deepcopy(llm.tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, normalized=False, special=True)], special_tokens=True)
    index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vocab = llm.model.get_input_embeddings().num_embeddings
    if index >= vocab:
        raise ConfigError(f"the tokenizer's {IMAGE_TOKEN} token gets id {index}, but the LLM has {vocab} embeddings; "
                          "transformers' BLIP-2 embeds it before writing the queries over it")
    tokenizer.image_token = IMAGE_TOKEN
    return tokenizer


def to_transformers(model: Any, image_token_index: Optional[int] = None) -> Any:
    """The ``Blip2ForConditionalGeneration`` (eval mode) of a vlreg model, sharing its tensors where dtypes agree.

    ``image_token_index`` defaults to the id of ``<image>`` in the LLM's tokenizer (added to a
    copy when missing). The encoder must be a timm VisionTransformer without a pre-norm (EVA
    ViT-g or similar; CLIP ViT-L has none in transformers), the bridge a Q-Former with its
    LLM projection; a stage-1 text branch and a prompter are left out. The result is fp32.
    """
    from transformers import Blip2ForConditionalGeneration

    from ..models.llms.common import untie_output_embeddings

    _check_parts(model)
    if image_token_index is None:
        image_token_index = image_tokenizer(model.llm).convert_tokens_to_ids(IMAGE_TOKEN)
    config = transformers_config(model, image_token_index)
    with parameters_on_meta():
        blip2 = Blip2ForConditionalGeneration(config)
    if not _output_head_tied(model.llm.model):
        untie_output_embeddings(blip2.language_model)
    assign_weights(blip2, state_to_transformers(model.state_dict()), "vlreg model")
    return blip2.eval()


def save_transformers(model: Any, directory: str | os.PathLike) -> Path:
    """Save a vlreg model as a transformers BLIP-2 directory: weights, config, tokenizer and processor.

    ``Blip2Processor.from_pretrained(directory)`` and ``Blip2ForConditionalGeneration.from_pretrained(directory)``
    read it; so does :func:`vlreg.load_model`. The image processor takes ``model.eval_processor``
    when the model has one (a model loaded by :func:`vlreg.load_model`), else the encoder's
    image size and CLIP's normalisation.
    """
    from transformers import BlipImageProcessor, Blip2Processor

    directory = Path(directory)
    _check_parts(model)
    tokenizer = image_tokenizer(model.llm)
    blip2 = to_transformers(model, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    blip2.save_pretrained(directory)
    settings = getattr(model, "eval_processor", None) or default_processor(model.encoder.image_size[0])
    size = settings["image_size"]
    images = BlipImageProcessor(size={"height": size, "width": size}, image_mean=list(settings["mean"]),
                                image_std=list(settings["std"]))
    Blip2Processor(images, tokenizer, num_query_tokens=model.bridge.num_queries).save_pretrained(directory)
    return directory
