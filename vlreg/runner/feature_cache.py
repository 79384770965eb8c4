"""The frozen-feature cache: a frozen encoder's outputs computed once, memory-mapped, reused.

A frozen encoder under deterministic (eval-mode) preprocessing maps each media file
to the same tokens every time, so they can be computed once and read back in every
later epoch and stage. :func:`attach_feature_cache` does that for a dataset. What is
cached is the output of the encoder's frozen part (``Encoder.frozen_stage``): the whole
encoder when it is frozen, the frame encoder of a video encoder whose temporal
embedding trains; ``Encoder.from_frozen`` finishes the forward pass at training time.

- the cache lives in ``<root>/<key>/``, where ``key`` hashes the frozen part (its module
  tree, its settings, and its weights' source and checksum, or a hash of the weights
  themselves) and the preprocessing (the media processor's class and settings); a
  change to either selects another directory, so a stale cache is never read;
- each media file is keyed by its path, size and modification time; a changed file is
  encoded again;
- tokens are stored in shards, ``tokens_<n>.npy`` ``[M, N, D]`` float32 (and
  ``mask_<n>.npy`` ``[M, N]`` when the encoder returns a mask) with ``index_<n>.json``
  naming each row's file; a shard counts once its index exists (written last, by a
  rename), so an interrupted fill is simply redone;
- the dataset's media processor is replaced by one that reads the rows back, and
  batches then carry ``visual_tokens`` ``[B, N, D]`` (and ``visual_mask``) instead of
  media, which :meth:`VisionLanguageModel.visual_tokens` uses without running the
  encoder;
- a media processor with random augmentation (random crops, flips, random frame
  sampling) bypasses the cache: its output differs every time.

With several ranks, each encodes a share of the missing files into the same shard;
rank 0 publishes the index after a barrier.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..data.media import BadMedia
from ..io.fingerprints import sha256_tensors, sha256_text
from ..io.sources import weight_sources
from ..models.base import Encoder

log = logging.getLogger("vlreg")
FORMAT = 1
DIGEST = 16


def processor_settings(processor: Any) -> Optional[dict[str, Any]]:
    """A processor's identity and settings, or None when its output is random."""
    if processor is None or not getattr(processor, "deterministic", False):
        return None
    settings = {k: v for k, v in vars(processor).items() if isinstance(v, (int, float, str, bool, tuple, list))}
    return {"class": f"{type(processor).__module__}.{type(processor).__qualname__}", **settings}


def encoder_identity(encoder: nn.Module) -> dict[str, Any]:
    """What determines an encoder's outputs: structure, settings and weights."""
    sources = weight_sources(encoder)
    settings = {k: v for k, v in vars(encoder).items()
                if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, tuple))}
    return {
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "structure": sha256_text(repr(encoder)),
        "settings": settings,
        "weights": sources or sha256_tensors(encoder.state_dict()),
    }


def cache_key(encoder: Encoder, processor: Any) -> Optional[str]:
    """The cache directory name for this encoder's frozen part and preprocessing (None: not cacheable)."""
    settings = processor_settings(processor)
    stage = encoder.frozen_stage()
    if settings is None or stage is None:
        return None
    blob = json.dumps({"format": FORMAT, "encoder": encoder_identity(stage), "processor": settings},
                      sort_keys=True, default=str)
    return sha256_text(blob)[:DIGEST]


def file_stamp(path: str) -> list[Any]:
    """``[path, size, mtime_ns]``; a missing file stamps as size -1."""
    try:
        stat = os.stat(path)
        return [path, stat.st_size, stat.st_mtime_ns]
    except OSError:
        return [path, -1, 0]


class FeatureStore:
    """The shards of one cache directory: lookups by media file."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.rows: dict[str, tuple[int, int]] = {}  # path -> (shard, row)
        self.bad: dict[str, str] = {}
        self.stamps: dict[str, list[Any]] = {}
        self._arrays: dict[int, tuple[np.ndarray, Optional[np.ndarray]]] = {}
        self.reload()

    def reload(self) -> None:
        self.rows.clear(), self.bad.clear(), self.stamps.clear(), self._arrays.clear()
        for index_file in sorted(self.directory.glob("index_*.json")):
            shard = int(index_file.stem.split("_")[1])
            index = json.loads(index_file.read_text())
            for row, stamp in enumerate(index["files"]):
                self.rows[stamp[0]], self.stamps[stamp[0]] = (shard, row), stamp
            for path, reason in index["bad"].items():
                self.bad[path] = reason
                self.stamps[path] = index["bad_stamps"][path]

    def missing(self, paths: list[str]) -> list[str]:
        """The files that have no current entry (new, changed, or never encoded)."""
        return [p for p in paths if self.stamps.get(p) != file_stamp(p)]

    def next_shard(self) -> int:
        shards = [int(p.stem.split("_")[1]) for p in self.directory.glob("index_*.json")]
        return max(shards, default=-1) + 1

    def read(self, path: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``tokens [N, D]`` and ``mask [N]`` (or None) of one file; raises BadMedia for a bad one."""
        if path in self.bad:
            raise BadMedia(path, self.bad[path])
        shard, row = self.rows[path]
        if shard not in self._arrays:
            tokens = np.load(self.directory / f"tokens_{shard}.npy", mmap_mode="r")
            mask_file = self.directory / f"mask_{shard}.npy"
            mask = np.load(mask_file, mmap_mode="r") if mask_file.exists() else None
            self._arrays[shard] = (tokens, mask)
        tokens, mask = self._arrays[shard]
        return torch.from_numpy(np.array(tokens[row])), None if mask is None else torch.from_numpy(np.array(mask[row]))

    def __getstate__(self) -> dict[str, Any]:  # memory maps reopen in each worker process
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


