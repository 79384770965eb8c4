"""The Q-Former's parameter names in transformers, LAVIS and BERT checkpoints.

Each layout is a table of rules ``(vlreg name, other name)``, applied by
:func:`vlreg.io.renaming.rename` (a name is a module path or a full parameter name;
``{i}`` stands for a layer index).

vlreg's names (see :class:`vlreg.models.bridges.qformer.QFormer`)::

    query_tokens, embed_norm, word_embeddings, position_embeddings,
    layers.{i}.{self_attn,cross_attn}.{query,key,value,out,norm},
    layers.{i}.{query_ffn,text_ffn}.{fc1,fc2,norm},
    vision_proj, text_proj, itm_head, temp, lm_head.{dense,norm,bias}, llm_proj

transformers 5 (``Blip2ForConditionalGeneration``, ``Blip2ForImageTextRetrieval``) has no
temperature and no language-model head: ``temp`` and ``lm_head`` have no counterpart there.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from torch import Tensor

from ...io.renaming import Rule, rename


def _attention(ours: str, theirs: str, inner: str) -> list[Rule]:
    projections = [(f"{ours}.{p}", f"{theirs}.{inner}.{p}") for p in ("query", "key", "value")]
    return projections + [(f"{ours}.out", f"{theirs}.output.dense"), (f"{ours}.norm", f"{theirs}.output.LayerNorm")]


def _feed_forward(ours: str, suffix: str) -> list[Rule]:
    return [(f"{ours}.fc1", f"intermediate{suffix}.dense"), (f"{ours}.fc2", f"output{suffix}.dense"),
            (f"{ours}.norm", f"output{suffix}.LayerNorm")]


def _layers(prefix: str, rules: Iterable[Rule]) -> list[Rule]:
    return [(f"layers.{{i}}.{ours}", f"{prefix}.{{i}}.{theirs}") for ours, theirs in rules]


def _qformer_layer(inner: str) -> list[Rule]:
    """One Q-Former layer in BERT's naming; ``inner`` is the attention's own module name."""
    return [*_attention("self_attn", "attention", inner), *_attention("cross_attn", "crossattention", inner),
            *_feed_forward("query_ffn", "_query"), *_feed_forward("text_ffn", "")]


def _bert(prefix: str, layer: Iterable[Rule]) -> list[Rule]:
    """Embeddings, layers and masked-LM head of a BERT model (``transformers.BertForMaskedLM`` names)."""
    return [
        ("word_embeddings", f"{prefix}bert.embeddings.word_embeddings"),
        ("position_embeddings", f"{prefix}bert.embeddings.position_embeddings"),
        ("embed_norm", f"{prefix}bert.embeddings.LayerNorm"),
        *_layers(f"{prefix}bert.encoder.layer", layer),
        ("lm_head.dense", f"{prefix}cls.predictions.transform.dense"),
        ("lm_head.norm", f"{prefix}cls.predictions.transform.LayerNorm"),
        ("lm_head.bias", f"{prefix}cls.predictions.bias"),
    ]


TRANSFORMERS: list[Rule] = [
    ("query_tokens", "query_tokens"),
    ("embed_norm", "qformer.layernorm"),
    *_layers("qformer.encoder.layer", _qformer_layer("attention")),
    ("word_embeddings", "embeddings.word_embeddings"),
    ("position_embeddings", "embeddings.position_embeddings"),
    ("vision_proj", "vision_projection"),
    ("text_proj", "text_projection"),
    ("itm_head", "itm_head"),
    ("llm_proj", "language_projection"),
]

# BLIP-2 initialises from BERT: self-attention, text FFN and LM head from BERT's, the query
# FFN copied from the text FFN, cross-attention left random.
BERT: list[Rule] = _bert("", [*_attention("self_attn", "attention", "self"),
                              *_feed_forward("text_ffn", ""), *_feed_forward("query_ffn", "")])

LAVIS_PROJECTIONS = ("opt_proj", "t5_proj", "llm_proj")


def lavis_rules(projections: Sequence[str] = LAVIS_PROJECTIONS) -> list[Rule]:
    """LAVIS's ``Blip2Qformer`` / ``Blip2OPT`` / ``Blip2T5`` names; ``projections``: the LLM projection's names."""
    return [
        ("query_tokens", "query_tokens"),
        *_bert("Qformer.", _qformer_layer("self")),
        ("word_embeddings.weight", "Qformer.cls.predictions.decoder.weight"),  # tied
        ("lm_head.bias", "Qformer.cls.predictions.decoder.bias"),  # the same tensor as cls.predictions.bias
        ("vision_proj", "vision_proj"),
        ("text_proj", "text_proj"),
        ("itm_head", "itm_head"),
        ("temp", "temp"),
        *[("llm_proj", name) for name in projections],
    ]


def to_transformers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """vlreg Q-Former state -> transformers ``Blip2ForConditionalGeneration`` / ``Blip2ForImageTextRetrieval`` keys."""
    return rename(state, TRANSFORMERS, to_vlreg=False)


def from_transformers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """transformers BLIP-2 state (any of its model classes) -> vlreg Q-Former keys."""
    return rename(state, TRANSFORMERS, to_vlreg=True)


def to_lavis(state: Mapping[str, Tensor], projection: str = "opt_proj") -> dict[str, Tensor]:
    """vlreg Q-Former state -> LAVIS keys; ``projection``: ``opt_proj``, ``t5_proj`` or ``llm_proj``."""
    return rename(state, lavis_rules((projection,)), to_vlreg=False)


def from_lavis(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """LAVIS BLIP-2 state (stage 1 or 2, OPT or T5) -> vlreg Q-Former keys."""
    return rename(state, lavis_rules(), to_vlreg=True)


def from_bert(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A BERT state (``BertForMaskedLM`` or ``BertModel`` keys) -> the vlreg Q-Former weights it initialises.

    BERT adds a token-type embedding to every token; the Q-Former has none, so type 0's
    vector is folded into the position embeddings (the text encoder then computes exactly
    what BERT computes for single sentences).
    """
    if not any(key.startswith("bert.") for key in state):
        state = {f"bert.{key}": value for key, value in state.items()}
    out = rename(state, BERT, to_vlreg=True)
    token_type = state.get("bert.embeddings.token_type_embeddings.weight")
    if token_type is not None and "position_embeddings.weight" in out:
        out["position_embeddings.weight"] = out["position_embeddings.weight"] + token_type[0]
    return out
