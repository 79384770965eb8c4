"""What the decoder-only and the encoder-decoder adapters share.

:class:`TransformersLM` wraps a transformers language model: it loads or builds the
model, freezes it, loads the tokenizer on first use, turns text into token ids, puts
the soft prompts in front, and generates through the model's own ``generate()``.

Text, for every sample, is a pair of strings:

- the **context**, text the model is conditioned on and never scored on: the fixed
  ``prompt`` joined by one space with the conditioning text;
- the **target**, the text the loss and :meth:`~TransformersLM.score` are about.

Context tokens are the tokenizer's own encoding, special tokens included (OPT puts
``</s>`` first, as a bos; T5 puts ``</s>`` last, as an eos), as transformers' BLIP-2
processor encodes its text; at most ``max_text_length`` of them. Target tokens are the
plain encoding of the target, cut to ``max_text_length - 1`` tokens, then eos.

Soft prompts ``[B, Q, width]`` always come first, in front of the context.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, InputError, unpickling_failure
from ..base import LanguageModel, Precision, Prompts, is_dry_build
from .config_keys import TransformersConfig

IGNORE = -100
"""The target of a position that is not scored (prompts, context, padding)."""

SIZE_KEYS = (
    "model_type", "vocab_size", "hidden_size", "d_model", "word_embed_proj_dim", "ffn_dim", "d_ff",
    "intermediate_size", "num_hidden_layers", "num_layers", "num_decoder_layers", "num_attention_heads",
    "num_heads", "d_kv",
)
"""Config keys that must agree between a ``config:`` mapping and the checkpoint loaded from ``path``."""

ARGUMENTS = """
    Arguments:
        path: hub name or local directory of a transformers checkpoint; the weights load with
            ``from_pretrained`` (in the frozen precision), and so does the tokenizer unless
            ``tokenizer`` is set.
        config: a transformers config as a mapping with ``model_type`` (``AutoConfig.for_model``).
            Without ``path`` it builds the architecture with random weights. With ``path`` it
            describes ``path``'s architecture: a dry build uses it instead of the checkpoint, and a
            real run checks that the loaded config agrees on every size it sets.
        tokenizer: tokenizer directory or hub name; defaults to ``path``. Loaded on first use.
        frozen: no gradients for the weights and eval mode kept; gradients still flow back to the
            prompts, so a bridge trains through the frozen LLM.
        precision: dtype of the frozen weights (``auto``: by the device, see :mod:`vlreg.device`;
            ``fp32``, ``bf16``, ``fp16``). Prompts are cast to
            it on the way in; logits come out as float32.
        max_text_length: the most tokens of a context, and separately of a target, each counting
            its special tokens.
        prompt: fixed text placed before every text input (e.g. ``"a photo of"``); it is context,
            never scored.
        grad_checkpointing: activation checkpointing inside the transformers model
            (``activation_checkpointing_enable``); only for a trainable LLM (``frozen: false``).
"""


@dataclass
class TextLogits:
    """Logits and the tokens they are scored against.

    ``logits``: ``[N, S, V]`` float32. ``targets``: ``[N, S]`` long: the token that
    ``logits[n, s]`` should predict, or ``IGNORE`` (-100) where nothing is scored.
    """

    logits: Tensor
    targets: Tensor

    def cross_entropy(self) -> Tensor:
        """Mean cross-entropy over every scored token of the batch: a scalar."""
        return F.cross_entropy(self.logits.flatten(0, 1), self.targets.flatten(), ignore_index=IGNORE)

    def log_likelihood(self) -> Tensor:
        """Summed log-probability of each row's scored tokens: ``[N]``."""
        scored = self.targets != IGNORE
        log_probs = self.logits.log_softmax(-1).gather(-1, self.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (log_probs * scored).sum(-1)


def join_text(*parts: str) -> str:
    """The non-empty parts joined by one space."""
    return " ".join(part for part in parts if part)


def per_sample(text_output: Sequence[Optional[str]] | None, batch_size: int) -> list[Optional[str]]:
    """``text_output`` as one entry per sample (None where a sample has none)."""
    if text_output is None:
        return [None] * batch_size
    if len(text_output) != batch_size:
        raise ValueError(f"text_output has {len(text_output)} entries for {batch_size} text inputs")
    return list(text_output)


def pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> tuple[Tensor, Tensor]:
    """Rows of different lengths as ``[N, L]`` long, padded with ``value``, and their ``[N, L]`` bool mask."""
    length = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        where = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, where] = torch.tensor(row, dtype=torch.long)
        mask[i, where] = True
    return ids, mask


