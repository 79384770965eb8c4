"""A video encoder: any image encoder applied to every frame, plus learned temporal embeddings."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn

from ...build import component
from ...errors import ConfigError
from ...registry import register
from ..base import Encoder, Features
from . import check_media, encoding


@register("encoder", "video")
class VideoEncoder(Encoder):
    """Videos ``[B, T, 3, H, W]`` -> frame tokens plus a learned embedding per frame position.

    All ``B*T`` frames go through the frame encoder as one batch of images, giving
    ``[B, T, N, D]``; the temporal embedding ``[T, D]`` (zeros at first, so a pretrained
    image encoder starts out unchanged) is added to every token of frame ``t``.

    Args:
        frame_encoder: an image encoder node (``timm_vit``, ``eva_vit_g``, ...); it decides
            whether the frame weights are frozen and their precision.
        num_frames: T, the number of frames every video has.
        output: ``"all"``: every token of every frame, ``[B, T*N, D]`` (frame-major);
            ``"pooled"``: one token per frame, the mean of its tokens, ``[B, T, D]``.
        frozen: freeze the temporal embedding too, and the frame encoder with it. By default
            the temporal embedding trains even when the frame encoder is frozen.

    ``forward`` takes an optional frame mask ``[B, T]`` (False for padding frames of a short
    video); the tokens of a masked frame are masked in the output.
    """

    modality = "video"

    def __init__(
        self,
        frame_encoder: component("encoder", Encoder),
        num_frames: int,
        output: Literal["all", "pooled"] = "all",
        frozen: bool = False,
    ):
        super().__init__()
        if getattr(frame_encoder, "modality", None) != "image":
            raise ConfigError(f"video: frame_encoder must be an image encoder, got {type(frame_encoder).__name__} "
                              f"of modality {getattr(frame_encoder, 'modality', None)!r}")
        if num_frames < 1:
            raise ConfigError(f"video: num_frames must be at least 1, got {num_frames}")
        self.frame_encoder = frame_encoder
        self.num_frames, self.output = num_frames, output
        self.width: int = frame_encoder.width
        self.num_tokens: int = num_frames * (frame_encoder.num_tokens if output == "all" else 1)
        self.temporal_embedding = nn.Parameter(torch.zeros(num_frames, self.width))
        # frozen as a whole: keep the frame encoder's precision, so its weights are not recast
        self.configure_frozen(frozen, frame_encoder.precision if frozen else "fp32")

    def forward(self, media: Tensor, mask: Optional[Tensor] = None) -> Features:
        """Videos ``[B, T, 3, H, W]`` (+ frame mask ``[B, T]``) -> ``[B, T*N, D]`` or ``[B, T, D]`` float32."""
        with encoding(self, media):
            return self.from_frozen(self.frame_tokens(media, mask))

    def frame_tokens(self, media: Tensor, mask: Optional[Tensor] = None) -> Features:
        """The frame encoder's tokens of every frame: ``[B, T*N, D]`` (frame-major), masked on padding frames.

        Only the frame encoder's weights take part, so when it is frozen this is what the
        frozen-feature cache stores (see :meth:`from_frozen`).
        """
        check_media("video encoder", media, B=None, T=self.num_frames, C=3, H=None, W=None)
        batch, frames = media.shape[:2]
        per_frame = self.frame_encoder(media.flatten(0, 1))  # one batch of B*T images
        tokens = per_frame.tokens.unflatten(0, (batch, frames))  # [B, T, N, D]
        token_mask = None if per_frame.mask is None else per_frame.mask.unflatten(0, (batch, frames))
        if mask is not None:
            check_media("video encoder's frame mask", mask, B=batch, T=frames)
            frame_mask = mask.bool()[:, :, None].expand(tokens.shape[:3])
            token_mask = frame_mask if token_mask is None else token_mask & frame_mask
        return Features(tokens.flatten(1, 2), None if token_mask is None else token_mask.flatten(1, 2))

    def from_frozen(self, frames: Features) -> Features:
        """:meth:`frame_tokens` ``[B, T*N, D]`` -> the output: temporal embedding added, then all tokens or per-frame means."""
        tokens = frames.tokens.unflatten(1, (self.num_frames, -1))  # [B, T, N, D]
        tokens = tokens + self.temporal_embedding.to(tokens.dtype)[:, None, :]
        token_mask = None if frames.mask is None else frames.mask.unflatten(1, (self.num_frames, -1))
        if self.output == "pooled":
            frame_mask = None if token_mask is None else token_mask.any(dim=2)
            return Features(self._frame_means(tokens, token_mask).float(), frame_mask)
        return Features(tokens.flatten(1, 2).float(), frames.mask)

    def frozen_stage(self) -> Optional[Encoder]:
        """The frame encoder when it alone is frozen (the temporal embedding trains); see :class:`Encoder`."""
        if self.frozen:
            return self
        return self.frame_encoder if self.frame_encoder.frozen else None

    def encode_frozen(self, media: Tensor, mask: Optional[Tensor] = None) -> Features:
        return self(media, mask) if self.frozen else self.frame_tokens(media, mask)

    @staticmethod
    def _frame_means(tokens: Tensor, token_mask: Optional[Tensor]) -> Tensor:
        """``[B, T, N, D]`` (+ ``[B, T, N]`` mask) -> ``[B, T, D]``: the mean of each frame's real tokens."""
        if token_mask is None:
            return tokens.mean(dim=2)
        weights = token_mask.to(tokens.dtype)[..., None]
        return (tokens * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1)

    def example_input(self, batch_size: int = 2, device: torch.device | str = "cpu") -> tuple[Tensor, None]:
        """Zero videos ``[batch_size, T, 3, H, W]`` (H, W: the frame encoder's) and no mask."""
        frames, _ = self.frame_encoder.example_input(batch_size * self.num_frames, device)
        return frames.unflatten(0, (batch_size, self.num_frames)), None
