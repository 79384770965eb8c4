"""BLIP-2's Querying Transformer: learned queries that read visual tokens, and its stage-1 heads.

::

    Features.tokens [B, N, Dv] ──cross-attention (layers 0, k, 2k, ...)──┐
    query_tokens [1, Q, H] ──► Q-Former layers ──► query states [B, Q, H] ──► llm_proj ──► Prompts [B, Q, Dllm]
    text [B, T] (stage 1) ──┘ (shared self-attention, separate FFNs)

Stage 1 (Li et al., 2023) trains the Q-Former's text branch with ITC, ITM and ITG, each with its
own self-attention mask over ``[queries; text]`` (:func:`joint_attention_mask`): the objective
``blip2_stage1`` (:mod:`vlreg.objectives.blip2_stage1`) runs the heads defined here
(``vision_proj``, ``text_proj``, ``itm_head``, ``lm_head``, ``temp``) through :meth:`QFormer.encode`,
:meth:`~QFormer.text_embeds`, :meth:`~QFormer.itm_logits` and :meth:`~QFormer.itg_logits`; retrieval
runs them too. ``text_branch: false`` builds the stage-2 Q-Former, without text embeddings, text
feed-forwards or stage-1 heads.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, unpickling_failure
from ...registry import register
from ..base import Bridge, Features, Precision, Prompts, is_dry_build
from ..losses import query_similarity
from .qformer_layers import KeyValue, LMHead, MaskMode, QFormerLayer, joint_attention_mask

TEMPERATURE_RANGE = (0.001, 0.5)
_PER_TOKEN = ("word_embeddings.weight", "position_embeddings.weight", "lm_head.bias")  # a row per token or position
Text = Union[Sequence[str], Tensor]


@register("bridge", "qformer")
class QFormer(Bridge):
    """BLIP-2's Q-Former: learned queries cross-attend to visual tokens; heads for stage-1 ITC, ITM and ITG.

    Args:
        num_queries: learned query tokens ``Q``.
        num_layers, hidden_size, num_heads, intermediate_size: the BERT-style encoder.
        cross_attention_every: a cross-attention sub-layer in layers 0, k, 2k, ... (k = this).
        vision_width: width of the visual tokens (filled from the encoder by the assembled model).
        llm_width: width of the prompts (the LLM's embeddings); None: no output projection.
        dropout: dropout of attention probabilities and of every residual branch.
        layer_norm_eps: epsilon of every LayerNorm.
        text_branch: build the text embeddings, text feed-forwards and stage-1 heads (stage 1);
            false for the stage-2 Q-Former.
        tokenizer: BERT-style tokenizer, hub name or local directory (needed with text_branch);
            ``[DEC]`` is added as its bos token when it has none.
        vocab_size: used only in dry builds whose tokenizer is not a local directory (no hub access
            there; BERT's 30522 + ``[DEC]``).
        max_text_length: texts are truncated to this many tokens.
        max_position_embeddings: size of the text position table.
        embed_dim: width of the contrastive embeddings (``vision_proj``, ``text_proj``).
        init_from: BERT checkpoint (hub name or local directory) for the shared weights; the
            query FFNs start as copies of the text FFNs, cross-attention stays random.
        frozen, precision: see :class:`vlreg.models.base.Component`.
    """

    def __init__(
        self,
        num_queries: int = 32,
        num_layers: int = 12,
        hidden_size: int = 768,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        cross_attention_every: int = 2,
        vision_width: Optional[int] = None,
        llm_width: Optional[int] = None,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        text_branch: bool = True,
        tokenizer: Optional[str] = None,
        vocab_size: int = 30523,
        max_text_length: int = 32,
        max_position_embeddings: int = 512,
        embed_dim: int = 256,
        init_from: Optional[str] = None,
        frozen: bool = False,
        precision: Precision = "auto",
    ):
        super().__init__()
        if vision_width is None:
            raise ConfigError("qformer: vision_width is unknown; set it, or build the Q-Former in a model "
                              "whose encoder fills it")
        if hidden_size % num_heads:
            raise ConfigError(f"qformer: hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        if cross_attention_every < 1 or num_queries < 1 or num_layers < 1:
            raise ConfigError("qformer: num_queries, num_layers and cross_attention_every must be at least 1")
        if max_text_length > max_position_embeddings:
            raise ConfigError(f"qformer: max_text_length {max_text_length} exceeds max_position_embeddings "
                              f"{max_position_embeddings}")
        self.num_queries, self.vision_width, self.llm_width = num_queries, vision_width, llm_width
        self.hidden_size, self.max_text_length, self.text_branch = hidden_size, max_text_length, text_branch
        self.tokenizer = None
        if text_branch and (not is_dry_build() or (tokenizer is not None and Path(tokenizer).is_dir())):
            self.tokenizer = _bert_tokenizer(tokenizer)
            vocab_size = len(self.tokenizer)

        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, hidden_size))
        self.embed_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.embed_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(hidden_size, num_heads, intermediate_size, vision_width,
                         cross_attention=i % cross_attention_every == 0, text_branch=text_branch,
                         dropout=dropout, eps=layer_norm_eps)
            for i in range(num_layers))
        if text_branch:
            self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
            self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
            self.vision_proj = nn.Linear(hidden_size, embed_dim)
            self.text_proj = nn.Linear(hidden_size, embed_dim)
            self.itm_head = nn.Linear(hidden_size, 2)
            self.temp = nn.Parameter(torch.tensor(0.07))
            self.lm_head = LMHead(hidden_size, vocab_size, layer_norm_eps)
        self.llm_proj = nn.Linear(hidden_size, llm_width) if llm_width is not None else None

        self.apply(_init_bert_style)
        nn.init.normal_(self.query_tokens, std=0.02)
        if init_from is not None and not is_dry_build():
            self.load_bert(init_from)
        self.configure_frozen(frozen, precision)

    # -- weights --------------------------------------------------------------
    def load_bert(self, source: str) -> list[str]:
        """Initialise from a BERT checkpoint (hub name or directory); returns the names it set.

        A larger vocabulary or position table keeps its extra rows (``[DEC]``), a smaller one
        takes the checkpoint's first rows; a checkpoint of another width is an error.
        """
        from transformers import BertForMaskedLM

        from .qformer_keys import from_bert

        try:
            bert = BertForMaskedLM.from_pretrained(source)
        except pickle.UnpicklingError as exc:
            raise ConfigError(f"qformer: init_from: {unpickling_failure(exc, repr(source))}") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"qformer: cannot load BERT checkpoint {source!r} (init_from): "
                              f"{' '.join(str(exc).split())[:300]}") from None
        own = self.state_dict()
        loaded = {k: v for k, v in from_bert(bert.state_dict()).items() if k in own}
        with torch.no_grad():
            for name, value in loaded.items():
                target = own[name]
                if target.shape == value.shape:
                    target.copy_(value)
                elif name in _PER_TOKEN and target.shape[1:] == value.shape[1:]:
                    rows = min(target.shape[0], value.shape[0])
                    target[:rows].copy_(value[:rows])
                else:
                    raise ConfigError(f"qformer: {name} is {tuple(target.shape)} but {source!r} has "
                                      f"{tuple(value.shape)}; match hidden_size and intermediate_size to the checkpoint")
        return sorted(loaded)

    # -- text -----------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``[CLS] text [SEP]`` ids ``[B, T]`` long and mask ``[B, T]`` bool, on the module's device."""
        self._need_text_branch("tokenize")
        batch = self.tokenizer(list(texts), padding="longest", truncation=True,
                               max_length=self.max_text_length, return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device).bool()

    def _tokens(self, text: Text, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if isinstance(text, Tensor):
            mask = torch.ones_like(text, dtype=torch.bool) if mask is None else mask.bool()
            return text.to(self.device), mask.to(self.device)
        return self.tokenize(text)

    def _need_text_branch(self, what: str) -> None:
        if not self.text_branch:
            raise ConfigError(f"qformer: {what} needs the text branch; this Q-Former has text_branch: false")
        if self.tokenizer is None and what == "tokenize":
            raise ValueError(f"qformer: {what} needs a tokenizer, and a dry build (meta device) loads none")

    # -- encoder --------------------------------------------------------------
    def encode(
        self,
        features: Optional[Features],
        input_ids: Optional[Tensor] = None,
        text_mask: Optional[Tensor] = None,
        mode: MaskMode = "bidirectional",
        prefix: Optional[list[KeyValue]] = None,
        visual_rows: Optional[Tensor] = None,
        cross_keys: Optional[list[Optional[KeyValue]]] = None,
    ) -> tuple[Tensor, list[KeyValue]]:
        """Run the layers over ``[queries; text]``.

        Args:
            features: visual tokens ``[B, N, Dv]`` for the queries to read; None: text only.
                With ``visual_rows`` ``[B]``: ``[U, N, Dv]`` distinct items, row ``b`` reading item
                ``visual_rows[b]`` (the cross-attention keys and values of an item read by
                several rows, as ITM's hard negatives are, are computed once).
            input_ids, text_mask: text ``[B, T]`` (long, bool); None: queries only.
            mode: the self-attention mask over ``[queries; text]`` (:func:`joint_attention_mask`).
            prefix: per layer, cached query (key, value) ``[B, heads, Q, H / heads]`` that the
                text attends to under ``mode`` (text only; the queries' own pass made them).
            cross_keys: :meth:`cross_keys` of ``features`` (per layer; None where a layer projects
                the tokens itself), when another pass over the same tokens made them already.

        Returns the hidden states ``[B, Q+T, H]`` (Q = 0 without features) and, per layer, the
        self-attention's own (key, value) over those positions.
        """
        parts, num_queries = [], 0
        if features is not None:
            batch = features.tokens.shape[0] if visual_rows is None else visual_rows.shape[0]
            parts.append(self.query_tokens.expand(batch, -1, -1))
            num_queries = self.num_queries
        if input_ids is not None:
            self._need_text_branch("text")
            if text_mask is None:
                text_mask = torch.ones_like(input_ids, dtype=torch.bool)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            parts.append(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        x = self.embed_dropout(self.embed_norm(torch.cat(parts, dim=1)))

        mask = None
        if input_ids is not None:
            if prefix is not None:  # the prefix plays the queries' part of the mask
                mask = joint_attention_mask(mode, prefix[0][0].shape[2], text_mask)[:, :, -text_mask.shape[1]:]
            else:
                mask = joint_attention_mask(mode, num_queries, text_mask)
        visual = visual_mask = None
        if features is not None:
            visual = features.tokens.to(x.dtype)
            visual_mask = None if features.mask is None else features.mask.bool()[:, None, None, :]
            if visual_mask is not None and visual_rows is not None:
                visual_mask = visual_mask[visual_rows]

        cache = []
        for i, layer in enumerate(self.layers):
            layer_visual = visual if cross_keys is None or cross_keys[i] is None else cross_keys[i]
            x, own = layer(x, num_queries, mask, layer_visual, visual_mask, None if prefix is None else prefix[i],
                           visual_rows)
            cache.append(own)
        return x, cache

    def cross_keys(self, features: Features) -> list[Optional[KeyValue]]:
        """Per layer, the cross-attention keys and values of ``features``' tokens ``[B, N, Dv]``
        (each ``[B, heads, N, H / heads]``; None in layers without cross-attention), for :meth:`encode`."""
        tokens = features.tokens.to(self.query_tokens.dtype)
        return [None if layer.cross_attn is None else layer.cross_attn.keys_values(tokens) for layer in self.layers]

    def query_states(self, features: Features) -> Tensor:
        """The queries' output after reading ``features`` (tokens ``[B, N, Dv]``): ``[B, Q, H]``."""
        return self.encode(features)[0]

    def project(self, query_states: Tensor) -> Prompts:
        """Query states ``[B, Q, H]`` -> ``Prompts`` ``[B, Q, llm_width]``."""
        if self.llm_proj is None:
            raise ConfigError("qformer: prompts need llm_width (the LLM's embedding width); it is not set")
        return Prompts(self.llm_proj(query_states))

    def forward(self, features: Features) -> Prompts:
        """Visual tokens ``[B, N, Dv]`` -> prompts ``[B, Q, llm_width]``."""
        return self.project(self.query_states(features))

    # -- retrieval ------------------------------------------------------------
    def image_embeds(self, features: Features) -> Tensor:
        """Normalised contrastive embeddings of every query: ``[B, Q, embed_dim]``."""
        self._need_text_branch("image_embeds")
        return F.normalize(self.vision_proj(self.query_states(features)), dim=-1)

    def text_embeds(self, text: Text, mask: Optional[Tensor] = None) -> Tensor:
        """Normalised contrastive embedding of ``[CLS]``: ``[B, embed_dim]``.

        ``text``: strings, or ids ``[B, T]`` with ``mask`` ``[B, T]``.
        """
        self._need_text_branch("text_embeds")
        input_ids, mask = self._tokens(text, mask)
        hidden, _ = self.encode(None, input_ids, mask, mode="unimodal")
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    @staticmethod
    def similarity(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """``[Bi, Q, E]`` x ``[Bt, E]`` -> ``[Bi, Bt]``: the best query's cosine similarity."""
        return query_similarity(image_embeds, text_embeds)

    def itm_logits(self, features: Features, text: Text, mask: Optional[Tensor] = None,
                   visual_rows: Optional[Tensor] = None, cross_keys: Optional[list[Optional[KeyValue]]] = None
                   ) -> Tensor:
        """Match / no-match logits ``[B, 2]`` of the pairs (image ``b``, text ``b``); class 1 = match.

        ``text``: strings, or ids ``[B, T]`` with ``mask`` ``[B, T]``. With ``visual_rows`` ``[B]``,
        ``features`` holds distinct items ``[U, N, Dv]`` and pair ``b`` uses item ``visual_rows[b]``;
        ``cross_keys``: the items' :meth:`cross_keys`, when already made.
        """
        self._need_text_branch("itm_logits")
        input_ids, mask = self._tokens(text, mask)
        hidden, _ = self.encode(features, input_ids, mask, mode="bidirectional", visual_rows=visual_rows,
                                cross_keys=cross_keys)
        return self.itm_head(hidden[:, :self.num_queries]).mean(dim=1)

    def itg_logits(self, features: Features, input_ids: Tensor, mask: Tensor,
                   cache: Optional[list[KeyValue]] = None) -> Tensor:
        """Next-token logits ``[B, T, V]`` of text ids ``[B, T]`` (first token ``[DEC]``) given the image.

        ``cache``: the query pass's keys and values (``encode(features)[1]``), to skip that pass.
        """
        if cache is None:
            cache = self.encode(features)[1]
        hidden, _ = self.encode(None, input_ids, mask, mode="causal", prefix=cache)
        return self.lm_head(hidden, self.word_embeddings.weight)


def _bert_tokenizer(source: Optional[str]):
    """A BERT-style tokenizer with ``[DEC]`` as bos (added when missing, as BLIP-2 does)."""
    from ..tokenizers import load_tokenizer

    if source is None:
        raise ConfigError("qformer: text_branch needs a tokenizer (e.g. bert-base-uncased or a local directory); "
                          "set tokenizer:, or text_branch: false")
    tokenizer = load_tokenizer(source)
    if tokenizer.bos_token is None:
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    if tokenizer.cls_token is None or tokenizer.pad_token is None:
        raise ConfigError(f"qformer: tokenizer {source!r} is not BERT-style (needs [CLS] and [PAD] tokens)")
    return tokenizer


def _init_bert_style(module: nn.Module) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