def position_ids(mask: Tensor) -> Tensor:
    """Positions counting real tokens only, 0 on padding: ``[N, L]`` long (as transformers' ``generate()``)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)


def word_separator(tokenizer: Any) -> str:
    """What goes before a target that follows other text in the same sequence.

    ``" "`` when the tokenizer encodes the space with the next word (byte-level BPE:
    ``"a b"`` is ``a``, ``Ġb``), so that a target tokenised on its own gets the tokens it
    has after its context; ``""`` when a word encodes the same either way.
    """
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    head = encode("a")
    return " " if encode("a b")[len(head):] == encode(" b") else ""


def untie_output_embeddings(model: Any) -> None:
    """Give a model built from a config an output head of its own, drawn like its input embeddings.

    For configs that say ``tie_word_embeddings: false``: transformers 5 ties T5's head to
    its embeddings whatever the config says (a checkpoint with two different matrices
    loads untied), which would make T5 v1.1 / FlanT5 built from a config smaller than
    the checkpoints, and a random one echo its decoder input.
    """
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or head.weight is not embeddings.weight:
        return
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    for name, module in model.named_modules(remove_duplicate=False):
        if module is head:
            tied.pop(f"{name}.weight", None)
    weight = torch.empty_like(embeddings.weight)
    if not weight.is_meta:
        with torch.no_grad():
            weight.normal_(0.0, float(embeddings.weight.std()))
    head.weight = nn.Parameter(weight)


def enable_activation_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing inside a transformers model: ``activation_checkpointing_enable``
    from transformers 5.23, which deprecates the older ``gradient_checkpointing_enable``; that one before."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _checkpoint_sha256(path: str) -> str:
    """The fingerprint of the weight files of a transformers checkpoint: a local directory or a cached hub name."""
    from pathlib import Path

    from transformers.utils import cached_file

    from ...io.fingerprints import sha256_files
    from ...io.weights import weight_files

    directory = Path(path)
    if not directory.is_dir():  # a hub name: the files from_pretrained just fetched into the cache
        directory = Path(cached_file(path, "config.json")).parent
    return sha256_files(weight_files(directory))


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


class TransformersLM(LanguageModel):
    """Base of the adapters over transformers models (see the module docstring for the text layout).

    Subclasses set ``auto_class`` (the transformers auto class that builds the model) and
    ``continues_context`` (whether generation continues the context in the same sequence,
    which puts the context's padding on its left), and implement ``forward`` and ``score``.
    """

    auto_class: ClassVar[str]
    continues_context: ClassVar[bool]

    def __init__(
        self,
        path: Optional[str] = None,
        config: Optional[TransformersConfig] = None,
        tokenizer: Optional[str] = None,
        frozen: bool = True,
        precision: Precision = "auto",
        max_text_length: int = 32,
        prompt: str = "",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        # checks frozen/precision before any weights load; applied to the weights below
        self.configure_frozen(frozen, precision)
        if max_text_length < 2:
            raise ConfigError(f"{self.label}: max_text_length must be at least 2 (a token and eos), got {max_text_length}")
        if grad_checkpointing and frozen:
            raise ConfigError(
                f"{self.label}: grad_checkpointing applies to a trainable LLM (frozen: false); "
                "a frozen LLM runs in eval mode, where transformers does not checkpoint"
            )
        self.path, self.prompt, self.max_text_length = path, prompt, max_text_length
        self.tokenizer_source = tokenizer or path
        self._tokenizer: Any = None
        self._separator = ""
        self._weight_source: Optional[dict[str, str]] = None
        self.model = self._load_model(path, config)
        self.width = self.model.get_input_embeddings().embedding_dim
        if grad_checkpointing:
            enable_activation_checkpointing(self.model)
        self.configure_frozen(frozen, precision)

    @property
    def label(self) -> str:
        return type(self).__name__

    # -- the model ------------------------------------------------------------
    def _load_model(self, path: str | None, config: Mapping[str, Any] | None) -> Any:
        import transformers

        auto = getattr(transformers, self.auto_class)
        if is_dry_build() or path is None:
            if config is None:
                why = "a dry build builds the architecture from" if is_dry_build() else "set path: or"
                raise ConfigError(
                    f"{self.label}: {why} config: (a transformers config mapping with model_type and the sizes); "
                    "add config: to the llm node"
                )
            model = self._from_config(auto, config)
        else:
            try:
                model = auto.from_pretrained(path, dtype=self.dtype)
            except pickle.UnpicklingError as exc:
                raise ConfigError(f"{self.label}: {unpickling_failure(exc, repr(path))}") from None
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.label}: cannot load {path!r} with {auto.__name__}: {_short(exc)}") from None
            if config is not None:
                self._check_agrees(model.config, config, path)
            self._weight_source = {"source": path, "sha256": _checkpoint_sha256(path)}
        return model

    def weight_source(self) -> Optional[dict[str, str]]:
        """``{"source": path, "sha256": ...}`` when the weights came from ``path``, else None (random init).

        ``sha256`` fingerprints the checkpoint's weight files (every safetensors shard, else the
        pickles), hashed once when the model loads; see :func:`vlreg.io.fingerprints.sha256_files`.
        """
        return self._weight_source

    def forget_weight_source(self) -> None:
        """Declare the weights changed since they were loaded (a checkpoint then saves them in full)."""
        self._weight_source = None

    def _from_config(self, auto: Any, config: Mapping[str, Any]) -> Any:
        from transformers import AutoConfig

        settings = dict(config)
        model_type = settings.pop("model_type", None)
        if not model_type:
            raise ConfigError(f"{self.label}: config needs model_type (e.g. opt, t5)")
        try:
            model = auto.from_config(AutoConfig.for_model(model_type, **settings))
        except ValueError as exc:
            raise ConfigError(f"{self.label}: cannot build model_type {model_type!r} with {auto.__name__}: {_short(exc)}") from None
        if settings.get("tie_word_embeddings") is False:
            untie_output_embeddings(model)
        return model

    def _check_agrees(self, loaded: Any, config: Mapping[str, Any], path: str) -> None:
        differences = [
            f"{key}: config {config[key]!r}, checkpoint {getattr(loaded, key, None)!r}"
            for key in SIZE_KEYS
            if key in config and getattr(loaded, key, None) != config[key]
        ]
        if differences:
            raise ConfigError(f"{self.label}: config: disagrees with {path!r}: {'; '.join(differences)}")

    def token_embeddings(self) -> Tensor:
        """The input-embedding matrix ``[V, width]``."""
        return self.model.get_input_embeddings().weight

    # -- tokens ---------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer, loaded on first use (a dry build never touches it)."""
        if self._tokenizer is None:
            from ..tokenizers import load_tokenizer

            if self.tokenizer_source in (None, "", "???"):
                raise ConfigError(f"{self.label}: no tokenizer: set tokenizer: (a directory or hub name) or path:")
            tokenizer = load_tokenizer(self.tokenizer_source)
            vocab = self.model.get_input_embeddings().num_embeddings
            if len(tokenizer) > vocab:
                raise ConfigError(
                    f"{self.label}: tokenizer {self.tokenizer_source!r} has {len(tokenizer)} tokens, "
                    f"more than the model's {vocab} embeddings"
                )
            if tokenizer.eos_token_id is None:
                raise ConfigError(f"{self.label}: tokenizer {self.tokenizer_source!r} has no eos token")
            self._separator = word_separator(tokenizer)
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def pad_token_id(self) -> int:
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode_contexts(self, contexts: Sequence[str]) -> list[list[int]]:
        """Each context's token ids, with the tokenizer's special tokens, at most ``max_text_length``."""
        encoded = self.tokenizer(list(contexts), add_special_tokens=True, truncation=True, max_length=self.max_text_length)
        return encoded["input_ids"]

    def encode_targets(self, targets: Sequence[str], after_context: Sequence[bool] | None = None) -> list[list[int]]:
        """Each target's token ids then eos, at most ``max_text_length``.

        ``after_context[i]`` says target i directly follows a non-empty context in one
        sequence (decoder-only); it is then encoded as it would be there (see :func:`word_separator`).
        """
        tokenizer = self.tokenizer
        after_context = after_context or [False] * len(targets)
        texts = [self._separator + text if after else text for text, after in zip(targets, after_context)]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [row[: self.max_text_length - 1] + [tokenizer.eos_token_id] for row in encoded]

    # -- prompts in front ----------------------------------------------------------
    def prepend_prompts(self, prompts: Prompts, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``[prompts; embedded ids]``: embeds ``[B, Q+T, width]`` in the weights' dtype and mask ``[B, Q+T]`` bool.

        ``ids`` and ``mask``: ``[B, T]``.
        """
        batch, _, width = prompts.embeds.shape
        if width != self.width:
            raise InputError(
                f"{self.label}: prompts are {width} wide but the LLM's input embeddings are {self.width}; "
                f"set the bridge's llm_width to {self.width}"
            )
        if batch != ids.shape[0]:
            raise ValueError(f"{batch} prompts for {ids.shape[0]} texts")
        text = self.model.get_input_embeddings()(ids.to(self.device))
        embeds = torch.cat([prompts.embeds.to(text.device, text.dtype), text], dim=1)
        return embeds, torch.cat([prompts.full_mask().to(text.device), mask.to(text.device)], dim=1)

    def prompted_contexts(self, prompts: Prompts, contexts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``[prompts; context tokens]`` as in :meth:`prepend_prompts`; the contexts' padding is on their
        left when the model continues the context (decoder-only), so every row ends with its last token."""
        ids, mask = pad(self.encode_contexts(contexts), self.pad_token_id, left=self.continues_context)
        return self.prepend_prompts(prompts, ids, mask)

    # -- what the adapters do ---------------------------------------------------
    def loss(self, prompts: Prompts, text_input: Sequence[str], text_output: Sequence[Optional[str]] | None = None,
             **options: Any) -> Tensor:
        """Mean cross-entropy of the target tokens (a scalar); what the targets are is the adapter's ``forward``."""
        return self(prompts, text_input, text_output, **options).cross_entropy()

    def generate(self, prompts: Prompts, text_input: Sequence[str] | None = None, **options: Any) -> list[str]:
        """The text generated after ``[prompts; prompt + text_input]``: ``B * num_return_sequences`` strings.

        ``options`` are those of :meth:`generate_tokens`. Only new tokens are decoded, without
        special tokens, and stripped.
        """
        tokens = self.generate_tokens(prompts, text_input, **options)
        return [text.strip() for text in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    @torch.no_grad()
    def generate_tokens(
        self,
        prompts: Prompts,
        text_input: Sequence[str] | None = None,
        max_new_tokens: int = 30,
        num_beams: int = 1,
        do_sample: bool = False,
        top_p: float = 1.0,
        temperature: float = 1.0,
        length_penalty: float = 1.0,
        min_new_tokens: int = 0,
        repetition_penalty: float = 1.0,
        num_return_sequences: int = 1,
    ) -> Tensor:
        """New token ids after ``[prompts; prompt + text_input]``: ``[B * num_return_sequences, <= max_new_tokens]``.

        Decoding is the transformers model's own ``generate(inputs_embeds=..., attention_mask=...)``:
        greedy (default), beam search (``num_beams > 1``, with ``length_penalty``) or sampling
        (``do_sample``, with ``top_p`` nucleus and ``temperature``). The sequences of one sample
        are consecutive; rows that end early are padded with the pad token. ``text_input``
        None means the fixed prompt alone. ``repetition_penalty`` sees the generated tokens only.
        """
        if num_return_sequences > num_beams and not do_sample:
            raise ValueError(
                f"num_return_sequences ({num_return_sequences}) needs num_beams >= it, or do_sample: true"
            )
        batch = prompts.embeds.shape[0]
        texts = list(text_input) if text_input is not None else [""] * batch
        embeds, mask = self.prompted_contexts(prompts, [join_text(self.prompt, text) for text in texts])
        options: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams, do_sample=do_sample,
            repetition_penalty=repetition_penalty, num_return_sequences=num_return_sequences,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.pad_token_id,
        )
        if do_sample:
            options.update(top_p=top_p, temperature=temperature)
        if num_beams > 1:
            options.update(length_penalty=length_penalty)
        copies = num_beams if num_beams > 1 else num_return_sequences
        options.update(self.shared_prefix(embeds, mask, copies))
        tokens = self.model.generate(inputs_embeds=embeds, attention_mask=mask.long(), **options)
        return self.new_tokens(tokens)

    def shared_prefix(self, embeds: Tensor, mask: Tensor, copies: int) -> dict[str, Any]:
        """Extra ``generate()`` arguments that spare it work on ``copies`` identical rows per sample.

        ``generate()`` repeats every input row once per beam (or returned sequence) before its first
        step. Here nothing is spared; the decoder-only adapter runs the shared prefix once per sample.
        """
        return {}

    def new_tokens(self, generated: Tensor) -> Tensor:
        """The newly generated part of what the transformers model's ``generate()`` returned."""
        return generated
