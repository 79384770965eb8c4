"""vlreg: vision-language and video-language models assembled from frozen parts, by name.

``import vlreg`` is light: it imports neither torch's heavy friends (transformers,
timm, decord, pycocoevalcap) nor the built-in components, which register on their
first lookup.
"""

from __future__ import annotations

from typing import Any

from .compat import install_guard

install_guard()

from .errors import ConfigError, DataError, UnknownComponentError, UserError  # noqa: E402
from .registry import KINDS, get, list_components, register, registry  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "ConfigError",
    "DataError",
    "UnknownComponentError",
    "UserError",
    "create",
    "get",
    "list_components",
    "load_model",
    "register",
    "registry",
]


def create(kind: str, node: Any, **defaults: Any) -> Any:
    """Build a component from a config node ``{name: ..., **kwargs}`` or a bare name.

    ``defaults`` fill constructor arguments the node leaves out (see :mod:`vlreg.build`).
    """
    from .build import build

    return build(kind, node, kind, defaults)


def load_model(source: str, **kwargs: Any) -> Any:
    """A ready model (eval mode) from a vlreg checkpoint, a transformers BLIP-2 or a LAVIS file."""
    from .interop import load_model as _load_model

    return _load_model(source, **kwargs)
