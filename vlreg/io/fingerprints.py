"""Fingerprints: the sha256 of a file, of a set of files, of tensors and of text.

Checkpoints record frozen weights by fingerprint instead of copying them
(:mod:`vlreg.io.sources`), checkpoint files are verified against theirs
(:mod:`vlreg.io.checkpoints`), and the feature cache keys its entries by them. A file is
hashed once per process while it is unchanged (memoised on its path, size and
modification time).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from torch import Tensor

_BLOCK = 1 << 24
_digests: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def sha256_files(paths: Iterable[str | os.PathLike]) -> str:
    """One digest for a set of files: sha256 over ``name sha256`` lines, sorted by file name.

    A sharded checkpoint (``model-00001-of-00002.safetensors`` ...) gets one fingerprint
    that changes when any shard, or the set of shards, changes.
    """
    lines = sorted(f"{Path(p).name} {sha256_file(p)}\n" for p in paths)
    if not lines:
        raise ValueError("sha256_files needs at least one file")
    return sha256_text("".join(lines))


def sha256_tensors(state: Mapping[str, "Tensor"]) -> str:
    """The sha256 of a state dict's content: every name, dtype, shape and the bytes, in name order.

    For weights that arrive without a file of their own (a library's download cache,
    random weights from a seed).
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """The sha256 hex digest of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()
