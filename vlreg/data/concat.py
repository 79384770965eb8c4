"""Several datasets read as one (e.g. COCO + Visual Genome + CC + SBU, or a corpus and QA texts)."""

from __future__ import annotations

import bisect
from typing import Any

from ..build import component
from ..errors import ConfigError
from ..registry import register
from .media import BadMediaReport


@register("dataset", "concat")
class Concat:
    """The items of ``datasets``, one after another (map-style datasets only).

    Args:
        datasets: the dataset nodes, in order.
    """

    def __init__(self, datasets: list[component("dataset")]):
        if not datasets:
            raise ConfigError("concat: give at least one dataset")
        for i, dataset in enumerate(datasets):
            if not hasattr(dataset, "__len__"):
                raise ConfigError(f"concat: datasets[{i}] ({type(dataset).__name__}) streams; concat needs map-style")
        self.datasets = list(datasets)
        self.ends: list[int] = []
        total = 0
        for dataset in self.datasets:
            total += len(dataset)
            self.ends.append(total)

    def __len__(self) -> int:
        return self.ends[-1]

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect.bisect_right(self.ends, index)
        start = self.ends[part - 1] if part else 0
        return self.datasets[part][index - start]

    def bad_media_report(self) -> BadMediaReport:
        """One report over all parts, with the strictest part's threshold."""
        fractions = [d.max_bad_fraction for d in self.datasets if hasattr(d, "max_bad_fraction")]
        return BadMediaReport("concat", min(fractions, default=1.0), expected_total=len(self))

    def __repr__(self) -> str:
        return f"Concat({', '.join(repr(d) for d in self.datasets)})"
