"""The training runner: loop, optimizer, schedule, checkpoints, exact resume, DDP / FSDP2.

Importing this package is light (nothing heavy happens before its names are used).

Interface
---------
``RunConfig`` (:mod:`vlreg.runner.config`) is the ``run:`` section of a config;
its fields are documented there, the batch arithmetic included::

    batch_size (global, per optimizer step) = micro_batch * world_size * accum_steps

``Trainer(config).fit(model, task, train_dataset, eval_dataset=None) -> dict``
trains and returns the results it also writes to ``results.json``.

The model is an ``nn.Module`` whose frozen parts have ``requires_grad=False``;
only its trainable parameters reach the optimizer.

The task is a :class:`vlreg.tasks.base.Task` (a subclass; anything else is a TypeError). It provides:

- ``train_step(model, batch) -> dict[str, Tensor]``: must contain ``"loss"`` (a
  scalar); every other tensor is averaged and logged. The runner calls it inside
  the data-parallel wrapper's ``forward`` (so DDP / FSDP2 see the step whatever
  methods of the model the task calls) and under the run's autocast.
- ``evaluate(model, dataset, context) -> dict[str, float]``: ``context`` is an
  :class:`~vlreg.runner.context.EvalContext`: ``output_dir`` (predictions go
  there, written by rank 0), ``loader(dataset)`` (a DataLoader over this rank's
  slice, no padding duplicates), ``gather(list)`` (every rank's predictions in
  dataset order, each once), ``autocast()``, ``to_device(batch)``, ``device``,
  ``rank``, ``world_size``, ``is_main``, ``step``, ``epoch``. Called under
  ``torch.no_grad()`` with the model in eval mode; every rank must call it.
- ``collate(items)``: collates a list of samples into a batch; the base class's is
  :func:`vlreg.data.collate.collate` (tensors stacked, the rest listed, bad media set aside).
- ``parameter_groups(model)``: the AdamW groups (a list of dicts with ``params`` and
  optionally ``weight_decay``, ``lr_scale``, ``name``), or None (the base class's) for the
  runner's own.
- ``counters()`` (also on datasets, where it is optional): ``{name: count}`` summed over
  ranks into ``results.json["counters"]``; the base class's is empty. With worker processes
  a dataset's own counts stay in the workers: pass them through batches.

Datasets are map-style (``__len__``, ``__getitem__``) or ``IterableDataset``;
samples collate into dict batches. A training set with ``bad_media_report()``
(the :mod:`vlreg.data` readers) has its bad media counted by the runner in the
main process: removed from batches before ``train_step``, logged per epoch,
fatal beyond the dataset's ``max_bad_fraction``, and reported as
``counters["bad_media"]``. ``fit`` with ``train_dataset=None`` (or
``max_steps: 0``) only evaluates.

Weights of a finished run: :func:`vlreg.io.checkpoints.final_checkpoint`,
:func:`~vlreg.io.checkpoints.load_weights` (a whole model, for inference;
``exclude=("prompter",)`` skips a P-Former) and
:func:`~vlreg.io.checkpoints.load_component_weights` (one component, to start
a stage from an earlier one). See :mod:`vlreg.runner.data` for the order,
sharding and exact resume, :mod:`vlreg.io.checkpoints` for the checkpoint
layout, :mod:`vlreg.io.sources` for the frozen-weight ``weight_source()`` protocol,
:mod:`vlreg.runner.checkpoint` for writing checkpoints,
:mod:`vlreg.runner.distributed_setup` for torchrun launches (one or many
machines), :mod:`vlreg.runner.optim` for parameter groups and the schedule, and
:mod:`vlreg.runner.logging` for ``metrics.jsonl``.

Output directory (:class:`vlreg.io.run_dir.RunDir` names its files): ``config.yaml``
(written by the caller), ``metrics.jsonl``, ``tensorboard/`` (when tensorboard is
installed), ``checkpoints/``, the task's predictions, ``results.json`` (final and best
metrics, steps, epochs, samples, seconds, skipped steps, counters).

Errors a user can fix (a bad ``run:`` section, NaN losses that persist, a full
disk, a checkpoint that does not match the model) raise :class:`vlreg.errors.UserError`
subclasses with one-line messages: ``ConfigError``, :class:`NonFiniteLossError`,
:class:`CheckpointError`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "config",
    "Trainer": "trainer",
    "NonFiniteLossError": "trainer",
    "EvalContext": "context",
    "CheckpointError": "checkpoint",
    "Checkpointer": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
