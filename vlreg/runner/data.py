"""Training and evaluation data loaders that know where they are.

Training (map-style datasets). Epoch ``e`` is a permutation of the dataset drawn
from a generator seeded with ``(seed, e)``. It is cut into global batches of
``batch_size`` samples (the incomplete last one is dropped); global batch ``s`` is
cut into ``accum_steps`` micro-steps, and micro-step ``j`` into ``world_size``
micro-batches, one per rank::

    perm[s*B : (s+1)*B]  ->  micro-step j, rank r:  perm[s*B + (j*W + r)*m : ... + m]

So an optimizer step sees the same samples whatever the split between processes
and accumulation, and a position ``(epoch, micro-batches consumed)`` is all that
resume needs: the sampler skips the consumed micro-batches without reading them.
Each sample is read with its own seed (:func:`vlreg.runner.seeding.sample_seed`),
so augmentations do not depend on ``num_workers`` or on resumes.

Training (IterableDataset). The dataset shards itself over ranks and workers
(``torch.utils.data.get_worker_info``, ``vlreg.distributed.rank``); the runner
batches it into micro-batches, calls ``set_epoch(epoch)`` on it when it has one,
and on exhaustion starts the next epoch. Resuming replays and discards the
consumed micro-batches, which is exact when the dataset's order depends only on
its epoch (and the worker seeds, which the runner derives from ``(seed, rank,
epoch)``).

Evaluation. :func:`eval_loader` gives each rank a contiguous slice of the
dataset, with no padding duplicates (see :class:`~vlreg.runner.distributed_setup.ShardedEvalSampler`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

from ..errors import DataError
from .distributed_setup import ShardedEvalSampler
from .seeding import PrivateRng, isolated_rng, mix, sample_seed, seed_worker

Collate = Callable[[list[Any]], Any]


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (tensors in dicts, lists and tuples) with every tensor on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def is_iterable(dataset: Any) -> bool:
    """True for an ``IterableDataset`` (or anything iterable without ``__getitem__``)."""
    return isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__")


class SeededSamples(Dataset):
    """A map-style dataset read with a seed per sample: its keys are ``(index, seed)`` pairs."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with isolated_rng(seed):
            return self.dataset[index]


