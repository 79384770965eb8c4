"""A dataset kept in memory after its first pass: decode once, train for many epochs.

A small dataset read for many epochs with a deterministic media processor decodes the same
files into the same tensors every epoch. :class:`InMemory` keeps each item after its first
read, so later epochs skip the decoding: the synthetic world's 2,000 training pictures at 64 px
take about 100 MB as float32, and training the world's frame encoder spent a quarter of each
step decoding them. (For a frozen encoder, the feature cache keeps its outputs instead; see
:mod:`vlreg.runner.feature_cache`.)

The items live in the process that reads them: with ``num_workers: 0`` that is the training
process itself; with loader workers each worker keeps its own copy for one epoch only.
"""

from __future__ import annotations

from typing import Any

from ..build import component
from ..errors import ConfigError
from ..registry import register


@register("dataset", "in_memory")
class InMemory:
    """The items of ``dataset``, each kept after it is first read.

    Args:
        dataset: a map-style dataset node whose media processor (if any) is deterministic
            (an eval processor: no random crops, flips or frame sampling).
    """

    def __init__(self, dataset: component("dataset")):
        if not hasattr(dataset, "__len__"):
            raise ConfigError(f"in_memory: {type(dataset).__name__} streams; in_memory needs a map-style dataset")
        processor = getattr(dataset, "processor", None)
        if processor is not None and not getattr(processor, "deterministic", False):
            raise ConfigError(f"in_memory: the media processor {type(processor).__name__} is random (augmentation); "
                              "keeping its first output would repeat one draw every epoch: use an eval processor")
        self.dataset = dataset
        self.items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self.items:
            self.items[index] = self.dataset[index]
        item = self.items[index]
        return dict(item) if isinstance(item, dict) else item  # a batch may take keys from its items

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's reports, texts, counters
        if name in ("dataset", "items"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"InMemory({self.dataset!r})"
