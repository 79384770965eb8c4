"""Pre-extracted features: a ``.npy`` file ``[T, D]`` to ``[max_tokens, D]`` with a ``[max_tokens]`` mask."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from ...registry import register
from ..media import BadMedia
from . import MediaProcessor


@register("processor", "npy_features")
class NpyFeatures(MediaProcessor):
    """Pre-extracted clip features (I3D, CLIP...) from ``.npy`` files, padded or truncated to a fixed length.

    A file holds float features ``[T, D]`` (``[D]`` counts as T = 1). The first
    ``max_tokens`` rows are kept; shorter files are zero-padded. Returns
    ``(features [max_tokens, D] float32, mask [max_tokens] bool)``, True on real rows;
    items carry them as ``features`` and ``features_mask``. Datasets look for
    ``<name>.npy`` where their annotations name ``<name>.mp4``.

    Args:
        max_tokens: the fixed number of rows N.
        dim: the expected D; a file with another width is bad media (None: any).
    """

    modality = "features"
    suffix = ".npy"
    deterministic = True

    def __init__(self, max_tokens: int = 32, dim: Optional[int] = None):
        self.max_tokens, self.dim = max_tokens, dim

    def __call__(self, source: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
        path = str(source)
        if not os.path.isfile(path):
            raise BadMedia(path, "file not found")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise BadMedia(path, f"not a readable .npy file: {exc}") from None
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.number):
            raise BadMedia(path, f"expected numeric features [T, D] with T >= 1, got {array.dtype} {array.shape}")
        if self.dim is not None and array.shape[1] != self.dim:
            raise BadMedia(path, f"expected feature width {self.dim}, got {array.shape[1]}")
        kept = torch.from_numpy(np.ascontiguousarray(array[: self.max_tokens], dtype=np.float32))
        features = torch.zeros(self.max_tokens, array.shape[1], dtype=torch.float32)
        features[: len(kept)] = kept
        mask = torch.arange(self.max_tokens) < len(kept)
        return features, mask
