"""WebDataset shards streamed as an IterableDataset, split by rank and DataLoader worker.

Shards are tar files (``pairs-000000.tar``, ...) whose members sharing a key form one
sample: ``000123.jpg``, ``000123.txt``, ``000123.json``. They are read with the
``webdataset`` library's tar iterators; which shards a process reads is decided
here, from :func:`vlreg.distributed.rank` / ``world_size`` and the DataLoader worker:

- ``resampled: false``: each epoch, the shard list (shuffled with ``seed`` and the
  epoch when ``shuffle_shards``) is split by rank, then by worker: every shard is read
  by exactly one worker of one rank. Ranks get different amounts of data when shards
  do not divide evenly; multi-rank training should use ``resampled: true``.
- ``resampled: true``: every worker of every rank draws shards with replacement
  (its own seeded stream) forever; the run's step budget ends training.

``max_samples`` keeps the first N samples in shard order (the same N whatever the
number of ranks and workers). ``shuffle_buffer`` mixes samples within a worker
(consecutive samples often share an image). Call :meth:`ShardStream.set_epoch`
before each epoch for a new shard order.
"""

from __future__ import annotations

import glob
import itertools
import json
import random
import tarfile
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from torch.utils.data import IterableDataset, get_worker_info

from .. import distributed
from ..build import component
from ..errors import ConfigError, DataError
from ..registry import register
from .media import BadMedia, BadMediaReport, BadSample


def list_shards(root: str, shards: str) -> list[str]:
    """Shard files matching a glob (``pairs-*.tar``) or brace pattern (``pairs-{000000..000003}.tar``), sorted."""
    from webdataset.shardlists import expand_urls

    pattern = str(Path(root) / shards)
    files = sorted({f for p in expand_urls(pattern) for f in glob.glob(p)})
    if not files:
        raise DataError(f"no WebDataset shards match {pattern}")
    return files


def count_samples(shard: str) -> int:
    """The number of samples (distinct keys) in a tar shard, from its headers."""
    from webdataset.tariterators import base_plus_ext

    try:
        with tarfile.open(shard) as tar:
            return len({base_plus_ext(m.name)[0] for m in tar.getmembers() if m.isfile()})
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{shard}: cannot read shard: {exc}") from None


def consumer() -> tuple[int, int, int, int]:
    """``(rank, world_size, worker, num_workers)`` of the calling process."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return distributed.rank(), distributed.world_size(), worker, workers


class ShardStream(IterableDataset):
    """Samples of tar shards, split across ranks and workers (see the module docstring).

    Subclasses implement :meth:`make_item` (one raw sample dict -> one item).

    Args:
        root: the shard directory.
        shards: glob or brace pattern of the shard files, relative to root.
        split: "train" (all shards but the last ``val_shards``) or "val" (those).
        val_shards: the number of shards held out as validation.
        resampled: draw shards with replacement, forever.
        shuffle_shards: shuffle the shard order each epoch (resampled: ignored).
        shuffle_buffer: the number of samples mixed within a worker (0: stream order).
        seed: seeds shard order, resampling and the buffer (with the epoch, rank and worker).
        max_samples: keep the first N samples in shard order.
    """

    def __init__(self, root: str, shards: str, split: Literal["train", "val"] = "train", val_shards: int = 0,
                 resampled: bool = False, shuffle_shards: bool = True, shuffle_buffer: int = 0, seed: int = 0,
                 max_samples: Optional[int] = None):
        super().__init__()
        files = list_shards(root, shards)
        if not 0 <= val_shards < len(files) or (split == "val" and val_shards == 0):
            raise ConfigError(f"val_shards must lie in [{int(split == 'val')}, {len(files) - 1}] "
                              f"for split {split!r} of {len(files)} shards, got {val_shards}")
        self.shards = files[len(files) - val_shards:] if split == "val" else files[: len(files) - val_shards]
        self.split, self.resampled, self.shuffle_shards = split, resampled, shuffle_shards
        self.shuffle_buffer, self.seed, self.max_samples, self.epoch = shuffle_buffer, seed, max_samples, 0
        self.limits: dict[str, int] = {}
        if max_samples is not None:
            self._keep_first(max_samples)

    def _keep_first(self, n: int) -> None:
        kept, remaining = [], n
        for shard in self.shards:
            if remaining <= 0:
                break
            count = count_samples(shard)
            kept.append(shard)
            if count > remaining:
                self.limits[shard] = remaining
            remaining -= count
        self.shards = kept

    def set_epoch(self, epoch: int) -> None:
        """Use epoch-specific shard order and random streams from now on."""
        self.epoch = epoch

    def shard_order(self, rank: int, world_size: int, worker: int, num_workers: int) -> Iterator[str]:
        """The shards one worker of one rank reads this epoch, in order."""
        if self.resampled:
            rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker}")
            while True:
                yield rng.choice(self.shards)
        order = list(self.shards)
        if self.shuffle_shards:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        yield from order[rank::world_size][worker::num_workers]

    def samples(self, shard: str) -> Iterator[dict[str, Any]]:
        """The raw samples of one shard (``{"__key__", "__url__", ext: bytes}``)."""
        from webdataset.tariterators import tarfile_samples

        stream = tarfile_samples([{"url": shard}])
        try:
            yield from itertools.islice(stream, self.limits.get(shard))
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise DataError(f"{shard}: cannot read shard: {exc}") from None

    def __iter__(self) -> Iterator[dict[str, Any] | BadSample]:
        rank, world_size, worker, num_workers = consumer()
        raw = (s for shard in self.shard_order(rank, world_size, worker, num_workers) for s in self.samples(shard))
        if self.shuffle_buffer > 1:
            raw = _buffer_shuffle(raw, self.shuffle_buffer, random.Random(f"buffer-{self.seed}-{self.epoch}-{rank}-{worker}"))
        for sample in raw:
            yield self.make_item(sample)

    def make_item(self, sample: dict[str, Any]) -> dict[str, Any] | BadSample:  # pragma: no cover - abstract
        raise NotImplementedError


def _buffer_shuffle(samples: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield samples in a random order drawn from a buffer of ``size``."""
    buffer: list[Any] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


