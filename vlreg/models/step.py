"""One training batch as the objectives see it: the model's parts, the batch, and what is computed once for it.

The model's ``forward`` makes a :class:`Step` per batch and hands it to each of its objectives
(:mod:`vlreg.objectives`). What several objectives read is computed on first use and kept:
the visual tokens (the encoder runs once) and the bridge's prompts (the bridge runs once).
An objective whose own pass computes what the bridge's forward would (BLIP-2 stage 1's query
pass) offers the prompts from it (:meth:`Step.offer_prompts`), so the bridge is not run again.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from .base import Features, Prompts

MEDIA_KEYS = ("image", "video", "features")
"""The batch keys that hold media: ``image`` ``[B,3,H,W]``, ``video`` ``[B,T,3,H,W]``, ``features`` ``[B,N,D]``."""
MEDIA = "media"
"""In an objective's ``batch_keys``: the batch's media, whichever key holds it (or cached ``visual_tokens``)."""


def id_tensor(ids: Any, device: torch.device | None = None) -> Optional[Tensor]:
    """Media ids (ints or strings such as ``"coco_9"``) as a ``[B]`` int64 tensor.

    Strings are hashed with CRC-32, the same on every rank, so ids gathered from
    several ranks compare equal exactly when they name the same media.
    """
    if ids is None or isinstance(ids, Tensor):
        return ids if ids is None or device is None else ids.to(device)
    values = [i if isinstance(i, int) else zlib.crc32(str(i).encode()) for i in ids]
    return torch.tensor(values, dtype=torch.long, device=device)


class Step:
    """A batch (``samples``, see :mod:`vlreg.models.assembly`) and the model it trains (a
    :class:`~vlreg.models.assembly.VisionLanguageModel`, which creates its steps).

    ``model.encoder``, ``model.bridge``, ``model.prompter`` and ``model.llm`` are the parts;
    :meth:`features` and :meth:`prompts` are computed once per step.
    """

    def __init__(self, model: nn.Module, samples: dict[str, Any]):
        self.model, self.samples = model, samples
        self._features: Optional[Features] = None
        self._prompts: Optional[Prompts] = None
        self._offered: Optional[Callable[[], Prompts]] = None

    @property
    def texts(self) -> Sequence[str]:
        """The batch's ``text_input``: ``B`` strings."""
        return self.samples["text_input"]

    def features(self) -> Features:
        """The visual tokens of the batch's media: ``Features`` ``[B, N, D]`` (the encoder runs once)."""
        if self._features is None:
            self._features = self.model.visual_tokens(self.samples)
        return self._features

    def prompts(self) -> Prompts:
        """The bridge's prompts for the batch's media: ``Prompts`` ``[B, Q, Dllm]`` (computed once)."""
        if self._prompts is None:
            make = self._offered or (lambda: self.model.prompts(self.features()))
            self._prompts = make()
        return self._prompts

    def offer_prompts(self, make: Callable[[], Prompts]) -> None:
        """Where :meth:`prompts` should come from, when an objective's own pass already computed what
        the bridge's forward would: ``make()`` is called on the first request, if any."""
        if self._prompts is None:
            self._offered = make

    def require(self, keys: Sequence[str], reader: str) -> None:
        """An InputError naming ``reader`` unless the batch holds each of ``keys`` (:data:`MEDIA`: any media)."""
        for key in keys:
            if key == MEDIA and not any(k in self.samples for k in (*MEDIA_KEYS, "visual_tokens")):
                raise InputError(f"{reader} reads the batch's media ({', '.join(MEDIA_KEYS)}); the batch holds "
                                 f"{sorted(self.samples)}")
            if key != MEDIA and key not in self.samples:
                raise InputError(f"{reader} reads batch key {key!r}; the batch holds {sorted(self.samples)}")

    def image_ids(self) -> Optional[Tensor]:
        """The batch's ``image_id`` as a ``[B]`` int64 tensor on the features' device, or None."""
        return id_tensor(self.samples.get("image_id"), self.features().tokens.device)
