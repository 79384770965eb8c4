"""Keep timm and transformers importable when torchvision's build does not match torch's.

The only torchvision wheel for torch 2.13.0 on PyPI is a CUDA build. On a CPU-only
torch its compiled ops fail to load, and ``import torchvision`` then raises
``RuntimeError: operator torchvision::nms does not exist`` while registering
Python fallbacks for them. timm and every transformers model class import
torchvision, so both break.

Defining the schemas of the ops torchvision registers before it is first imported
lets its pure-Python parts load. vlreg never needs the compiled ops themselves.

``import vlreg`` installs a one-shot import hook: when anything first imports
torchvision, the hook compares the local version tags of the installed torch and
torchvision (``2.13.0+cpu`` vs ``0.28.0``, a CUDA build) and only on a mismatch
defines the schemas. A matching install is left untouched. The environment
variable ``VLREG_TORCHVISION_SHIM`` forces the choice (``1``/``0``; default ``auto``).
"""

from __future__ import annotations

import importlib.abc
import os
import sys

_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the torch.library.Library must stay alive, or its definitions vanish


def local_tag(version: str) -> str:
    """The local part of a version: ``'2.13.0+cpu'`` -> ``'cpu'``, ``'0.28.0'`` -> ``''``."""
    return version.partition("+")[2]


def builds_mismatch(torch_version: str, torchvision_version: str) -> bool:
    """Whether torch and torchvision come from different builds (CPU vs CUDA)."""
    return local_tag(torch_version) != local_tag(torchvision_version)


def shim_needed() -> bool:
    """Decide, from the installed distributions, whether torchvision needs the op schemas."""
    import importlib.metadata

    forced = os.environ.get("VLREG_TORCHVISION_SHIM", "auto").lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    try:
        return builds_mismatch(importlib.metadata.version("torch"), importlib.metadata.version("torchvision"))
    except importlib.metadata.PackageNotFoundError:
        return False


def define_torchvision_op_schemas() -> bool:
    """Define torchvision's op schemas unless they exist; True when this call defined them."""
    global _library
    import torch

    if hasattr(torch.ops.torchvision, "nms"):
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _OP_SCHEMAS:
        _library.define(schema)
    return True


class TorchvisionGuard(importlib.abc.MetaPathFinder):
    """A meta-path hook that runs once, just before torchvision is first imported."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102 - importlib protocol
        if fullname == "torchvision":
            uninstall_guard()
            if shim_needed():
                define_torchvision_op_schemas()
        return None  # let the normal finders import it


def install_guard() -> None:
    """Install the hook unless torchvision was imported already."""
    if "torchvision" in sys.modules or any(isinstance(f, TorchvisionGuard) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, TorchvisionGuard())


def uninstall_guard() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, TorchvisionGuard)]
