"""Build a model's skeleton without its weights, then give it the weights of another checkpoint.

Converting a 3.7B-parameter BLIP-2 should not build (and randomly initialise) a second
3.7B-parameter model first. Inside :func:`parameters_on_meta` every parameter a module
registers lives on the meta device (no memory, initialisers do nothing), while buffers
stay real, so values computed at construction (position ids, masks) survive.
:func:`assign_weights` then installs the converted tensors as the parameters, sharing
their storage where dtype and device already agree.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside register their parameters on the meta device (buffers stay where they are)."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _listing(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def assign_weights(model: nn.Module, state: Mapping[str, Tensor], origin: str, strict: bool = True) -> list[str]:
    """Make ``state``'s tensors ``model``'s parameters (and copy them into its buffers); returns the keys not set.

    Parameters are replaced, keeping each one's dtype (the tensor is cast to it), device
    (meta parameters go to the CPU) and ``requires_grad``. Tied parameters (one tensor under
    several names) stay tied: the first of their names found in ``state`` sets them all. A
    key of ``state`` the model lacks, or a shape that differs, is a ConfigError naming
    ``origin``; so is a parameter left on the meta device, or any parameter not set when
    ``strict``.
    """
    names: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for key, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(key)
        params[id(param)] = param
    buffers = dict(model.named_buffers(remove_duplicate=False))
    known = {key for keys in names.values() for key in keys} | set(buffers)
    unexpected = sorted(set(state) - known)
    if unexpected:
        raise ConfigError(f"{origin} holds weights the model does not have: {_listing(unexpected)}")

    def checked(key: str, target: Tensor) -> Tensor:
        value = state[key]
        if tuple(value.shape) != tuple(target.shape):
            raise ConfigError(f"{origin}: {key} is {tuple(value.shape)} but the model's is {tuple(target.shape)}")
        device = torch.device("cpu") if target.is_meta else target.device
        return value.detach().to(device=device, dtype=target.dtype)

    unset: list[str] = []
    for ident, keys in names.items():
        found = next((key for key in keys if key in state), None)
        if found is None:
            unset.extend(keys)
            continue
        old = params[ident]
        new = nn.Parameter(checked(found, old), requires_grad=old.requires_grad)
        for key in keys:
            owner, _, attribute = key.rpartition(".")
            setattr(model.get_submodule(owner), attribute, new)
    with torch.no_grad():
        for key, buffer in buffers.items():
            if key in state:
                buffer.copy_(checked(key, buffer))
    meta = sorted(key for key, param in model.named_parameters() if param.is_meta)
    if meta or (strict and unset):
        missing = meta if not strict else sorted(unset)
        raise ConfigError(f"{origin} lacks weights the model needs: {_listing(missing)}")
    return sorted(unset)
