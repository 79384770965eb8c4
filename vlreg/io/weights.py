"""Weight files: read without running their code, written durably.

A torch pickle can run arbitrary code when it is unpickled, so ``.pth``/``.pt``/``.bin``
files are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers only and refuses anything else. ``.safetensors`` files hold tensors alone,
and are what vlreg writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..errors import ConfigError, needs_code, torch_load_reason, unpickling_failure
from .files import fsync_path, raise_os_error

if TYPE_CHECKING:
    from torch import Tensor

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
NESTING_KEYS = ("model", "state_dict", "module")
"""Keys under which training code commonly nests a state dict (LAVIS: ``{"model": ...}``)."""


def read_weights(path: str | os.PathLike) -> dict[str, "Tensor"]:
    """The tensors of a weights file, by name: ``.safetensors`` or a torch pickle read with ``weights_only=True``.

    A pickle that nests its state dict under ``model``, ``state_dict`` or ``module`` is
    unwrapped; other entries beside it (an epoch, a config) are ignored. A file that would
    need code to unpickle, or holds no flat mapping of names to tensors, is a ConfigError.
    """
    import torch

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
    from torch import Tensor

    return bool(mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in mapping.items())


def write_weights(tensors: Mapping[str, "Tensor"], path: str | os.PathLike,
                  metadata: Optional[dict[str, str]] = None) -> None:
    """Write tensors to a ``.safetensors`` file and fsync it; a full disk is an OSError that names ``path``.

    Tensors that share or slice storage are refused by safetensors: pass contiguous copies.
    """
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata=metadata)
    except Exception as exc:  # safetensors reports a full disk as its own error
        raise_os_error(exc, path)
    fsync_path(path)


def weight_files(directory: str | os.PathLike) -> list[Path]:
    """The weight files of a transformers checkpoint directory: its safetensors files, else its pickles."""
    directory = Path(directory)
    safetensors = sorted(directory.glob("*.safetensors"))
    if safetensors:
        return safetensors
    return sorted(p for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
