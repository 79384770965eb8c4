"""AdamW parameter groups (weight decay, layer-wise learning-rate decay) and the warmup + cosine schedule.

Weight decay. A trainable parameter gets no weight decay when any of these holds:

- it has fewer than 2 dimensions (biases, norm scales, scalar gates);
- it belongs to an ``nn.Embedding`` or a normalisation module (a class whose name
  contains ``Norm``: LayerNorm, RMSNorm, GroupNorm, BatchNorm, ...);
- its own attribute name says it is a learned token or position table: it contains
  ``token`` or ``embed`` or starts with ``pos`` (``query_tokens``, ``cls_token``,
  ``pos_embed``, ``positional_embedding``).

The rule looks at module types and attribute names, not at substrings of the whole
path, so ``patch_embed.proj.weight`` (a convolution) is decayed while
``pos_embed`` is not.

Layer ids (for layer-wise decay). A parameter whose name contains ``layer.N``,
``layers.N`` or ``blocks.N`` as dotted components (``qformer.encoder.layer.3.…``,
``blocks.11.attn.qkv.weight``, ``model.layers.0.…``) is in layer ``N + 1``;
parameters before the stack (a component containing ``embed``, or ending in
``token``/``tokens``) are in layer 0; everything else (heads, final norms,
projections) is in layer ``L + 1``, where ``L`` is the number of layers (the
largest ``N`` plus one). With ``layer_decay = d``, a parameter in layer ``i``
learns at ``lr * d ** (L + 1 - i)``. A model with several trainable stacks of
layers shares one numbering; a task that wants otherwise overrides
``parameter_groups(model)``.

Schedule. Per optimizer step ``s`` (0-based), with ``W`` warmup steps and ``T``
steps in all::

    lr(s) = warmup_start_lr + (lr - warmup_start_lr) * s / W             for s < W
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2  for s >= W

and every group runs at ``lr(s) * lr_scale`` (its layer-decay factor).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Optional

import torch
from torch import nn

from ..errors import ConfigError

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|blocks)\.(\d+)(?:\.|$)")
_BEFORE_STACK = re.compile(r"(?:^|\.)[^.]*(?:embed[^.]*|tokens?)(?:\.|$)")


def layer_index(name: str) -> Optional[int]:
    """``N`` of the first ``layer.N`` / ``layers.N`` / ``blocks.N`` in a dotted name, else None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def layer_id(name: str, num_layers: int) -> int:
    """0 before the stack of layers, ``N + 1`` in layer ``N``, ``num_layers + 1`` after it."""
    index = layer_index(name)
    if index is not None:
        return index + 1
    if _BEFORE_STACK.search(name):
        return 0
    return num_layers + 1


def decays(name: str, param: nn.Parameter, owner: nn.Module) -> bool:
    """Whether weight decay applies to a parameter (see the module docstring)."""
    attribute = name.rsplit(".", 1)[-1]
    if param.ndim < 2 or isinstance(owner, nn.Embedding) or "Norm" in type(owner).__name__:
        return False
    return not ("token" in attribute or "embed" in attribute or attribute.startswith("pos"))


def parameter_groups(model: nn.Module, weight_decay: float, layer_decay: Optional[float] = None) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` in AdamW groups.

    Each group holds ``params``, ``names``, ``weight_decay`` and ``lr_scale`` (the
    layer-decay factor, 1.0 without layer decay). Frozen parameters are left out.
    """
    owners = {name: module for name, module in model.named_modules()}
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("the model has no trainable parameters (everything is frozen): nothing to train")
    indices = [layer_index(name) for name, _ in trainable]
    num_layers = max((i + 1 for i in indices if i is not None), default=0)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in trainable:
        owner = owners[name.rpartition(".")[0]]
        decay = decays(name, param, owner)
        lid = layer_id(name, num_layers) if layer_decay is not None else num_layers + 1
        scale = layer_decay ** (num_layers + 1 - lid) if layer_decay is not None else 1.0
        group = groups.setdefault((lid, decay), {
            "params": [], "names": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale,
            "name": f"layer{lid}_{'decay' if decay else 'no_decay'}" if layer_decay is not None
            else ("decay" if decay else "no_decay"),
        })
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def complete_groups(groups: Iterable[dict[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """Fill what a task's own ``parameter_groups`` left out: ``weight_decay``, ``lr_scale``, ``name``."""
    completed = []
    for i, group in enumerate(groups):
        group = dict(group)
        group["params"] = [p for p in group["params"] if p.requires_grad]
        group.setdefault("weight_decay", weight_decay)
        group.setdefault("lr_scale", 1.0)
        group.setdefault("name", f"group{i}")
        if group["params"]:
            completed.append(group)
    if not completed:
        raise ConfigError("the task's parameter_groups(model) returned no trainable parameters")
    return completed


def build_optimizer(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float) -> torch.optim.AdamW:
    """AdamW over the groups; the schedule sets each group's ``lr`` before every step.

    The update is torch's fused kernel (one pass over each parameter and its state instead
    of a dozen elementwise ops) when every parameter is a plain floating-point tensor on the
    CPU or a GPU; otherwise (sharded parameters of FSDP2, other devices) torch's default.
    """
    params = [p for group in groups for p in group["params"]]
    fused = all(type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


class WarmupCosine:
    """Linear warmup then cosine decay, applied to every group as ``lr(step) * lr_scale``.

    ``step()`` advances one optimizer step. The state is the step count alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_start_lr: float = 0.0, min_lr: float = 0.0):
        self.optimizer = optimizer
        self.lr, self.min_lr, self.total_steps = lr, min_lr, total_steps
        self.warmup_steps, self.warmup_start_lr = warmup_steps, warmup_start_lr
        self.steps = 0
        self.apply()

    def lr_at(self, step: int) -> float:
        """The base learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self) -> None:
        base = self.lr_at(self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = base * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.steps += 1
        self.apply()

    def state_dict(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.steps = int(state["steps"])
        self.apply()
