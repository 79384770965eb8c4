"""One BLIP-2 built twice: a vlreg model and transformers' ``Blip2ForConditionalGeneration`` with its weights.

The vlreg model is built from config nodes (:func:`model_node`) directly on the benchmark's device;
:func:`vlreg.interop.to_transformers` gives the transformers model, whose frozen parts are then
cast to the vlreg model's precision and which is moved to the device as a separate copy, so that
the two train independently from the same weights. Inputs for transformers are written by hand
the way its processor lays them out (``num_query_tokens`` image tokens, then the tokenizer's
``</s> caption``), not with vlreg's code, so that equal losses and equal tokens check vlreg
against an independent implementation.

Scales (stage 2, decoder-only OPT; :data:`BATCH` images with one world caption each, targets
cut to 32 tokens, Q-Former dropout 0 so that the two frameworks' losses can be compared while
they train):

- ``tiny``: ``configs/models/blip2_tiny_opt.yaml``: a 2-block vit_tiny at 64 px (17 tokens, 192 wide),
  a Q-Former of 2 layers x 256 with 32 queries, a 2 x 64 OPT with a 1,000-token vocabulary;
  batch 8, fp32.
- ``small``: a ViT of 12 layers x 384 (vit_small, patch 16) at 224 px (197 tokens), a Q-Former of
  6 layers x 768 with 32 queries (cross-attention every 2nd layer), a 12 x 768 OPT (OPT-125M's
  shape) with a 50,272-token vocabulary; batch 8, fp32.
- ``paper``: BLIP-2 OPT-2.7B as in the paper, random weights: EVA ViT-g at 224 px (39 blocks x 1408,
  257 tokens), the Q-Former of 12 layers x 768 with 32 queries (cross-attention every 2nd layer),
  OPT-2.7B (``configs/llms/opt-2.7b.yaml``'s architecture); 3,744,679,936 parameters, of which
  107,130,880 train; batch 64, the frozen parts in the device's ``auto`` precision (bf16 on a GPU
  that computes it) and the step under autocast in it, as vlreg's runner trains.

The stage-1 models (:func:`stage1_node`) are the same encoders with the Q-Former's text branch and
ITC, ITM and ITG, and no LLM; at paper scale the Q-Former of ``configs/bridges/qformer.yaml``.
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass
from typing import Any

import torch

import vlreg  # noqa: F401  (before transformers: the torchvision guard)

from .texts import Texts

SCALES = ("tiny", "small", "paper")
BATCH = {"tiny": 8, "small": 8, "paper": 64}
PRECISION = {"tiny": "fp32", "small": "fp32", "paper": "auto"}
"""The precision each scale's frozen parts and autocast are asked for (resolved by the device)."""
SMALL_OPT = dict(model_type="opt", vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, ffn_dim=3072,
                 num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=2048, dropout=0.0,
                 attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)
SMALL_VIT = {"name": "timm_vit", "model": "vit_small_patch16_224", "img_size": 224}
SMALL_QFORMER = {"name": "qformer", "num_queries": 32, "num_layers": 6, "hidden_size": 768, "num_heads": 12,
                 "intermediate_size": 3072, "cross_attention_every": 2}


def _config(name: str) -> dict[str, Any]:
    from vlreg.config import load_config, to_plain

    return to_plain(load_config(name))


def model_node(scale: str, tokenizer: str, precision: str) -> dict[str, Any]:
    """The vlreg stage-2 model node of a scale, frozen parts in ``precision``, with the LLM tokenizer directory."""
    if scale == "tiny":
        node = _config("models/blip2_tiny_opt.yaml")
        node["llm"]["tokenizer"] = tokenizer
    elif scale == "small":
        node = {"encoder": dict(SMALL_VIT), "bridge": {**SMALL_QFORMER, "text_branch": False},
                "llm": {"name": "causal_lm", "tokenizer": tokenizer, "max_text_length": 32, "config": dict(SMALL_OPT)},
                "losses": [{"name": "lm"}]}
    elif scale == "paper":
        llm = {key: value for key, value in _config("llms/opt-2.7b.yaml").items() if key != "path"}
        node = {"encoder": {"name": "eva_vit_g", "pretrained": False, "img_size": 224},
                "bridge": _config("bridges/qformer_stage2.yaml"), "llm": {**llm, "tokenizer": tokenizer},
                "losses": [{"name": "lm"}]}
    else:
        raise ValueError(f"unknown scale {scale!r}: one of {', '.join(SCALES)}")
    node["bridge"]["dropout"] = 0.0
    node["encoder"]["precision"] = node["llm"]["precision"] = precision
    return node


def stage1_node(scale: str, tokenizer: str, precision: str) -> dict[str, Any]:
    """The vlreg stage-1 model node of a scale (encoder, Q-Former with its text branch; ITC, ITM, ITG),
    with the Q-Former's BERT-style tokenizer directory."""
    node = model_node(scale, "unused", precision)
    bridge = (_config("bridges/qformer.yaml") if scale == "paper" else
              _config("bridges/qformer_tiny.yaml") if scale == "tiny" else dict(SMALL_QFORMER))
    bridge.update(text_branch=True, tokenizer=tokenizer, init_from=None)
    return {"encoder": node["encoder"], "bridge": bridge, "losses": [{"name": "blip2_stage1"}]}


