"""Collectives that are no-ops without a process group.

One process or many, the same code runs: every helper here works whether or not
``torch.distributed`` was initialised (by torchrun). Nothing in vlreg requires a
process group.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(out, tensor.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(world_size(), dim=0)[rank()]


def all_gather(tensor: Tensor, with_grad: bool = False) -> Tensor:
    """Concatenate ``tensor`` ``[b, ...]`` from every rank along dim 0: ``[world*b, ...]``.

    With ``with_grad``, gradients flow back to every rank's own slice (contrastive
    losses with negatives from other ranks). Without a process group, returns ``tensor``.
    """
    if world_size() == 1:
        return tensor
    if with_grad:
        return _GatherWithGrad.apply(tensor)
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over ranks (a copy; the input is left alone)."""
    if world_size() == 1:
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor)
    return tensor / world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable objects)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
