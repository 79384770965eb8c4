"""Media labelled with scene attributes: the synthetic world's captionless pretraining data.

``attributes/images.json`` and ``attributes/videos.json`` (written by the world
generator) hold ``{"attributes": [names], "root": media folder relative to the world,
"labels": {file: multi-hot list}, "split": {file: split}}``. Items are
``{"image" | "video": tensor, "labels": [A] float multi-hot, "media_path"}``: what a
frame encoder learns from before it is frozen, as real BLIP-2 starts from an image
encoder pretrained without captions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import torch

from ...build import component
from ...errors import DataError
from ...registry import register
from ..annotations import load_json
from ..base import RecordDataset


@register("dataset", "world_attributes")
class WorldAttributes(RecordDataset):
    """Images or videos of the synthetic world with their multi-hot scene attributes.

    Args:
        root: the world directory.
        media: "images" or "videos".
        split: the split to read ("train", "val", "test"; videos use "validate" for val).
        processor: the media processor.
        max_samples: keep the first N items.
        max_bad_fraction: the largest share of bad media files tolerated per epoch.
    """

    def __init__(self, root: str, media: Literal["images", "videos"] = "images", split: str = "train",
                 processor: Optional[component("processor")] = None, max_samples: Optional[int] = None,
                 max_bad_fraction: float = 0.05):
        super().__init__(split, processor, None, max_samples, max_bad_fraction)
        path = Path(root) / "attributes" / f"{media}.json"
        data = load_json(path, "attribute file")
        for key in ("attributes", "root", "labels", "split"):
            if key not in data:
                raise DataError(f"{path}: missing key {key!r}")
        self.attributes: list[str] = list(data["attributes"])
        wanted = {"val": ("val", "validate")}.get(split, (split,))
        media_root = Path(root) / data["root"]
        records = []
        for index, (name, labels) in enumerate(data["labels"].items()):
            if len(labels) != len(self.attributes):
                raise DataError(f"{path} entry {index} ({name}): {len(labels)} labels for "
                                f"{len(self.attributes)} attributes")
            if data["split"].get(name) in wanted:
                records.append({"media_path": self.media_file(media_root, name), "labels": labels})
        if not records:
            raise DataError(f"{path}: no {media} in split {split!r}")
        self.records = self.keep(records)

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        item["labels"] = torch.tensor(item["labels"], dtype=torch.float32)
        return item