def sample_meta(sample: dict[str, Any], where: str) -> dict[str, Any]:
    """A sample's ``json`` member, parsed (``{}`` when it has none)."""
    if "json" not in sample:
        return {}
    try:
        meta = json.loads(sample["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}.json: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}.json: expected a JSON object, got {type(meta).__name__}")
    return meta


def sample_text(sample: dict[str, Any], meta: dict[str, Any], where: str) -> str:
    """A sample's caption: its ``txt`` member, else ``json["caption"]``; DataError otherwise."""
    if "txt" in sample:
        return sample["txt"].decode("utf-8").strip()
    if isinstance(meta.get("caption"), str):
        return meta["caption"]
    if meta:
        raise DataError(f"{where}.json: missing key 'caption'")
    raise DataError(f"{where}: the sample has neither a .txt nor a .json member")


@register("dataset", "webdataset_pairs")
class WebDatasetPairs(ShardStream):
    """Image-caption pairs from WebDataset shards ("jpg" + "txt" or "json" {"caption"}), streamed.

    Items are those of coco_caption's training split: ``{"image" [3,H,W], "text_input":
    caption, "image_id": the json's image_id (else the sample key), "media_path":
    "<shard>:<key>.jpg"}``; a jpg that PIL cannot decode gives a bad-media sentinel.
    Sharding, resampling and shuffling are described in :mod:`vlreg.data.webdataset`.

    Args:
        root: the shard directory.
        shards: glob or brace pattern of the shard files, relative to root.
        processor: image processor (takes the jpg bytes).
        text_processor: applied to captions (e.g. caption).
        split: "train" (all shards but the last ``val_shards``) or "val" (those).
        val_shards: the number of shards held out as validation.
        resampled: draw shards with replacement, forever (multi-rank training).
        shuffle_shards: shuffle the shard order each epoch.
        shuffle_buffer: samples mixed within a worker (0: stream order).
        seed: seeds shard order, resampling and the buffer.
        max_samples: keep the first N pairs in shard order.
        max_bad_fraction: the largest share of bad images tolerated (checked every
            batch after 1,000 items, and at the end of an epoch).
    """

    def __init__(self, root: str, processor: component("processor"), shards: str = "pairs-*.tar",
                 text_processor: Optional[component("processor")] = None,
                 split: Literal["train", "val"] = "train", val_shards: int = 0, resampled: bool = False,
                 shuffle_shards: bool = True, shuffle_buffer: int = 1000, seed: int = 0,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, shards, split, val_shards, resampled, shuffle_shards, shuffle_buffer, seed, max_samples)
        self.processor, self.text_processor, self.max_bad_fraction = processor, text_processor, max_bad_fraction

    def make_item(self, sample: dict[str, Any]) -> dict[str, Any] | BadSample:
        where = f"{sample['__url__']}:{sample['__key__']}"
        meta = sample_meta(sample, where)
        caption = sample_text(sample, meta, where)
        if "jpg" not in sample:
            return BadSample(f"{where}.jpg", "no jpg member in the sample")
        try:
            media = self.processor.fields(sample["jpg"])
        except BadMedia as bad:
            return BadSample(f"{where}.jpg", bad.reason)
        return {
            **media,
            "text_input": self.text_processor(caption) if self.text_processor else caption,
            "image_id": meta.get("image_id", sample["__key__"]),
            "media_path": f"{where}.jpg",
        }

    def bad_media_report(self) -> BadMediaReport:
        """A fresh report for one epoch (length unknown: checked after ``min_seen`` items)."""
        return BadMediaReport(f"{type(self).__name__} {self.split}", self.max_bad_fraction)
