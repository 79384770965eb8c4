"""Process groups from torchrun, DDP / FSDP2 wrapping, and the sharded evaluation sampler.

One process or many, the runner runs the same code: without torchrun's
environment (``WORLD_SIZE`` unset or 1) no process group is created and every
collective is a no-op (:mod:`vlreg.distributed`).

Launching
---------
One machine, 8 GPUs::

    torchrun --nproc_per_node=8 -m vlreg.run --cfg projects/blip2/stage1.yaml

Several machines (run the same command on each; ``$HEAD`` is the address of one
of them, reachable from all; the job id names the rendezvous)::

    torchrun --nnodes=4 --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 --rdzv_id=$JOB_ID \\
        -m vlreg.run --cfg projects/blip2/stage1.yaml run.distributed=fsdp

``--nnodes=2:4`` makes the job elastic (it starts with 2 to 4 machines, and
torchrun restarts every process when one fails, up to ``--max-restarts``; with
``run.resume: auto`` the restarted run continues from its newest checkpoint).
``run.batch_size`` stays the global batch: it must be divisible by
``nnodes * nproc_per_node * accum_steps``. CPUs train with the gloo backend, GPUs
with NCCL; ``output_dir`` must be on a file system every machine sees for resume
(rank 0 writes checkpoints and reads them back, then broadcasts).

DDP or FSDP2
------------
``distributed: ddp`` replicates the model and all-reduces gradients.
``distributed: fsdp`` applies FSDP2's ``fully_shard`` to every block of a stack
(modules named ``….layer.N`` / ``….layers.N`` / ``….blocks.N`` whose parameters
share one dtype) and then to the whole model, so parameters, gradients and
optimizer state are sharded; frozen parameters outside the blocks stay
replicated. Checkpoints hold full (unsharded) tensors either way.
"""

from __future__ import annotations

import atexit
import gc
import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from .. import distributed as collectives
from ..errors import ConfigError

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|blocks)\.\d+$")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(timeout_minutes: float = 30.0) -> DistEnv:
    """Join torchrun's process group when launched by it (gloo on CPU, NCCL on CUDA).

    Idempotent: a process group that exists is used as it is. Without torchrun's
    environment, returns rank 0 of 1 and creates nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not collectives.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
        atexit.register(_destroy)
    return DistEnv(collectives.rank(), collectives.world_size(), local_rank, device)


def _destroy() -> None:
    """At exit: wait for every rank, then take the process group down together (a rank that
    tears its group down while a peer still uses it can abort the peer).

    Models left in reference cycles (FSDP2's hooks make them) are collected first, while the
    interpreter is whole: gloo work they hold, freed later during the interpreter's teardown,
    aborts the process."""
    if collectives.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


class TaskStep(nn.Module):
    """The model and a task's ``train_step`` as one module, so that a training step runs
    through ``forward``, where DDP and FSDP2 hook their communication in.

    ``forward(batch) -> dict[str, Tensor]`` is ``task.train_step(model, batch)``.
    """

    def __init__(self, model: nn.Module, task: Any):
        super().__init__()
        self.model = model
        object.__setattr__(self, "task", task)  # never a submodule, even when the task is an nn.Module

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.task.train_step(self.model, batch)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (FSDP2 does not do it itself)."""
    if not collectives.is_initialized():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def wrap(step: TaskStep, mode: Literal["ddp", "fsdp"], env: DistEnv, find_unused_parameters: bool = False) -> nn.Module:
    """``step`` wrapped for data parallelism; ``step`` itself in one process."""
    if env.world_size == 1:
        return step
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(step, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                       find_unused_parameters=find_unused_parameters)
    if mode == "fsdp":
        return _fully_shard(step)
    raise ConfigError(f"run.distributed must be 'ddp' or 'fsdp', got {mode!r}")


def _fully_shard(step: TaskStep) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    broadcast_module(step)
    sharded: set[nn.Parameter] = set()
    blocks = [m for name, m in step.named_modules() if _BLOCK.search(name)]
    for block in reversed(blocks):  # innermost first
        params = [p for p in block.parameters() if p not in sharded]
        if params and len({p.dtype for p in params}) == 1:
            fully_shard(block)
            sharded.update(block.parameters())
    frozen_rest = {p for p in step.parameters() if not p.requires_grad and p not in sharded}
    fully_shard(step, ignored_params=frozen_rest or None)
    return step


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter inside the block unless ``enabled``
    (the inner micro-steps of gradient accumulation)."""
    if enabled:
        yield
    elif isinstance(wrapped, nn.parallel.DistributedDataParallel):
        with wrapped.no_sync():
            yield
    elif is_fsdp(wrapped):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


@contextlib.contextmanager
def gathered_parameters(wrapped: nn.Module) -> Iterator[None]:
    """Make an FSDP2 model's top-level parameters whole for calls that bypass ``forward``
    (evaluation calls the model's own methods); blocks gather themselves when called."""
    if not is_fsdp(wrapped):
        yield
        return
    wrapped.unshard()
    try:
        yield
    finally:
        wrapped.reshard()


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered into a plain tensor (a collective); other tensors unchanged."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class ShardedEvalSampler(Sampler[int]):
    """Rank ``r`` of ``W`` gets the contiguous indices ``[r*n//W, (r+1)*n//W)``: disjoint,
    covering the dataset exactly once (no padding duplicates), in dataset order when
    concatenated over ranks. Slices differ in length by at most one."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.start = rank * length // world_size
        self.stop = (rank + 1) * length // world_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))


def gather_in_order(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order, on every rank.

    With :class:`ShardedEvalSampler` slices this is the dataset's order, each item
    once. Without a process group, ``items`` itself.
    """
    parts = collectives.all_gather_objects(list(items))
    return [item for part in parts for item in part]
