"""What a task's ``evaluate`` gets besides the model and the dataset: :class:`EvalContext`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

import torch
from torch.utils.data import DataLoader

from .data import eval_loader, to_device
from .distributed_setup import DistEnv, gather_in_order

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> ContextManager:
    """``torch.autocast`` for bf16 / fp16, a no-op context for fp32."""
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


@dataclass
class EvalContext:
    """Everything an evaluation needs to run on one process or many.

    A typical ``evaluate``::

        def evaluate(self, model, dataset, context):
            predictions = []
            for batch in context.loader(dataset):           # this rank's slice
                with context.autocast():
                    predictions += model.generate(context.to_device(batch))
            predictions = context.gather(predictions)     # all of them, in dataset order
            if context.is_main:
                (context.output_dir / "predictions.json").write_text(json.dumps(predictions))
            return {"CIDEr": score(predictions)}

    The runner calls ``evaluate`` under ``torch.no_grad()`` with the model in eval
    mode, and keeps the training random streams out of its reach.
    """

    output_dir: Path
    step: int
    epoch: int
    env: DistEnv
    precision: str
    batch_size: int
    num_workers: int = 0
    collate_fn: Optional[Callable[[list[Any]], Any]] = None

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    @property
    def device(self) -> torch.device:
        return self.env.device

    def loader(self, dataset: Any, batch_size: Optional[int] = None,
               collate_fn: Optional[Callable[[list[Any]], Any]] = None) -> DataLoader:
        """A DataLoader over this rank's contiguous slice of ``dataset``: every sample on exactly one rank."""
        return eval_loader(dataset, batch_size or self.batch_size, self.rank, self.world_size, self.num_workers,
                           collate_fn or self.collate_fn, pin_memory=self.device.type == "cuda")

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's ``items`` in rank order (the dataset's order, with :meth:`loader`), on every rank."""
        return gather_in_order(items)

    def autocast(self) -> ContextManager:
        """The run's mixed-precision context (a no-op in fp32)."""
        return autocast(self.device, self.precision)

    def to_device(self, batch: Any) -> Any:
        """``batch`` with every tensor moved to this rank's device."""
        return to_device(batch, self.device)
