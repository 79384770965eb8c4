"""Encoders: media to visual tokens ``Features(tokens [B, N, D], mask [B, N])``.

One module per family, imported by the registry on the first lookup of one of its
names (see :mod:`vlreg.builtins`):

- :mod:`.timm_vit`: ``timm_vit`` (any timm ViT), ``eva_vit_g`` and ``clip_vit_l`` (BLIP-2's presets);
- :mod:`.video`: ``video`` (an image encoder applied frame by frame, plus temporal embeddings);
- :mod:`.precomputed`: ``precomputed`` (pre-extracted features such as I3D or CLIP).

This package itself stays light: it holds only the two helpers every encoder shares.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager, Optional

from ...errors import InputError

if TYPE_CHECKING:
    from torch import Tensor

    from ..base import Encoder

_LOOKS_LIKE = {4: " (an image batch?)", 5: " (a video batch?)"}


def check_media(what: str, tensor: "Tensor", **dims: Optional[int]) -> None:
    """Raise InputError unless ``tensor`` has the named dims, in order; None is a free size.

    ``check_media("video encoder", x, B=None, T=8, C=3, H=None, W=None)`` fails on an image
    batch with "video encoder expects [B, T=8, C=3, H, W], got shape [2, 3, 224, 224] (an image batch?)".
    """
    shape = tuple(tensor.shape)
    wanted = tuple(dims.values())
    if len(shape) != len(wanted) or any(w is not None and w != s for w, s in zip(wanted, shape)):
        names = ", ".join(name if size is None else f"{name}={size}" for name, size in dims.items())
        hint = _LOOKS_LIKE.get(len(shape), "") if len(shape) != len(wanted) else ""
        raise InputError(f"{what} expects [{names}], got shape {list(shape)}{hint}")


def encoding(encoder: "Encoder", media: "Tensor") -> ContextManager:
    """The grad mode of a forward: no autograd graph for a frozen encoder whose input needs no gradient."""
    import torch

    if encoder.frozen and not media.requires_grad:
        return torch.no_grad()
    return contextlib.nullcontext()
