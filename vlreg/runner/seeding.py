"""Seeds and random-number-generator states: everything exact resume needs.

Three streams of randomness exist in a run, each reproducible on its own:

- the process's global generators (python ``random``, numpy, torch CPU and CUDA):
  dropout and anything else the model draws. Seeded with ``seed + rank`` at the
  start, saved in every checkpoint and restored on resume (:func:`rng_state`,
  :func:`set_rng_state`).
- the data order: a permutation drawn from a private generator seeded with
  ``(seed, epoch)``; nothing to save but the position in it.
- each sample's augmentation: :func:`sample_seed` gives sample ``index`` of
  ``epoch`` its own seed, and the dataset is read inside :func:`isolated_rng`
  seeded with it, in the main process or a worker alike. Augmentations are thus
  the same whatever ``num_workers`` and however often the run was resumed, and
  they never disturb the global stream. An iterable dataset has no indices: in
  workers it draws from the workers' seeds (derived from ``(seed, rank, epoch)``),
  in the main process from a :class:`PrivateRng` seeded the same way.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Iterator

import numpy as np
import torch

_MASK64 = (1 << 63) - 1


def mix(*values: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions (splitmix64 steps)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & _MASK64


def seed_all(seed: int) -> None:
    """Seed python ``random``, numpy and torch (every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch (independent of rank and worker)."""
    return mix(seed, epoch, index)


def set_deterministic(enabled: bool) -> None:
    """Ask torch for deterministic kernels (warning, not failing, where an op has none)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def rng_state() -> dict[str, Any]:
    """The state of this process's global generators, loadable with ``torch.load(weights_only=True)``."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (evaluation, say) without changing any global generator's state, CUDA included."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _cpu_state() -> tuple[Any, Any, torch.Tensor]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_cpu_state(state: tuple[Any, Any, torch.Tensor]) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


def _seed_cpu(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: seeding CUDA as well costs 40 times more


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with the global CPU generators seeded with ``seed``, then put their states back.

    CUDA generators are not touched: data code that draws on the GPU should use its own generator.
    """
    outer = _cpu_state()
    try:
        _seed_cpu(seed)
        yield
    finally:
        _set_cpu_state(outer)


class PrivateRng:
    """CPU generator states of its own (seeded once), swapped in around the blocks that use it.

    An iterable dataset read in the main process draws from one of these, so that
    its randomness neither depends on nor disturbs the training stream.
    """

    def __init__(self, seed: int):
        with isolated_rng(seed):
            self.state = _cpu_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer = _cpu_state()
        _set_cpu_state(self.state)
        try:
            yield
        finally:
            self.state = _cpu_state()
            _set_cpu_state(outer)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python and numpy from the worker's torch seed.

    torch gives worker ``i`` the seed ``base + i``, where ``base`` comes from the
    loader's generator, which the runner seeds from ``(seed, rank, epoch)``.
    """
    worker_seed = torch.initial_seed()
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
