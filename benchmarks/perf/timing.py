"""Timing on a shared, noisy machine: A and B alternate in one process, medians and their ratio.

Every comparison runs its contenders in the same process, one call of each per round, the
order changing every round (A B, B A, A B, ...) so that slow phases of the machine hit all
alike, after ``warmup`` untimed rounds. Each call is timed in wall-clock seconds and
in this process's CPU seconds (all threads); the CPU time is less sensitive to other
processes taking the cores, and a ratio that holds in both is a ratio to trust.

On a GPU, work is queued and runs after the call returns: there every call is timed from a
synchronised start to a synchronised end (``torch.cuda.synchronize``, see :func:`synchronizer`),
and its CPU seconds say little.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


def synchronizer(device: str) -> Optional[Callable[[], None]]:
    """What waits for the work queued on ``device`` (``torch.cuda.synchronize`` for cuda), or None (CPU)."""
    if device.split(":")[0] != "cuda":
        return None
    import torch

    return torch.cuda.synchronize


@dataclass
class Samples:
    """Wall-clock and CPU seconds of repeated calls of one contender.

    ``sync`` (from :func:`synchronizer`) is called before and after each timed call, so that a
    GPU's queued work counts in the call that queued it.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    sync: Optional[Callable[[], None]] = field(default=None, repr=False, compare=False)

    def add(self, fn: Callable[[], Any]) -> Any:
        if self.sync is not None:
            self.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        if self.sync is not None:
            self.sync()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result

    @property
    def median(self) -> float:
        """Median wall-clock seconds."""
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def summary(self) -> dict[str, Any]:
        return {"median_s": round(self.median, 5), "cpu_median_s": round(self.cpu_median, 5),
                "min_s": round(min(self.wall), 5), "runs": len(self.wall),
                "wall_s": [round(x, 5) for x in self.wall]}


def interleave(contenders: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
               on_round: Callable[[int, dict[str, Any]], None] | None = None, device: str = "cpu"
               ) -> dict[str, Samples]:
    """Time the contenders in turn, ``repeats`` timed rounds after ``warmup`` untimed ones.

    Each round calls every contender once; the order rotates from round to round (and is
    reversed every other round), so that no contender always runs first or after the same
    neighbour. ``on_round(round, {name: result})`` sees what they returned in every round,
    warm-up included (to check that they compute the same thing while they are timed).
    ``device``: where they run (cuda: each call synchronised, see :class:`Samples`).
    """
    names = list(contenders)
    samples = {name: Samples(sync=synchronizer(device)) for name in names}
    for i in range(warmup + repeats):
        shift = (i // 2) % len(names)
        order = names[shift:] + names[:shift]
        if i % 2:
            order.reverse()
        results = {}
        for name in order:
            fn = contenders[name]
            results[name] = samples[name].add(fn) if i >= warmup else fn()
        if on_round is not None:
            on_round(i, results)
    return samples


def alternate(a: Callable[[], Any], b: Callable[[], Any], repeats: int, warmup: int = 1,
              on_result: Callable[[int, Any, Any], None] | None = None, device: str = "cpu"
              ) -> tuple[Samples, Samples]:
    """:func:`interleave` for two: A B, B A, A B, ...; ``on_result(round, result_a, result_b)``."""
    check = None if on_result is None else (lambda i, results: on_result(i, results["a"], results["b"]))
    samples = interleave({"a": a, "b": b}, repeats, warmup, check, device)
    return samples["a"], samples["b"]


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: str = "cpu") -> Samples:
    """Time ``fn`` alone ``repeats`` times after ``warmup`` untimed calls (on ``device``, see :class:`Samples`)."""
    samples = Samples(sync=synchronizer(device))
    for _ in range(warmup):
        fn()
    for _ in range(repeats):
        samples.add(fn)
    return samples


def ratio(reference: Samples, ours: Samples) -> float:
    """How many times faster ``ours`` is: median reference time over median own time."""
    return reference.median / ours.median


def cpu_ratio(reference: Samples, ours: Samples) -> float:
    return reference.cpu_median / ours.cpu_median
