"""Items to batches: tensors stacked, everything else kept as lists, bad media set aside.

``collate(items)`` takes the dicts the datasets return and gives one dict:

- tensors are stacked: ``image`` ``[B,3,H,W]``, ``video`` ``[B,T,3,H,W]``,
  ``features`` ``[B,N,D]`` with ``features_mask`` ``[B,N]``;
- strings, ids, lists (VQA ``answers`` / ``weights``) stay lists of length B;
- :class:`~vlreg.data.media.BadSample` sentinels are dropped and listed under
  ``batch["_bad"]`` (always present, possibly empty) for the main process to count.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .media import BAD_KEY, BadSample


def collate(items: Sequence[Mapping[str, Any] | BadSample]) -> dict[str, Any]:
    """Batch a list of item dicts (see the module docstring); B = the good items."""
    bad = [item for item in items if isinstance(item, BadSample)]
    good = [item for item in items if not isinstance(item, BadSample)]
    batch: dict[str, Any] = {}
    if good:
        keys = list(good[0])
        for i, item in enumerate(good[1:], 1):
            if set(item) != set(keys):
                raise ValueError(f"collate: item {i} has keys {sorted(item)}, item 0 has {sorted(keys)}")
        for key in keys:
            values = [item[key] for item in good]
            batch[key] = _stack(key, values) if isinstance(values[0], torch.Tensor) else values
    batch[BAD_KEY] = bad
    return batch


def _stack(key: str, values: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, through torch's ``default_collate``, which in a DataLoader worker stacks straight
    into shared memory (the batch then reaches the main process without another copy)."""
    from torch.utils.data import default_collate

    shapes = {tuple(v.shape) for v in values}
    if len(shapes) > 1:
        raise ValueError(f"collate: {key!r} tensors differ in shape: {sorted(shapes)}")
    return default_collate(values)

