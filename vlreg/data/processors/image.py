"""Image processors: a JPEG/PNG file (or its bytes) to a normalised ``[3, H, W]`` float32 tensor.

Implemented with PIL, numpy and torch only (torchvision's compiled ops are not
available on every machine vlreg runs on). Random choices (crop box, flip) draw
from torch's global RNG, which DataLoader seeds per worker, so a run is
reproducible from its seed.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import numpy as np
import torch

from ...build import Positive
from ...errors import ConfigError
from ...registry import register
from ..media import BadMedia
from . import CLIP_MEAN, CLIP_STD, MediaProcessor


def normalize(pixels: np.ndarray, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
    """uint8 pixels ``[..., H, W, 3]`` to float32 ``[..., 3, H, W]``: ``(x / 255 - mean) / std``.

    One conversion into the channel-first output, then the arithmetic in place (no temporaries).
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    x = torch.empty(pixels.shape[:-3] + (3,) + pixels.shape[-3:-1], dtype=torch.float32)
    np.copyto(x.numpy(), np.moveaxis(pixels, -1, -3))
    channel = (3, 1, 1)
    x.div_(255.0).sub_(torch.tensor(mean, dtype=torch.float32).view(channel))
    return x.div_(torch.tensor(std, dtype=torch.float32).view(channel))


def open_image(source: str | os.PathLike | bytes | Any) -> Any:
    """A fully decoded RGB ``PIL.Image`` from a path, encoded bytes or a PIL image; BadMedia if unusable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not os.path.isfile(source):
        raise BadMedia(label, "file not found")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        image.load()
    except UnidentifiedImageError:
        raise BadMedia(label, "not a readable image") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise BadMedia(label, f"cannot decode: {exc}") from None
    return image.convert("RGB")


class ImageProcessor(MediaProcessor):
    """Shared by the image processors: open, ``transform`` to a square, normalise."""

    modality = "image"

    def __init__(self, image_size: Positive = 224, mean: tuple[float, float, float] = CLIP_MEAN,
                 std: tuple[float, float, float] = CLIP_STD):
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    def __call__(self, source: str | os.PathLike | bytes | Any) -> torch.Tensor:
        """A path, JPEG/PNG bytes or a PIL image -> float32 ``[3, image_size, image_size]``."""
        image = self.transform(open_image(source))
        return normalize(np.asarray(image, dtype=np.uint8), self.mean, self.std)

    def transform(self, image: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@register("processor", "image_eval")
class ImageEvalProcessor(ImageProcessor):
    """Evaluation images: bicubic resize to a square, CLIP normalisation; ``[3, S, S]`` float32.

    Args:
        image_size: S, the output height and width.
        mean, std: per-channel normalisation (default CLIP's).
    """

    deterministic = True

    def transform(self, image: Any) -> Any:
        from PIL import Image

        return image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)


@register("processor", "image_train")
class ImageTrainProcessor(ImageProcessor):
    """Training images: random resized crop and horizontal flip, CLIP normalisation; ``[3, S, S]``.

    The crop covers a random share ``scale`` of the image area with an aspect ratio
    drawn log-uniformly from ``ratio``, and is resized (bicubic) to S x S.

    A horizontal flip turns "left" into "right" without changing the caption; BLIP-2
    flips anyway, but data whose text names positions (the synthetic world) should
    set ``hflip: false``.

    Args:
        image_size: S, the output height and width.
        scale: the range of the crop's share of the image area.
        ratio: the range of the crop's width / height.
        hflip: flip half of the images left-right.
        mean, std: per-channel normalisation (default CLIP's).
    """

    def __init__(self, image_size: Positive = 224, scale: tuple[float, float] = (0.5, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True,
                 mean: tuple[float, float, float] = CLIP_MEAN, std: tuple[float, float, float] = CLIP_STD):
        super().__init__(image_size, mean, std)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"image_train: scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"image_train: ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """A random ``(left, top, right, bottom)`` box; the whole image when no draw fits."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(torch.randint(0, width - w + 1, ()))
                top = int(torch.randint(0, height - h + 1, ()))
                return left, top, left + w, top + h
        return 0, 0, width, height

    def transform(self, image: Any) -> Any:
        from PIL import Image

        box = self.crop_box(*image.size)
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, box=box)
        if self.hflip and bool(torch.rand(()) < 0.5):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))
