"""Video processors: an mp4 file to a normalised ``[T, 3, S, S]`` float32 tensor.

Frames are decoded by decord, resized to S x S at decode time (the aspect ratio is
not kept, as in BLIP-2/ALPRO video pipelines) and CLIP-normalised. The frame
choice is described in :mod:`vlreg.data.video`.
"""

from __future__ import annotations

import os

import torch

from ...build import Positive
from ...registry import register
from ..video import Sampling, read_frames
from . import CLIP_MEAN, CLIP_STD, MediaProcessor
from .image import normalize


class VideoProcessor(MediaProcessor):
    """Decode ``num_frames`` frames with a sampling rule, resize, normalise."""

    modality = "video"

    def __init__(self, image_size: Positive = 224, num_frames: Positive = 8, sampling: Sampling = "uniform",
                 mean: tuple[float, float, float] = CLIP_MEAN, std: tuple[float, float, float] = CLIP_STD):
        self.image_size, self.num_frames, self.sampling = image_size, num_frames, sampling
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def deterministic(self) -> bool:
        """Only "uniform" sampling picks the same frames every time."""
        return self.sampling == "uniform"

    def __call__(self, source: str | os.PathLike) -> torch.Tensor:
        """A video path -> float32 ``[num_frames, 3, image_size, image_size]``."""
        frames = read_frames(source, self.num_frames, self.sampling, width=self.image_size, height=self.image_size)
        return normalize(frames, self.mean, self.std)


@register("processor", "video_eval")
class VideoEvalProcessor(VideoProcessor):
    """Evaluation videos: ``num_frames`` frames (default "uniform"), S x S, CLIP-normalised; ``[T, 3, S, S]``.

    Args:
        image_size: S, the frames' height and width after decoding.
        num_frames: T; shorter videos repeat their last frame.
        sampling: "uniform" (segment middles), "random" (one per segment) or "headtail".
        mean, std: per-channel normalisation (default CLIP's).
    """


@register("processor", "video_train")
class VideoTrainProcessor(VideoProcessor):
    """Training videos: ``num_frames`` frames (default "random", one per segment), S x S; ``[T, 3, S, S]``.

    Args:
        image_size: S, the frames' height and width after decoding.
        num_frames: T; shorter videos repeat their last frame.
        sampling: "random" (one random frame per segment), "headtail" or "uniform".
        mean, std: per-channel normalisation (default CLIP's).
    """

    def __init__(self, image_size: Positive = 224, num_frames: Positive = 8, sampling: Sampling = "random",
                 mean: tuple[float, float, float] = CLIP_MEAN, std: tuple[float, float, float] = CLIP_STD):
        super().__init__(image_size, num_frames, sampling, mean, std)