class CachedFeatures:
    """A media processor that reads an encoder's cached output instead of decoding the file."""

    modality = "visual_tokens"

    def __init__(self, store: FeatureStore, suffix: Optional[str] = None):
        self.store, self.suffix = store, suffix

    def fields(self, source: str) -> dict[str, Any]:
        tokens, mask = self.store.read(str(source))
        return {"visual_tokens": tokens} if mask is None else {"visual_tokens": tokens, "visual_mask": mask}


@torch.no_grad()
def _encode(encoder: Encoder, processor: Any, paths: list[str], batch_size: int,
            device: torch.device) -> tuple[list[np.ndarray], list[Optional[np.ndarray]], dict[str, str]]:
    tokens, masks, bad = [], [], {}
    good: list[tuple[str, dict[str, Any]]] = []

    def flush() -> None:
        if not good:
            return
        fields = [f for _, f in good]
        media = torch.stack([f[processor.modality] for f in fields]).to(device)
        mask_key = f"{processor.modality}_mask"
        media_mask = torch.stack([f[mask_key] for f in fields]).to(device) if mask_key in fields[0] else None
        out = encoder.encode_frozen(media, media_mask)
        tokens.extend(out.tokens.float().cpu().numpy())
        masks.extend([None] * len(good) if out.mask is None else out.mask.cpu().numpy())
        good.clear()

    for path in paths:
        try:
            good.append((path, processor.fields(path)))
        except BadMedia as exc:
            bad[path] = exc.reason
        if len(good) == batch_size:
            flush()
    flush()
    return tokens, masks, bad


def _media_paths(dataset: Any) -> list[str]:
    seen: dict[str, None] = {}
    for record in dataset.records:
        if "media_path" in record:
            seen.setdefault(str(record["media_path"]), None)
    return list(seen)


def attach_feature_cache(dataset: Any, encoder: Encoder, root: str | os.PathLike, batch_size: int = 32,
                         device: Optional[torch.device] = None) -> bool:
    """Serve ``dataset``'s media from the cache of ``encoder``'s outputs, filling it first.

    Returns False (and changes nothing) when the dataset's preprocessing is random or
    the dataset has no media records; the caller then runs the encoder as usual.
    """
    processor = getattr(dataset, "processor", None)
    key = cache_key(encoder, processor)
    if key is None or not hasattr(dataset, "records"):
        log.info("feature cache bypassed for %s: its preprocessing is random, the encoder has no frozen part, "
                 "or it has no media", dataset)
        return False
    directory = Path(root) / key
    if distributed.is_main():
        directory.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    store = FeatureStore(directory)
    missing = store.missing(_media_paths(dataset))
    if missing:
        shard = store.next_shard()
        mine = missing[distributed.rank()::distributed.world_size()]
        tokens, masks, bad = _encode(encoder, processor, mine, batch_size, device or encoder.device)
        parts = distributed.all_gather_objects((mine, tokens, masks, bad))
        if distributed.is_main():
            _write_shard(directory, shard, parts)
        distributed.barrier()
        store.reload()
        log.info("feature cache %s: encoded %d files into shard %d", directory, len(missing), shard)
    dataset.processor = CachedFeatures(store, getattr(processor, "suffix", None))
    return True


def _write_shard(directory: Path, shard: int, parts: list[tuple]) -> None:
    files, tokens, masks, bad = [], [], [], {}
    for paths, rank_tokens, rank_masks, rank_bad in parts:
        good = [p for p in paths if p not in rank_bad]
        files.extend(good)
        tokens.extend(rank_tokens)
        masks.extend(rank_masks)
        bad.update(rank_bad)
    if tokens:
        np.save(directory / f"tokens_{shard}.npy", np.stack(tokens))
        if masks[0] is not None:
            np.save(directory / f"mask_{shard}.npy", np.stack(masks))
    index = {"files": [file_stamp(p) for p in files], "bad": bad,
             "bad_stamps": {p: file_stamp(p) for p in bad}}
    tmp = directory / f".index_{shard}.json.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, directory / f"index_{shard}.json")
