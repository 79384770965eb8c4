"""One BLIP-2 built twice: a vlreg model and transformers' ``Blip2ForConditionalGeneration`` with its weights.

The vlreg model is built from config nodes (:data:`SCALES`); :func:`vlreg.interop.to_transformers`
gives the transformers model, which is then copied so that the two train independently from
the same weights. Inputs for transformers are written by hand the way its processor lays them
out (``num_query_tokens`` image tokens, then the tokenizer's ``</s> caption``), not with
vlreg's code, so that equal losses and equal tokens check vlreg against an independent
implementation.

Scales (stage 2, decoder-only OPT):

- ``tiny``: ``configs/models/blip2_tiny_opt.yaml``: a 2-block vit_tiny at 64 px (17 tokens, 192 wide),
  a Q-Former of 2 layers x 256 with 32 queries, a 2 x 64 OPT with a 1,000-token vocabulary.
- ``small``: a ViT of 12 layers x 384 (vit_small, patch 16) at 224 px (197 tokens), a Q-Former of
  6 layers x 768 with 32 queries (cross-attention every 2nd layer), a 12 x 768 OPT (OPT-125M's
  shape) with a 50,272-token vocabulary.

Both at batch 8, captions from the synthetic world (targets cut to 32 tokens), Q-Former dropout
0 (so that the two frameworks' losses can be compared while they train).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import vlreg  # noqa: F401  (before transformers: the torchvision guard)

BATCH = 8
SMALL_OPT = dict(model_type="opt", vocab_size=50272, hidden_size=768, word_embed_proj_dim=768, ffn_dim=3072,
                 num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=2048, dropout=0.0,
                 attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)


def model_node(scale: str, tokenizer: str) -> dict[str, Any]:
    """The vlreg model node of a scale (fp32), with the LLM tokenizer directory."""
    from vlreg.config import load_config, to_plain

    if scale == "tiny":
        node = to_plain(load_config("models/blip2_tiny_opt.yaml"))
        node["bridge"]["dropout"] = 0.0
        node["llm"]["tokenizer"] = tokenizer
    elif scale == "small":
        node = {
            "encoder": {"name": "timm_vit", "model": "vit_small_patch16_224", "img_size": 224},
            "bridge": {"name": "qformer", "num_queries": 32, "num_layers": 6, "hidden_size": 768, "num_heads": 12,
                       "intermediate_size": 3072, "cross_attention_every": 2, "text_branch": False, "dropout": 0.0},
            "llm": {"name": "causal_lm", "tokenizer": tokenizer, "max_text_length": 32, "config": dict(SMALL_OPT)},
            "losses": {"lm": 1.0},
        }
    else:
        raise ValueError(f"unknown scale {scale!r}: tiny or small")
    return node


def world_captions(world: Path, count: int) -> list[str]:
    """The first ``count`` training captions of a synthetic world's COCO split."""
    entries = json.loads((world / "coco" / "annotations" / "coco_karpathy_train.json").read_text())
    return [entry["caption"] for entry in entries[:count]]


def opt_tokenizer(work: Path, world: Path) -> str:
    """An OPT-style byte-level BPE tokenizer trained on the world's text (at most 900 tokens), saved once."""
    from vlreg.models.tokenizers import save_tokenizer, train_tokenizer

    directory = work / "tokenizer_opt"
    if not (directory / "tokenizer_config.json").exists():
        lines = (world / "text" / "corpus.txt").read_text().splitlines()
        save_tokenizer(train_tokenizer(lines + world_captions(world, 10_000), "opt", vocab_size=900), directory)
    return str(directory)


@dataclass
class Pair:
    """The two models and one batch in each framework's terms."""

    scale: str
    vlreg: Any
    transformers: Any
    images: torch.Tensor
    texts: list[str]
    input_ids: torch.Tensor  # [B, Q + 1 + T]: image tokens, </s>, caption, </s>, padding
    attention_mask: torch.Tensor
    labels: torch.Tensor  # -100 on image tokens, </s> (bos) and padding

    @property
    def image_token(self) -> int:
        return self.transformers.config.image_token_index


def build_pair(scale: str, work: Path, world: Path, seed: int = 0) -> Pair:
    """Both models with equal weights (seeded), frozen parts frozen in both, and one batch."""
    from vlreg.interop import to_transformers
    from vlreg.models.assembly import VisionLanguageModel

    tokenizer = opt_tokenizer(work, world)
    torch.manual_seed(seed)
    model = VisionLanguageModel.from_config(model_node(scale, tokenizer))
    hf = copy.deepcopy(to_transformers(model))  # a copy: the two must not share (and co-train) tensors
    hf.vision_model.requires_grad_(False)
    hf.language_model.requires_grad_(False)
    images = torch.randn(BATCH, 3, *model.encoder.image_size, generator=torch.Generator().manual_seed(seed))
    texts = world_captions(world, BATCH * 5)[::5]  # one caption per picture
    ids, mask, labels = transformers_inputs(model.llm.tokenizer, texts, hf.config.image_token_index,
                                            model.bridge.num_queries, model.llm.max_text_length)
    return Pair(scale, model, hf, images, texts, ids, mask, labels)


def frozen_in(model: Any, precision: str) -> Any:
    """A copy of a vlreg model with its frozen encoder and LLM in ``precision`` (the bridge stays fp32)."""
    model = copy.deepcopy(model)
    for part in (model.encoder, model.llm):
        part.configure_frozen(True, precision)
    return model


def transformers_inputs(tokenizer: Any, texts: list[str], image_token: int, num_queries: int,
                        max_text_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a transformers user feeds ``Blip2ForConditionalGeneration`` to train captioning.

    Each row: ``num_queries`` image tokens, the tokenizer's ``</s> caption`` (caption cut to
    ``max_text_length - 1`` tokens), ``</s>``; right-padded. Labels score the caption and
    the final ``</s>``.
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