def build_model(node: dict[str, Any], device: str, seed: int = 0) -> Any:
    """A vlreg model from ``node``, seeded, its parameters made on ``device`` (no CPU copy of a large model)."""
    from vlreg.models.assembly import VisionLanguageModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = VisionLanguageModel.from_config(node)
    return model.to(device)


@dataclass
class Pair:
    """The two models and one batch in each framework's terms, on ``device``; ``precision``: the resolved
    precision of the frozen parts, and of the autocast the steps run under."""

    scale: str
    device: str
    precision: str
    vlreg: Any
    transformers: Any
    images: torch.Tensor  # [B, 3, H, W]
    texts: list[str]
    input_ids: torch.Tensor  # [B, Q + 1 + T]: image tokens, </s>, caption, </s>, padding
    attention_mask: torch.Tensor  # [B, Q + 1 + T]
    labels: torch.Tensor  # [B, Q + 1 + T]: -100 on image tokens, </s> (bos) and padding

    @property
    def image_token(self) -> int:
        return self.transformers.config.image_token_index

    def autocast(self):
        """The autocast of the run's precision on the device (none for fp32), as vlreg's runner uses."""
        from vlreg.runner.context import autocast

        return autocast(torch.device(self.device), self.precision)


def resolved(scale: str, device: str) -> str:
    """The precision a scale runs in on ``device`` (:data:`PRECISION`, ``auto`` resolved by the device)."""
    from vlreg.device import resolve_precision

    return resolve_precision(PRECISION[scale], torch.device(device)).precision


def images(scale: str, size: tuple[int, int], device: str, seed: int = 0) -> torch.Tensor:
    """A seeded batch of random pictures ``[BATCH, 3, H, W]`` on ``device``."""
    return torch.randn(BATCH[scale], 3, *size, generator=torch.Generator().manual_seed(seed)).to(device)


def captions(scale: str, texts: Texts) -> list[str]:
    """A batch's captions: every 5th first (the world writes 5 per picture), then the others, as many as needed."""
    count = len(texts.captions)
    order = [*range(0, count, 5), *(i for i in range(count) if i % 5)]
    return [texts.captions[i] for i in order[:BATCH[scale]]]


def build_pair(scale: str, texts: Texts, device: str = "cpu", seed: int = 0) -> Pair:
    """Both models with equal weights (seeded), frozen parts frozen in both, and one batch, on ``device``."""
    precision = resolved(scale, device)
    model = build_model(model_node(scale, texts.opt_tokenizer, precision), device, seed)
    hf = _transformers_twin(model, device)
    batch_texts = captions(scale, texts)
    ids, mask, labels = transformers_inputs(model.llm.tokenizer, batch_texts, hf.config.image_token_index,
                                            model.bridge.num_queries, model.llm.max_text_length)
    return Pair(scale, device, precision, model, hf, images(scale, model.encoder.image_size, device, seed),
                batch_texts, ids.to(device), mask.to(device), labels.to(device))


def _transformers_twin(model: Any, device: str) -> Any:
    """``to_transformers(model)`` with its frozen parts in the model's dtypes, on ``device``, sharing no tensor."""
    from vlreg.interop import to_transformers
    from vlreg.models.base import DTYPES

    hf = to_transformers(model)  # fp32, on the CPU, sharing the tensors whose dtype and device agree
    hf.vision_model.to(DTYPES[model.encoder.precision]).requires_grad_(False)
    hf.language_model.to(DTYPES[model.llm.precision]).requires_grad_(False)
    hf = hf.to(device)
    ours = {p.data_ptr() for p in model.parameters()}
    if any(p.data_ptr() in ours for p in hf.parameters()):
        hf = copy.deepcopy(hf)  # the two must not share (and co-train) tensors
    return hf


def twin(model: Any) -> Any:
    """A copy of a vlreg model whose trainable parts are its own and whose frozen parts are shared (no memory)."""
    memo = {id(part): part for part in (model.encoder, model.llm) if part is not None and part.frozen}
    return copy.deepcopy(model, memo)


def frozen_in(model: Any, precision: str) -> Any:
    """A copy of a vlreg model with its frozen encoder and LLM in ``precision`` (the bridge stays fp32)."""
    model = copy.deepcopy(model)
    for part in (model.encoder, model.llm):
        part.configure_frozen(True, precision)
    return model


def release(device: str) -> None:
    """Return freed memory (models of a finished scale, dropped by the caller) to the device."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def transformers_inputs(tokenizer: Any, texts: list[str], image_token: int, num_queries: int,
                        max_text_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a transformers user feeds ``Blip2ForConditionalGeneration`` to train captioning.

    Each row: ``num_queries`` image tokens, the tokenizer's ``</s> caption`` (caption cut to
    ``max_text_length - 1`` tokens), ``</s>``; right-padded. Returns ids, mask and labels, each
    ``[B, num_queries + 1 + T]`` (long); labels score the caption and the final ``</s>``.
    """
    rows, scored = [], []
    for text in texts:
        bos, *caption = tokenizer(text)["input_ids"]
        target = caption[:max_text_length - 1] + [tokenizer.eos_token_id]
        rows.append([image_token] * num_queries + [bos] + target)
        scored.append([-100] * (num_queries + 1) + target)
    length = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([row + [pad] * (length - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows])
    labels = torch.tensor([row + [-100] * (length - len(row)) for row in scored])
    return ids, mask, labels
