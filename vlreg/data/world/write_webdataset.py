"""The COCO training pairs as WebDataset shards: ``webdataset/pairs-000000.tar``, ...

One sample per (picture, caption), shuffled over the shards, with the members
``<key>.jpg`` (the picture's JPEG bytes), ``<key>.txt`` (the caption) and
``<key>.json`` (``{"caption", "image_id"}``). Keys are ``<image_id>_<caption index>``
(no dots: WebDataset splits a member's name at its first dot). Tar headers carry no
times or owners, so shards are the same bytes each time.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from .plan import Picture, stream

PATTERN = "pairs-%06d.tar"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


def write(root: Path, train: list[Picture], shards: int, seed: int) -> tuple[list[str], int]:
    """Write the shards; returns their paths relative to ``root`` and the number of samples."""
    samples = [(p, k) for p in train for k in range(len(p.captions))]
    order = stream(seed, "shuffle", "", 0).permutation(len(samples))
    paths = []
    for shard, indices in enumerate(np.array_split(order, shards)):
        rel = f"webdataset/{PATTERN % shard}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / rel, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in indices:
                picture, k = samples[int(i)]
                key, text = f"{picture.image_id:012d}_{k}", picture.captions[k]
                _add(tar, f"{key}.jpg", (root / "coco" / "images" / picture.file).read_bytes())
                _add(tar, f"{key}.txt", text.encode("utf-8"))
                _add(tar, f"{key}.json", json.dumps({"caption": text, "image_id": picture.image_id}).encode("utf-8"))
        paths.append(rel)
    return paths, len(samples)
