"""Video decoding with decord, and the choice of which frames to decode.

``frame_indices(n, T, sampling)`` picks T of a video's n frames:

- ``"uniform"``: the middle frame of each of T equal segments (deterministic; evaluation);
- ``"random"``: one random frame in each of T equal segments (training);
- ``"headtail"``: ceil(T/2) distinct random frames from the first ceil(n/2) frames and
  floor(T/2) from the rest, each part sorted (training, as in ALPRO/LAVIS).

A video with fewer than T frames gives all its frames, then its last frame
repeated up to T, whatever the sampling. Random draws use torch's RNG (or the
given generator), which DataLoader seeds per worker.

``read_frames`` decodes those frames, resized at decode time, as uint8
``[T, H, W, 3]``; any file that cannot be used raises
:class:`~vlreg.data.media.BadMedia`.
"""

from __future__ import annotations

import os
import re
import typing
from typing import Literal, Optional

import numpy as np
import torch

from .media import BadMedia

Sampling = Literal["uniform", "headtail", "random"]
SAMPLINGS = typing.get_args(Sampling)
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[18:23:01] /src/video/video_reader.cc:83: "


def frame_indices(num_total: int, num_frames: int, sampling: Sampling = "uniform",
                  generator: Optional[torch.Generator] = None) -> list[int]:
    """``num_frames`` frame indices in ``[0, num_total)``, in playback order (see the module docstring)."""
    if num_total < 1 or num_frames < 1:
        raise ValueError(f"need at least one frame, got num_total={num_total}, num_frames={num_frames}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if num_total <= num_frames:
        return list(range(num_total)) + [num_total - 1] * (num_frames - num_total)
    if sampling == "headtail":
        split = (num_total + 1) // 2
        head = _distinct(0, split, (num_frames + 1) // 2, generator)
        tail = _distinct(split, num_total, num_frames // 2, generator)
        return head + tail
    starts = [i * num_total // num_frames for i in range(num_frames + 1)]
    if sampling == "uniform":
        return [(starts[i] + starts[i + 1] - 1) // 2 for i in range(num_frames)]
    return [starts[i] + int(torch.randint(0, starts[i + 1] - starts[i], (), generator=generator))
            for i in range(num_frames)]


def _distinct(lo: int, hi: int, k: int, generator: Optional[torch.Generator]) -> list[int]:
    """``k`` distinct random integers in ``[lo, hi)``, sorted."""
    return sorted(lo + int(i) for i in torch.randperm(hi - lo, generator=generator)[:k])


def read_frames(path: str | os.PathLike, num_frames: int, sampling: Sampling = "uniform",
                width: int = -1, height: int = -1, generator: Optional[torch.Generator] = None) -> np.ndarray:
    """Decode ``num_frames`` frames of a video: uint8 ``[T, height, width, 3]``.

    ``width``/``height`` resize at decode time (-1 keeps the video's size). Raises
    BadMedia for a missing, empty, truncated or undecodable file, or one without frames.

    decord 0.6 cannot output a few widths (2-4, 6, 8, 12, 16, 24, 48, 72 pixels: its
    copy out of ffmpeg's padded frame fails); for those, frames are decoded at the
    next multiple of 32 and resized to ``width`` (bicubic).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise BadMedia(path, "file not found")
    if os.path.getsize(path) == 0:
        raise BadMedia(path, "empty file")
    reader = _open(path, width, height)
    total = len(reader)
    if total == 0:
        raise BadMedia(path, "no frames")
    indices = frame_indices(total, num_frames, sampling, generator)
    unique = sorted(set(indices))
    try:
        frames = _get_batch(reader, unique, path)
    except _PaddedWidth:
        if width <= 0:
            raise BadMedia(path, "decord cannot output this video's width; give a width") from None
        wider = _get_batch(_open(path, -(-width // 32) * 32, height), unique, path)
        frames = _resize_width(wider, width)
    position = {index: i for i, index in enumerate(unique)}
    return frames[[position[i] for i in indices]]


class _PaddedWidth(Exception):
    """decord's copy of a frame whose rows ffmpeg padded failed (it depends on the width only)."""


def _open(path: str, width: int, height: int):
    import decord

    try:
        return decord.VideoReader(path, width=width, height=height, num_threads=1)
    except Exception as exc:  # decord reports every failure as a (DECORD)RuntimeError
        raise BadMedia(path, f"cannot open video: {_first_line(exc)}") from None


def _get_batch(reader, indices: list[int], path: str) -> np.ndarray:
    try:
        return reader.get_batch(indices).asnumpy()
    except Exception as exc:
        if "DECORDArrayCopyFromTo" in str(exc):
            raise _PaddedWidth() from None
        raise BadMedia(path, f"cannot decode frames {indices}: {_first_line(exc)}") from None


def _resize_width(frames: np.ndarray, width: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 -> ``[T, H, width, 3]`` (bicubic)."""
    from PIL import Image

    height = frames.shape[1]
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in frames])


def _first_line(exc: BaseException) -> str:
    """decord's message without its time stamp and source location."""
    lines = str(exc).strip().splitlines()
    return _DECORD_PREFIX.sub("", lines[0] if lines else type(exc).__name__)[:200]
