"""Weight files from elsewhere: read them without running their code, and fingerprint them.

A torch pickle can run arbitrary code when it is unpickled, so ``.pth``/``.pt``/``.bin``
files are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers only and refuses anything else. ``.safetensors`` files hold tensors alone.

Fingerprints (``sha256``) identify the bytes frozen weights were loaded from; the
checkpoint protocol (:mod:`vlreg.runner.checkpoint`) records them instead of the weights.
A file is hashed once per process (memoised on its path, size and modification time).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from ..errors import ConfigError, needs_code, torch_load_reason, unpickling_failure

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
NESTING_KEYS = ("model", "state_dict", "module")
"""Keys under which training code commonly nests a state dict (LAVIS: ``{"model": ...}``)."""

_digests: dict[tuple[str, int, int], str] = {}


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a weights file, by name: ``.safetensors`` or a torch pickle read with ``weights_only=True``.

    A pickle that nests its state dict under ``model``, ``state_dict`` or ``module`` is
    unwrapped; other entries beside it (an epoch, a config) are ignored. A file that would
    need code to unpickle, or holds no flat mapping of names to tensors, is a ConfigError.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        content: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles that would run code, truncated or foreign files
        if needs_code(exc):
            raise ConfigError(unpickling_failure(exc, repr(str(path)))) from None
        raise ConfigError(f"cannot read checkpoint {str(path)!r} safely ({type(exc).__name__}): "
                          f"{torch_load_reason(exc)}") from None
    while isinstance(content, Mapping) and not _is_state(content):
        nested = [key for key in NESTING_KEYS if isinstance(content.get(key), Mapping)]
        if not nested:
            break
        content = content[nested[0]]
    if not isinstance(content, Mapping) or not _is_state(content):
        raise ConfigError(f"checkpoint {str(path)!r} holds no state dict (a mapping of names to tensors)")
    return dict(content)


def _is_state(mapping: Mapping) -> bool:
    return bool(mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in mapping.items())


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes (hashed once per process while the file is unchanged)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
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
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def weight_files(directory: str | os.PathLike) -> list[Path]:
    """The weight files of a transformers checkpoint directory: its safetensors files, else its pickles."""
    directory = Path(directory)
    safetensors = sorted(directory.glob("*.safetensors"))
    if safetensors:
        return safetensors
    return sorted(p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())


def sha256_tensors(state: Mapping[str, Tensor]) -> str:
    """The sha256 of a state dict's content: every name, dtype, shape and the bytes, in name order.

    For weights that arrive without a file of their own (e.g. through a library's download cache).
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
