"""Frozen weights recorded by source: the ``weight_source`` protocol.

Frozen weights are not copied into every checkpoint. A module may implement::

    def weight_source(self) -> dict | None:
        '''{"source": hub name or file path, "sha256": checksum of the weight file}, or None.'''

``source`` says where the module's frozen weights were loaded from and ``sha256``
is the checksum of those bytes (:mod:`vlreg.io.fingerprints`); compute it once, when
loading, as the call must be cheap. When it returns a dict, the frozen parameters and
buffers of that module's subtree are recorded by source and checksum only. When it
returns None (random weights from a seed, as in tests) or the module does not
implement it, those weights ARE saved, once per run, in ``frozen.safetensors``.
Trainable parameters are always saved, also inside a module that has a source.

A buffer belongs with the weights of the nearest enclosing module that has
parameters: it is trainable state when that module has a trainable parameter,
frozen otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .fingerprints import sha256_file

if TYPE_CHECKING:
    from torch import nn


def file_source(path: str | os.PathLike) -> dict[str, str]:
    """The record of weights loaded from one file: its absolute path and the sha256 of its bytes."""
    return {"source": str(Path(path).expanduser().resolve()), "sha256": sha256_file(path)}


def inside(path: str, prefixes: Any) -> bool:
    """Whether module ``path`` is one of ``prefixes`` or lies under one (``""`` is the root)."""
    return any(p == "" or path == p or path.startswith(p + ".") for p in prefixes)


def source_of(module: "nn.Module") -> Optional[dict[str, str]]:
    """A module's ``weight_source()`` (checked to be None or ``{"source", "sha256"}``); None without one."""
    method = getattr(module, "weight_source", None)
    source = method() if callable(method) else None
    if source is None:
        return None
    if not isinstance(source, dict) or not {"source", "sha256"} <= set(source):
        raise TypeError(f"{type(module).__name__}.weight_source() must return None or "
                        f"{{'source': ..., 'sha256': ...}}, got {source!r}")
    return {"source": str(source["source"]), "sha256": str(source["sha256"])}


def weight_sources(model: "nn.Module") -> dict[str, dict[str, str]]:
    """``{module path: {"source", "sha256"}}`` for every outermost module whose ``weight_source()`` gives one."""
    sources: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        if inside(name, sources):
            continue
        source = source_of(module)
        if source is not None:
            sources[name] = source
    return sources


@dataclass
class WeightLayout:
    """The state-dict keys of a model, sorted into what a checkpoint saves and what it references."""

    trainable: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


def weight_layout(model: "nn.Module") -> WeightLayout:
    """Sort every state-dict key of ``model`` (see the module docstring for the rules)."""
    layout = WeightLayout(sources=weight_sources(model))
    modules = dict(model.named_modules())
    has_trainable = {name: any(p.requires_grad for p in m.parameters()) for name, m in modules.items()}
    has_params = {name: next(m.parameters(), None) is not None for name, m in modules.items()}

    for key, tensor in model.state_dict(keep_vars=True).items():
        owner, _, attribute = key.rpartition(".")
        module = modules[owner]
        if attribute in module._parameters:
            trainable = tensor.requires_grad
        else:  # a buffer: goes with the nearest enclosing module that has parameters
            path = owner
            while not has_params[path] and path:
                path = path.rpartition(".")[0]
            trainable = has_trainable[path]
        if trainable:
            layout.trainable.append(key)
        elif not inside(owner, layout.sources):
            layout.frozen.append(key)
    return layout
