"""P-Former: a sentence -> ``Q`` soft prompts from which a frozen LLM reconstructs it, learned from text alone.

Jian, Gao and Vosoughi, "Bootstrapping Vision-Language Learning with Decoupled Language
Pre-training", NeurIPS 2023::

    text [B, T] ──BERT-style encoder (Q-Former layers: no queries, no cross-attention)──► [CLS] [B, H]
    [CLS] ──expand: Linear(H -> Q*H)──► [B, Q, H] ──prompt_mlp: Linear(H -> H), tanh, Linear(H -> Dllm)──► Prompts [B, Q, Dllm]
    [CLS] ──contrast_proj: Linear(H -> E)──► contrastive embedding [B, E]          (stage 0 only)

Stage 0 (the objective ``pformer_stage0``, :mod:`vlreg.objectives.pformer_stage0`) trains it on
sentences with a frozen LLM, running its contrastive branch (:meth:`PFormer.contrastive_inputs`,
:meth:`PFormer.contrastive_loss`); in stages 1 and 2 it is frozen and its prompts for a caption
are the target that a bridge's prompts for the paired image or video are pulled towards (the
objective ``pformer_alignment``). The number of prompts ``Q`` is independent of the text length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...io.fingerprints import sha256_file, sha256_files
from ...registry import register
from ..base import Precision, Prompter, Prompts, is_dry_build
from ..bridges.qformer import TEMPERATURE_RANGE, QFormer, _init_bert_style
from ..bridges.qformer_layers import QFormerLayer
from ..losses import itc_loss

ContrastiveViews = Literal["two_masks", "dropout", "single"]
CHECKPOINT_PREFIX = "prompter."
"""The P-Former's module path in an assembled model: the prefix of its keys in a run's checkpoint."""


@register("prompter", "pformer")
class PFormer(Prompter):
    """P-Former: a BERT-style sentence encoder whose [CLS] state becomes ``Q`` prompts in an LLM's embedding space.

    Args:
        num_prompts: ``Q``, the number of prompts (the paper's 32); any value, whatever the
            text length.
        num_layers, hidden_size, num_heads, intermediate_size: the BERT-style encoder
            (bert-base: 12, 768, 12, 3072). Its layers are the Q-Former's, without queries
            or cross-attention: each is a post-norm BERT layer.
        llm_width: width of the prompts (the LLM's input embeddings); the assembled model fills
            it from its LLM. Stage 1 has no LLM: set it there.
        dropout: dropout of the embeddings, attention probabilities and residual branches.
        layer_norm_eps: epsilon of every LayerNorm.
        tokenizer: BERT-style tokenizer (hub name or directory) with [CLS], [PAD] and, for
            ``two_masks`` views, [MASK].
        vocab_size: used only in dry builds, where no tokenizer is loaded.
        max_text_length: texts are truncated to this many tokens ([CLS] and [SEP] included).
        max_position_embeddings: size of the position table.
        embed_dim: width of the contrastive embedding (the paper's 256).
        contrastive_views: what the contrastive loss contrasts (temperature learned, label
            smoothing 0.1, negatives from every rank):

            - ``dropout`` (default): two passes of each sentence with independent dropout
              (SimCSE); the positive of a view is the other view of the same sentence. The
              [CLS] embedding must be stable under noise in every layer. Needs ``dropout > 0``.
            - ``two_masks``: two views of each sentence, each with an independent
              ``mask_ratio`` of its tokens replaced by [MASK]: the embedding must not depend
              on which words are missing. A strong augmentation for short sentences: on the
              tests' 6-8 word captions it costs reconstruction (held-out token accuracy 0.76
              against 0.95 with ``dropout``, same budget).
            - ``single``: the original code's variant: one view, each sentence its own
              positive. Its positive similarity is a vector's cosine with itself, always 1
              and always the largest in its row, so that term is constant and nearly
              trivially satisfied: the loss can only push different sentences apart (a
              uniformity term) and teaches no invariance.
        mask_ratio: the share of (non-special) tokens masked in each ``two_masks`` view.
        init_from: a BERT checkpoint (hub name or directory) for the encoder; BERT's
            token-type embedding is folded into the position table. Ignored with ``checkpoint``.
        checkpoint: the result of stage 0: a safetensors file of the P-Former's weights (its
            own names, or ``prompter.``-prefixed ones), or a vlreg run checkpoint (a
            ``step_*`` directory, its ``checkpoints/`` folder or the run directory: the
            newest checkpoint), whose ``prompter.`` weights are loaded. A P-Former loaded so
            is referenced by source and checksum in later checkpoints
            (:meth:`weight_source`), never copied into them.
        frozen: stage 0 trains it (false); stages 1 and 2 use it as a frozen alignment target (true).
        precision: dtype of the frozen weights (``auto``: by the device, see :mod:`vlreg.device`).
    """

    def __init__(
        self,
        num_prompts: int = 32,
        num_layers: int = 12,
        hidden_size: int = 768,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        llm_width: Optional[int] = None,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        tokenizer: Optional[str] = None,
        vocab_size: int = 30522,
        max_text_length: int = 32,
        max_position_embeddings: int = 512,
        embed_dim: int = 256,
        contrastive_views: ContrastiveViews = "dropout",
        mask_ratio: float = 0.25,
        init_from: Optional[str] = None,
        checkpoint: Optional[str] = None,
        frozen: bool = False,
        precision: Precision = "auto",
    ):
        super().__init__()
        _check_settings(num_prompts, num_layers, hidden_size, num_heads, llm_width, max_text_length,
                        max_position_embeddings, contrastive_views, mask_ratio)
        self.num_prompts, self.llm_width, self.hidden_size = num_prompts, llm_width, hidden_size
        self.max_text_length, self.contrastive_views, self.mask_ratio = max_text_length, contrastive_views, mask_ratio
        self.dropout = dropout
        self.tokenizer = None
        if not is_dry_build():
            self.tokenizer = _bert_tokenizer(tokenizer, need_mask=contrastive_views == "two_masks")
            vocab_size = len(self.tokenizer)

        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.embed_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.embed_dropout = nn.Dropout(dropout)
        # every position takes the layer's query branch: self-attention then one feed-forward
        self.layers = nn.ModuleList(
            QFormerLayer(hidden_size, num_heads, intermediate_size, hidden_size, cross_attention=False,
                         text_branch=False, dropout=dropout, eps=layer_norm_eps)
            for _ in range(num_layers))
        self.expand = nn.Linear(hidden_size, num_prompts * hidden_size)
        self.prompt_mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh(),
                                        nn.Linear(hidden_size, llm_width))
        self.contrast_proj = nn.Linear(hidden_size, embed_dim)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.apply(_init_bert_style)

        self._source: Optional[dict[str, str]] = None
        if not is_dry_build():
            if checkpoint is not None:
                self._source = self.load_checkpoint(checkpoint)
            elif init_from is not None:
                self.load_bert(init_from)
        self.configure_frozen(frozen, precision)

    # -- weights ------------------------------------------------------------------
    def weight_source(self) -> Optional[dict[str, str]]:
        """``{"source": path, "sha256": checksum}`` when loaded from ``checkpoint``, else None (see vlreg.io.sources)."""
        return dict(self._source) if self._source is not None else None

    def load_bert(self, source: str) -> list[str]:
        """Initialise the encoder from a BERT checkpoint (hub name or directory); returns the names it set.

        This is the Q-Former's loader (the encoder has the Q-Former's parameter names, and the
        loader needs nothing but ``state_dict()``): a larger vocabulary or position table keeps
        its extra rows, a smaller one takes the checkpoint's first rows, another width is an error.
        """
        try:
            return QFormer.load_bert(self, source)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("qformer:", "pformer:", 1)) from None

    def load_checkpoint(self, source: str) -> dict[str, str]:
        """Load every weight from a stage-0 result (see ``checkpoint``); returns its source and sha256."""
        from safetensors.torch import load_file

        files, origin, from_run = _checkpoint_files(source)
        tensors: dict[str, Tensor] = {}
        for path in files:
            tensors.update(load_file(path))
        prefixed = {k[len(CHECKPOINT_PREFIX):]: v for k, v in tensors.items() if k.startswith(CHECKPOINT_PREFIX)}
        if from_run and not prefixed:
            raise ConfigError(f"pformer: checkpoint {origin} holds no P-Former weights (no '{CHECKPOINT_PREFIX}' "
                              "keys); give the checkpoint of a stage that trained the P-Former")
        weights = prefixed or tensors
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        misshapen = [f"{k} {tuple(t.shape)} vs {tuple(weights[k].shape)}" for k, t in own.items()
                     if k in weights and weights[k].shape != t.shape]
        if missing or unexpected or misshapen:
            raise ConfigError(f"pformer: checkpoint {origin} does not match this P-Former (its sizes must be those "
                              f"of stage 0): missing {_listing(missing)}; unexpected {_listing(unexpected)}; "
                              f"other shapes (here vs checkpoint) {_listing(misshapen)}")
        self.load_state_dict(weights)
        digest = sha256_file(files[0]) if len(files) == 1 else sha256_files(files)
        return {"source": origin, "sha256": digest}

    # -- encoder ------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``[CLS] text [SEP]`` ids ``[B, T]`` long and mask ``[B, T]`` bool, on the module's device."""
        if self.tokenizer is None:
            raise ValueError("pformer: tokenize needs a tokenizer, and a dry build (meta device) loads none")
        batch = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_text_length,
                               return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device).bool()

    def encode(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """Hidden states ``[B, T, H]`` of token ids ``[B, T]`` with padding mask ``[B, T]`` bool (True: real)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed_dropout(self.embed_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions)))
        attend = mask.bool()[:, None, None, :]
        for layer in self.layers:
            x, _ = layer(x, x.shape[1], attend)
        return x

    def prompts_from(self, sentence_states: Tensor) -> Tensor:
        """[CLS] states ``[B, H]`` -> prompt vectors ``[B, Q, llm_width]``."""
        expanded = self.expand(sentence_states).unflatten(-1, (self.num_prompts, self.hidden_size))
        return self.prompt_mlp(expanded)

    def forward(self, texts: Sequence[str]) -> Prompts:
        """``B`` sentences -> ``Prompts`` ``[B, Q, llm_width]`` (all positions real; the weights' dtype)."""
        input_ids, mask = self.tokenize(texts)
        return Prompts(self.prompts_from(self.encode(input_ids, mask)[:, 0]))

    # -- the contrastive branch (stage 0) -------------------------------------------------
    def contrastive_inputs(self, input_ids: Tensor, mask: Tensor) -> list[Tensor]:
        """The extra encoder inputs of the contrastive views, each ``[B, T]``: none for ``single``, the
        sentence again for ``dropout``, two independently masked copies for ``two_masks``."""
        if self.contrastive_views == "single":
            return []
        if self.contrastive_views == "dropout":  # pformer_stage0 checks that dropout > 0
            return [input_ids]
        return [self.mask_tokens(input_ids, mask), self.mask_tokens(input_ids, mask)]

    def mask_tokens(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """``input_ids`` ``[B, T]`` with each real, non-special token replaced by [MASK] with probability ``mask_ratio``."""
        special = torch.tensor(self.tokenizer.all_special_ids, device=input_ids.device)
        maskable = mask.bool() & ~torch.isin(input_ids, special)
        chosen = (torch.rand(input_ids.shape, device=input_ids.device) < self.mask_ratio) & maskable
        return input_ids.masked_fill(chosen, self.tokenizer.mask_token_id)

    def contrastive_loss(self, first: Tensor, second: Tensor) -> Tensor:
        """Symmetric InfoNCE between two views' [CLS] states ``[B, H]``; the temperature is projected into
        [0.001, 0.5] in place first (call backward before the next call)."""
        with torch.no_grad():
            self.temp.clamp_(*TEMPERATURE_RANGE)
        first = F.normalize(self.contrast_proj(first), dim=-1)
        second = F.normalize(self.contrast_proj(second), dim=-1)
        loss, _, _ = itc_loss(first[:, None], second, self.temp, label_smoothing=0.1)
        return loss


def _check_settings(num_prompts: int, num_layers: int, hidden_size: int, num_heads: int, llm_width: Optional[int],
                    max_text_length: int, max_position_embeddings: int, views: str, mask_ratio: float) -> None:
    if llm_width is None:
        raise ConfigError("pformer: llm_width is unknown; set it (stage 1 has no LLM), or build the P-Former in a "
                          "model whose llm fills it")
    if min(num_prompts, num_layers, llm_width) < 1:
        raise ConfigError("pformer: num_prompts, num_layers and llm_width must be at least 1")
    if hidden_size % num_heads:
        raise ConfigError(f"pformer: hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
    if max_text_length > max_position_embeddings:
        raise ConfigError(f"pformer: max_text_length {max_text_length} exceeds max_position_embeddings "
                          f"{max_position_embeddings}")
    if views == "two_masks" and not 0 < mask_ratio < 1:
        raise ConfigError(f"pformer: mask_ratio must lie in (0, 1), got {mask_ratio}")


def _bert_tokenizer(source: Optional[str], need_mask: bool):
    from ..tokenizers import load_tokenizer

    if source is None:
        raise ConfigError("pformer: set tokenizer: (a BERT-style tokenizer: hub name such as bert-base-uncased, "
                          "or a local directory)")
    tokenizer = load_tokenizer(source)
    needed = ["cls_token", "pad_token"] + ["mask_token"] * need_mask
    absent = [name for name in needed if getattr(tokenizer, name) is None]
    if absent:
        raise ConfigError(f"pformer: tokenizer {source!r} is not BERT-style: it has no {', '.join(absent)}")
    return tokenizer


def _checkpoint_files(source: str) -> tuple[list[Path], str, bool]:
    """The safetensors files of a stage-0 result, its resolved location (the recorded source), and
    whether it is a run checkpoint (whose keys carry the module path)."""
    from ...io.checkpoints import FROZEN_FILE, TRAINABLE_FILE, resolve_checkpoint

    path = Path(source)
    if path.is_file():
        return [path], str(path.resolve()), False
    if not path.exists():
        raise ConfigError(f"pformer: checkpoint {source!r} does not exist")
    directory = resolve_checkpoint(path)
    files = [directory / TRAINABLE_FILE] + [directory / FROZEN_FILE] * (directory / FROZEN_FILE).is_file()
    return files, str(directory.resolve()), True


def _listing(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
