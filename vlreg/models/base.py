"""The contracts between components: what flows between them, and what each kind provides.

::

    image [B,3,H,W] | video [B,T,3,H,W] | features [B,N,D]
            │ Encoder
            ▼
    Features(tokens [B,N,De], mask [B,N])
            │ Bridge
            ▼
    Prompts(embeds [B,Q,Dllm], mask [B,Q])  ── alignment ──  Prompts from Prompter(text)
            │ LanguageModel (frozen)
            ▼
    loss | generated text | candidate scores

Masks are boolean, True where a position holds a real token; ``None`` means all real.

Every component derives from :class:`Component`, which implements "frozen means
frozen": a frozen component has no trainable parameters, stays in eval mode when
its parent trains, runs without an autograd graph where nothing upstream needs
gradients, and may keep its weights in bf16 or fp16 (``precision``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator, Literal, Sequence

import torch
from torch import Tensor, nn

Precision = Literal["auto", "fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_dry_build = False


@contextlib.contextmanager
def dry_build() -> Iterator[None]:
    """Build components on the meta device: shapes and parameter counts, no weights.

    Inside, components must not download or read weights, tokenizers or data:
    they build their architecture from config alone (see :func:`is_dry_build`).
    """
    global _dry_build
    previous, _dry_build = _dry_build, True
    try:
        with torch.device("meta"):
            yield
    finally:
        _dry_build = previous


def is_dry_build() -> bool:
    """True inside :func:`dry_build`: skip weight files, tokenizers and hub access."""
    return _dry_build


@dataclass
class Features:
    """Visual tokens. ``tokens``: ``[B, N, D]`` float; ``mask``: ``[B, N]`` bool or None."""

    tokens: Tensor
    mask: Tensor | None = None

    def full_mask(self) -> Tensor:
        """The mask, with None expanded to all True: ``[B, N]`` bool."""
        if self.mask is not None:
            return self.mask
        return torch.ones(self.tokens.shape[:2], dtype=torch.bool, device=self.tokens.device)


@dataclass
class Prompts:
    """Soft prompts in an LLM's input-embedding space. ``embeds``: ``[B, Q, D]``; ``mask``: ``[B, Q]`` bool or None."""

    embeds: Tensor
    mask: Tensor | None = None

    def full_mask(self) -> Tensor:
        if self.mask is not None:
            return self.mask
        return torch.ones(self.embeds.shape[:2], dtype=torch.bool, device=self.embeds.device)


class Component(nn.Module):
    """Base of every model component: freezing and the precision of frozen weights.

    Subclasses call :meth:`configure_frozen` at the end of ``__init__``.
    """

    frozen: bool = False
    precision: str = "fp32"

    def configure_frozen(self, frozen: bool, precision: Precision = "auto") -> None:
        """Freeze (no gradients, eval mode) and cast to ``precision`` when frozen.

        ``auto`` resolves by the device (:mod:`vlreg.device`) for frozen weights, and means
        fp32 for trainable ones. A trainable component must stay fp32 (autocast handles mixed
        precision for trainable weights); asking for bf16 on one is an error.
        """
        from ..device import frozen_weights_precision

        if precision != "auto" and precision not in DTYPES:
            raise ValueError(f"precision must be auto or one of {', '.join(DTYPES)}, got {precision!r}")
        if precision == "auto":
            precision = frozen_weights_precision("auto") if frozen else "fp32"
        elif frozen:
            precision = frozen_weights_precision(precision)
        if precision != "fp32" and not frozen:
            from ..errors import ConfigError

            raise ConfigError(
                f"{type(self).__name__}: precision {precision!r} applies to frozen weights only; "
                "set frozen: true, or use run.precision for mixed-precision training"
            )
        self.frozen, self.precision = frozen, precision
        if frozen:
            self.requires_grad_(False)
            self.to(DTYPES[precision])
        self.train(self.training)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype inputs are cast to before the frozen weights see them."""
        return DTYPES[self.precision]

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> "Component":
        super().train(mode)
        if self.frozen:
            for module in self.modules():
                module.training = False
        return self

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class Encoder(Component):
    """Media to visual tokens.

    Subclasses set ``modality`` (``"image"``: ``[B,3,H,W]``; ``"video"``: ``[B,T,3,H,W]``;
    ``"features"``: ``[B,N,Din]`` with an optional ``[B,N]`` mask), ``width`` (D) and
    ``num_tokens`` (N, the most tokens one sample yields), and implement ``forward``.
    """

    modality: ClassVar[str] = "image"
    width: int
    num_tokens: int

    def forward(self, media: Tensor, mask: Tensor | None = None) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_input(self, batch_size: int = 2, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor | None]:
        """A zero input of the right shape (used for dry runs and shape checks)."""
        raise NotImplementedError

    # The frozen-feature cache (vlreg.runner.feature_cache) stores what the frozen part of an
    # encoder computes and finishes the forward pass from it. An encoder that is frozen as a
    # whole is its own frozen part; a video encoder whose frame encoder alone is frozen caches
    # the frame tokens and adds its trainable temporal embedding afterwards.
    def frozen_stage(self) -> "Encoder | None":
        """The frozen module whose outputs may be cached, or None when none is frozen."""
        return self if self.frozen else None

    def encode_frozen(self, media: Tensor, mask: Tensor | None = None) -> Features:
        """What :meth:`frozen_stage` computes for a batch (the cache stores one item's slice)."""
        return self(media, mask)

    def from_frozen(self, features: Features) -> Features:
        """Finish the forward pass from :meth:`encode_frozen`'s output (identity when all is frozen)."""
        return features


class Bridge(Component):
    """Visual tokens to ``num_queries`` prompts in the LLM's embedding space.

    ``vision_width`` is the encoder's D, ``llm_width`` the LLM's embedding size; the
    assembled model fills both from its neighbours unless the config sets them.
    """

    vision_width: int
    llm_width: int
    num_queries: int

    def forward(self, features: Features) -> Prompts:  # pragma: no cover - abstract
        raise NotImplementedError


class Prompter(Component):
    """Text to the prompts from which the frozen LLM would reconstruct it (P-Former)."""

    llm_width: int
    num_prompts: int

    def forward(self, texts: Sequence[str]) -> Prompts:  # pragma: no cover - abstract
        raise NotImplementedError


class LanguageModel(Component):
    """A frozen LLM that takes soft prompts before its text.

    ``width`` is the input-embedding size; ``tokenizer`` is a transformers tokenizer.
    Concrete adapters implement :meth:`loss`, :meth:`generate`, :meth:`score` and
    :meth:`token_embeddings`.
    """

    width: int
    is_encoder_decoder: ClassVar[bool] = False

    def loss(self, prompts: Prompts, text_input: Sequence[str], text_output: Sequence[str] | None = None) -> Tensor:
        """Mean cross-entropy of the target tokens (a scalar). See the adapters for what the target is."""
        raise NotImplementedError

    def generate(self, prompts: Prompts, text_input: Sequence[str] | None = None, **generation_kwargs) -> list[str]:
        """Continue ``prompts`` (+ ``text_input``) with greedy, beam or nucleus decoding."""
        raise NotImplementedError

    def score(self, prompts: Prompts, text_input: Sequence[str], candidates: Sequence[str]) -> Tensor:
        """Log-likelihood of each candidate after prompts + text: ``[B, C]``."""
        raise NotImplementedError

    def token_embeddings(self) -> Tensor:
        """The input-embedding matrix ``[V, width]`` (P-Former's vocabulary loss)."""
        raise NotImplementedError
