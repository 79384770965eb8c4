"""Pre-extracted features (I3D, CLIP, ...) as visual tokens."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ...errors import ConfigError, InputError
from ...registry import register
from ..base import Encoder, Features, Precision
from . import check_media, encoding


@register("encoder", "precomputed")
class PrecomputedFeatures(Encoder):
    """Features extracted offline ``[B, N, Din]`` (+ mask ``[B, N]``) -> tokens ``[B, N, width]``.

    For clips given as one feature vector per frame or segment (I3D or CLIP features
    ``[T, Din]`` per clip, padded to the longest clip of the batch and masked), as the
    P-Former video experiment fed VATEX features. An optional LayerNorm, then an
    optional linear projection, map them to the width the bridge sees.

    Args:
        input_width: Din, the size of one stored feature vector.
        num_tokens: the most feature vectors one sample has (a batch may have fewer).
        width: the output width; None keeps ``input_width`` with no projection.
        layer_norm: normalise each feature vector first (features of another model's scale).
        frozen: freeze the LayerNorm and projection (both are new, so trainable by default).
        precision: the dtype of frozen weights (``auto``: by the device); the tokens come back as float32.
    """

    modality = "features"

    def __init__(
        self,
        input_width: int,
        num_tokens: int,
        width: Optional[int] = None,
        layer_norm: bool = False,
        frozen: bool = False,
        precision: Precision = "auto",
    ):
        super().__init__()
        if min(input_width, num_tokens, width or 1) < 1:
            raise ConfigError(f"precomputed: input_width, num_tokens and width must be positive, got "
                              f"{input_width}, {num_tokens}, {width}")
        self.input_width, self.num_tokens = input_width, num_tokens
        self.width: int = width or input_width
        self.norm = nn.LayerNorm(input_width) if layer_norm else nn.Identity()
        self.proj = nn.Linear(input_width, width) if width is not None else nn.Identity()
        self.configure_frozen(frozen, precision)

    def forward(self, media: Tensor, mask: Optional[Tensor] = None) -> Features:
        """Features ``[B, N, Din]`` (N <= num_tokens) + mask ``[B, N]`` -> ``Features([B, N, width] float32, mask)``."""
        check_media("features encoder 'precomputed'", media, B=None, N=None, D=self.input_width)
        batch, length = media.shape[:2]
        if length > self.num_tokens:
            raise InputError(f"features encoder 'precomputed' takes at most num_tokens={self.num_tokens} "
                              f"feature vectors per sample, got {length}")
        if mask is not None:
            check_media("features encoder's mask", mask, B=batch, N=length)
            mask = mask.bool()
        with encoding(self, media):
            tokens = self.proj(self.norm(media.to(self.dtype)))
        return Features(tokens.float(), mask)

    def example_input(self, batch_size: int = 2, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Zero features ``[batch_size, num_tokens, Din]`` and an all-True mask ``[batch_size, num_tokens]``."""
        media = torch.zeros(batch_size, self.num_tokens, self.input_width, device=device)
        return media, torch.ones(batch_size, self.num_tokens, dtype=torch.bool, device=device)