class TrainBatches(Sampler):
    """One rank's micro-batches of one epoch, as keys of :class:`SeededSamples` (layout in the module docstring)."""

    def __init__(self, num_samples: int, micro_batch: int, accum_steps: int, world_size: int, rank: int, seed: int):
        self.num_samples, self.micro_batch, self.accum_steps = num_samples, micro_batch, accum_steps
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.global_batch = micro_batch * accum_steps * world_size
        self.epoch, self.start = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its micro-batch ``start`` on."""
        self.epoch, self.start = epoch, start

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(mix(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accum_steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = self.permutation(self.epoch)
        m, w = self.micro_batch, self.world_size
        for k in range(self.start, self.steps_per_epoch * self.accum_steps):
            step, micro = divmod(k, self.accum_steps)
            offset = step * self.global_batch + (micro * w + self.rank) * m
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in perm[offset:offset + m]]


class TrainStream:
    """Micro-batches for training, epoch after epoch, resumable at any step boundary.

    Its state is ``{"epoch": e, "batches": micro-batches of epoch e consumed,
    "bad_media": bad media files skipped so far, each once per epoch}``. A dataset with a
    ``bad_media_report()`` (:mod:`vlreg.data.media`) has its batches counted here,
    in the main process: bad items are removed, an emptied batch is skipped, each
    epoch's summary is logged and too many bad files stop the run with a DataError.
    """

    def __init__(self, dataset: Any, micro_batch: int, accum_steps: int, world_size: int, rank: int, seed: int,
                 num_workers: int = 0, collate_fn: Optional[Collate] = None, pin_memory: bool = False):
        self.dataset, self.micro_batch, self.rank, self.seed = dataset, micro_batch, rank, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.collate_fn = collate_fn or default_collate
        self.iterable = is_iterable(dataset)
        self.sampler = None if self.iterable else TrainBatches(
            len(dataset), micro_batch, accum_steps, world_size, rank, seed)
        if self.sampler is not None and self.sampler.steps_per_epoch == 0:
            raise DataError(
                f"the training set has {len(dataset)} samples, fewer than one global batch of "
                f"{self.sampler.global_batch}: lower run.batch_size or add data"
            )
        self.epoch, self.batches = 0, 0
        self._iterator: Optional[Iterator[Any]] = None
        make_report = getattr(dataset, "bad_media_report", None)  # vlreg.data datasets: see vlreg.data.media
        self.report = make_report() if callable(make_report) else None
        self.bad_media = 0
        self._rng: Optional[PrivateRng] = None

    @property
    def steps_per_epoch(self) -> Optional[int]:
        """Optimizer steps in one epoch (None for an IterableDataset)."""
        return None if self.sampler is None else self.sampler.steps_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches, "bad_media": self.bad_media}

    def load_state_dict(self, position: dict[str, int]) -> None:
        self.close()
        self.epoch, self.batches = int(position["epoch"]), int(position["batches"])
        self.bad_media = int(position.get("bad_media", 0))

    def _loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(mix(self.seed, self.rank, self.epoch))
        common = dict(num_workers=self.num_workers, collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                      worker_init_fn=seed_worker, generator=generator)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch, self.batches)
            return DataLoader(SeededSamples(self.dataset), batch_sampler=self.sampler, **common)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        return DataLoader(self.dataset, batch_size=self.micro_batch, drop_last=True, **common)

    def _open(self) -> Iterator[Any]:
        iterator = iter(self._loader())
        if self.sampler is None:
            # read in this process, an iterable dataset draws from generators of its own
            self._rng = PrivateRng(mix(self.seed, self.rank, self.epoch)) if self.num_workers == 0 else None
            for _ in range(self.batches):  # it cannot seek: replay and discard
                self._fetch(iterator)
        return iterator

    def _fetch(self, iterator: Iterator[Any]) -> Any:
        if self._rng is None:
            return next(iterator)
        with self._rng.active():
            return next(iterator)

    def next(self) -> Any:
        """The next micro-batch, starting a new epoch when this one is exhausted.

        With a bad-media report, batches are counted and stripped of their bad items,
        and a batch left with no item is skipped.
        """
        while True:
            if self._iterator is None:
                self._iterator = self._open()
            try:
                batch = self._fetch(self._iterator)
            except StopIteration:
                if self.batches == 0:
                    raise DataError(f"the training set yielded no batch of {self.micro_batch} in epoch {self.epoch}") from None
                self._end_epoch()
                continue
            self.batches += 1
            if self.report is None or not isinstance(batch, Mapping):
                return batch
            seen, items, files = self.report.seen, self.report.bad_items, self.report.num_bad
            batch = self.report.update(dict(batch))
            self.bad_media += self.report.num_bad - files
            if self.report.seen - seen > self.report.bad_items - items:
                return batch

    def _end_epoch(self) -> None:
        self.close()
        self.epoch, self.batches = self.epoch + 1, 0
        if self.report is not None:
            self.report.end_epoch()  # logs the epoch's bad media; DataError beyond the dataset's threshold

    def close(self) -> None:
        """Let go of the current iterator (and its worker processes)."""
        self._iterator = None


def eval_loader(dataset: Any, batch_size: int, rank: int, world_size: int, num_workers: int = 0,
                collate_fn: Optional[Collate] = None, pin_memory: bool = False) -> DataLoader:
    """A loader over this rank's contiguous slice of ``dataset`` (no duplicates, no gaps over ranks).

    An IterableDataset is passed through unsharded: it must shard itself, and its
    predictions should carry ids, since their order over ranks is its own.
    """
    collate_fn = collate_fn or default_collate
    common = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
                  worker_init_fn=seed_worker)
    if is_iterable(dataset):
        return DataLoader(dataset, **common)
    return DataLoader(dataset, sampler=ShardedEvalSampler(len(dataset), rank, world_size), **common)
