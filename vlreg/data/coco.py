"""COCO captioning and retrieval on the Karpathy splits, in LAVIS's annotation format.

Layout under ``root`` (a COCO directory as distributed for BLIP/BLIP-2)::

    annotations/coco_karpathy_train.json   [{"image": "train2014/COCO_train2014_000000000009.jpg",
                                             "caption": str, "image_id": "coco_9"}]   one entry per caption
    annotations/coco_karpathy_val.json     [{"image": ..., "caption": [str, ...]}]    one entry per image
    annotations/coco_karpathy_test.json    (same as val)
    annotations/coco_karpathy_{val,test}_gt.json   COCO-format ground truth for the caption metrics
    images/train2014/..., images/val2014/...

Either kind of entry is accepted in any split (a caption string or a list).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from ..build import component
from ..errors import DataError
from ..registry import register
from .annotations import entry_list, field, load_json, resolve, string_list
from .base import RecordDataset, RetrievalItems


@dataclass
class KarpathyEntry:
    """One annotation entry: an image (path relative to the image root) and its captions."""

    image: str
    captions: list[str]
    image_id: Any = None


def read_karpathy(path: str | os.PathLike) -> list[KarpathyEntry]:
    """Entries of a Karpathy-split file, checked (DataError naming file, entry and key)."""
    entries = []
    for index, entry in enumerate(entry_list(load_json(path), path)):
        image = field(entry, "image", str, path, index)
        captions = string_list(entry, "caption", path, index)
        entries.append(KarpathyEntry(image, captions, entry.get("image_id")))
    return entries


def group_by_image(entries: list[KarpathyEntry]) -> list[KarpathyEntry]:
    """One entry per image (first-seen order) holding all of its captions."""
    grouped: dict[str, KarpathyEntry] = {}
    for entry in entries:
        if entry.image in grouped:
            grouped[entry.image].captions.extend(entry.captions)
        else:
            grouped[entry.image] = KarpathyEntry(entry.image, list(entry.captions), entry.image_id)
    return list(grouped.values())


def coco_image_id(image: str, path: str | os.PathLike) -> int:
    """The numeric COCO id in a file name: ``val2014/COCO_val2014_000000391895.jpg`` -> 391895."""
    digits = Path(image).stem.rsplit("_", 1)[-1]
    if not digits.isdigit():
        raise DataError(f"{path}: image {image!r} does not end in a numeric COCO id (COCO_<split>_<id>.jpg)")
    return int(digits)


class KarpathySplit(RecordDataset):
    """Shared by the COCO readers: where the files are, and the entries of one split."""

    def __init__(self, root: str, split: str, processor: Optional[Any], text_processor: Optional[Any],
                 ann_root: Optional[str], ann_file: Optional[str], image_root: Optional[str],
                 max_samples: Optional[int], max_bad_fraction: float):
        super().__init__(split, processor, text_processor, max_samples, max_bad_fraction)
        self.root = Path(root)
        self.ann_root = resolve(self.root, ann_root, "annotations")
        self.ann_file = resolve(self.ann_root, ann_file, f"coco_karpathy_{split}.json")
        self.image_root = resolve(self.root, image_root, "images")
        self.entries = read_karpathy(self.ann_file)

    def captions(self) -> list[str]:
        """Every caption of the split, raw, in file order (for text-only corpora)."""
        return [caption for entry in self.entries for caption in entry.captions]


@register("dataset", "coco_caption")
class CocoCaption(KarpathySplit):
    """COCO captioning (Karpathy splits): image-caption pairs for training, images with references for evaluation.

    Items. train (one per caption): ``{"image" [3,H,W], "text_input": caption,
    "image_id": the annotation's image_id as given ("coco_9"), "media_path"}``.
    val/test (one per image): ``{"image", "image_id": the numeric COCO id, "media_path"}``;
    the ground truth is ``gt_file`` (COCO-format JSON, None when absent) and
    ``references() -> {image_id: [captions]}``.

    Args:
        root: the COCO directory (holding ``annotations/`` and ``images/``).
        split: "train", "val" or "test".
        processor: image processor (e.g. image_train / image_eval); None for no media.
        text_processor: applied to training captions (e.g. caption).
        ann_root: annotation directory, relative to root or absolute (default "annotations").
        ann_file: the split's annotation file, relative to ann_root (default coco_karpathy_<split>.json).
        image_root: image directory, relative to root or absolute (default "images").
        gt_file: COCO-format ground truth, relative to ann_root (default coco_karpathy_<split>_gt.json).
        max_samples: keep the first N records (captions for train, images for val/test).
        max_bad_fraction: the largest share of bad image files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "val", "test"] = "train",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None,
                 ann_root: Optional[str] = None, ann_file: Optional[str] = None, image_root: Optional[str] = None,
                 gt_file: Optional[str] = None, max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, processor, text_processor, ann_root, ann_file, image_root,
                         max_samples, max_bad_fraction)
        self.training = split == "train"
        gt = resolve(self.ann_root, gt_file, f"coco_karpathy_{split}_gt.json")
        self.gt_file: Optional[Path] = gt if gt.is_file() else None
        if gt_file is not None and self.gt_file is None:
            raise DataError(f"ground-truth file {gt} not found")
        if self.training:
            self.records = self.keep([
                {"media_path": self.media_file(self.image_root, entry.image), "text_input": caption,
                 "image_id": entry.image_id if entry.image_id is not None else entry.image}
                for entry in self.entries for caption in entry.captions
            ])
        else:
            self.images = self.keep(group_by_image(self.entries))
            self.records = [
                {"media_path": self.media_file(self.image_root, entry.image),
                 "image_id": coco_image_id(entry.image, self.ann_file)}
                for entry in self.images
            ]

    def references(self) -> dict[int, list[str]]:
        """``{image_id: [reference captions]}`` of the evaluation images (raw captions)."""
        return {record["image_id"]: entry.captions for record, entry in zip(self.records, self.images)}


@register("dataset", "coco_retrieval")
class CocoRetrieval(RetrievalItems, KarpathySplit):
    """COCO image-text retrieval (Karpathy val/test): images as items, all their captions as texts.

    Items: ``{"image" [3,H,W], "index": i, "media_path"}`` for each image i. The
    dataset exposes ``texts`` (the captions, processed by text_processor),
    ``txt2media`` (text j -> its image index) and ``media2txt`` (image i -> its
    text indices), as the retrieval metric takes them.

    Args:
        root: the COCO directory (holding ``annotations/`` and ``images/``).
        split: "test" or "val".
        processor: image processor (e.g. image_eval); None for no media.
        text_processor: applied to the captions (e.g. caption).
        ann_root: annotation directory, relative to root or absolute (default "annotations").
        ann_file: the split's annotation file, relative to ann_root (default coco_karpathy_<split>.json).
        image_root: image directory, relative to root or absolute (default "images").
        max_samples: keep the first N images (with their captions).
        max_bad_fraction: the largest share of bad image files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["val", "test"] = "test",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None,
                 ann_root: Optional[str] = None, ann_file: Optional[str] = None, image_root: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, processor, text_processor, ann_root, ann_file, image_root,
                         max_samples, max_bad_fraction)
        images = self.keep(group_by_image(self.entries))
        self.index_media([(self.media_file(self.image_root, entry.image), entry.captions) for entry in images])
