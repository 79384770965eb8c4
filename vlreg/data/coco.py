"""COCO captioning and retrieval on the Karpathy splits, in LAVIS's or BLIP's layout.

The Karpathy files are the same in both (BLIP made them, LAVIS took them over)::

    coco_karpathy_train.json   [{"image": "train2014/COCO_train2014_000000000009.jpg",
                                 "caption": str, "image_id": "coco_9"}]   one entry per caption
    coco_karpathy_val.json     [{"image": ..., "caption": [str, ...]}]    one entry per image
    coco_karpathy_test.json    (same as val)

Either kind of entry is accepted in any split (a caption string or a list). The layouts
differ in where the files lie (recognised from the files under ``root``, or named by
``layout:``; the trees are drawn in ``vlreg/data/README.md``):

- ``lavis``: ``annotations/coco_karpathy_<split>.json``, images in ``images/``; the COCO-format
  ground truth ``coco_karpathy_{val,test}_gt.json`` in ``annotations/`` or in LAVIS's cache
  beside the COCO directory, ``../coco_gt/``;
- ``blip``: ``annotation/coco_karpathy_<split>.json``, ground truth in ``annotation/coco_gt/``,
  images (BLIP's ``image_root``, holding ``train2014/`` and ``val2014/``) in ``images/`` or root.

The ground truth is optional: references come from the Karpathy files either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from ..build import component
from ..errors import DataError
from ..registry import register
from .annotations import entry_list, field, load_json, string_list
from .base import RecordDataset, RetrievalItems
from .layouts import choose_layout

LayoutName = Literal["lavis", "blip"]


@dataclass(frozen=True)
class KarpathyLayout:
    """Where a layout keeps the Karpathy files, their COCO-format ground truth and the COCO images
    (folders relative to root, tried in order)."""

    name: str
    annotation_folder: str
    ground_truth_folders: tuple[str, ...]
    image_folders: tuple[str, ...]


LAYOUTS = {layout.name: layout for layout in (
    KarpathyLayout("lavis", "annotations", ("annotations", "../coco_gt"), ("images",)),
    KarpathyLayout("blip", "annotation", ("annotation/coco_gt",), ("images", ".")),
)}


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
    """Shared by the COCO readers: the layout of ``root``, and the entries of one split."""

    def __init__(self, root: str, split: str, reader: str, layout: Optional[str], processor: Optional[Any],
                 text_processor: Optional[Any], ann_file: Optional[str], image_root: Optional[str],
                 max_samples: Optional[int], max_bad_fraction: float):
        super().__init__(split, processor, text_processor, max_samples, max_bad_fraction)
        self.root = Path(root)
        reader = f"{reader} {split}"
        name = ann_file or f"coco_karpathy_{split}.json"
        key_files = {l.name: f"{l.annotation_folder}/{name}" for l in LAYOUTS.values()}
        self.layout = LAYOUTS[choose_layout(self.root, key_files, layout, reader)]
        self.ann_file = self.root / key_files[self.layout.name]
        self.images = self.media_folders(self.root, self.layout.image_folders, image_root, reader)
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
    the ground truth is ``gt_file`` (COCO-format JSON, None when the layout has none) and
    ``references() -> {image_id: [captions]}``.

    Args:
        root: the COCO directory, in LAVIS's or BLIP's layout (see the module docstring).
        split: "train", "val" or "test".
        processor: image processor (e.g. image_train / image_eval); None for no media.
        text_processor: applied to training captions (e.g. caption).
        layout: "lavis" or "blip" (default: recognised from the files under root).
        ann_file: the split's annotation file, in the layout's annotation folder (default
            coco_karpathy_<split>.json; e.g. LAVIS's vg_caption.json, cc3m.json, sbu.json).
        image_root: one image directory instead of the layout's, relative to root or absolute.
        gt_file: COCO-format ground truth, in the layout's annotation folder (default: the layout's
            coco_karpathy_<split>_gt.json where present).
        max_samples: keep the first N records (captions for train, images for val/test).
        max_bad_fraction: the largest share of bad image files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["train", "val", "test"] = "train",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, layout: Optional[LayoutName] = None,
                 ann_file: Optional[str] = None, image_root: Optional[str] = None, gt_file: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, "coco_caption", layout, processor, text_processor, ann_file, image_root,
                         max_samples, max_bad_fraction)
        self.training = split == "train"
        self.gt_file = self.ground_truth(split, gt_file)
        if self.training:
            self.records = self.keep([
                {"media_path": self.find_media(self.images, entry.image), "text_input": caption,
                 "image_id": entry.image_id if entry.image_id is not None else entry.image}
                for entry in self.entries for caption in entry.captions
            ])
        else:
            self.evaluated = self.keep(group_by_image(self.entries))
            self.records = [
                {"media_path": self.find_media(self.images, entry.image),
                 "image_id": coco_image_id(entry.image, self.ann_file)}
                for entry in self.evaluated
            ]

    def references(self) -> dict[int, list[str]]:
        """``{image_id: [reference captions]}`` of the evaluation images (raw captions)."""
        return {record["image_id"]: entry.captions for record, entry in zip(self.records, self.evaluated)}

    def ground_truth(self, split: str, gt_file: Optional[str]) -> Optional[Path]:
        """The COCO-format ground truth: ``gt_file`` (which must exist), else the layout's where present."""
        if gt_file is not None:
            path = self.root / self.layout.annotation_folder / gt_file
            if not path.is_file():
                raise DataError(f"ground-truth file {path} not found")
            return path
        name = f"coco_karpathy_{split}_gt.json"
        found = [self.root / folder / name for folder in self.layout.ground_truth_folders]
        return next((Path(os.path.normpath(path)) for path in found if path.is_file()), None)


@register("dataset", "coco_retrieval")
class CocoRetrieval(RetrievalItems, KarpathySplit):
    """COCO image-text retrieval (Karpathy val/test): images as items, all their captions as texts.

    Items: ``{"image" [3,H,W], "index": i, "media_path"}`` for each image i. The
    dataset exposes ``texts`` (the captions, processed by text_processor),
    ``txt2media`` (text j -> its image index) and ``media2txt`` (image i -> its
    text indices), as the retrieval metric takes them.

    Args:
        root: the COCO directory, in LAVIS's or BLIP's layout (see the module docstring).
        split: "test" or "val".
        processor: image processor (e.g. image_eval); None for no media.
        text_processor: applied to the captions (e.g. caption).
        layout: "lavis" or "blip" (default: recognised from the files under root).
        ann_file: the split's annotation file, in the layout's annotation folder (default coco_karpathy_<split>.json).
        image_root: one image directory instead of the layout's, relative to root or absolute.
        max_samples: keep the first N images (with their captions).
        max_bad_fraction: the largest share of bad image files tolerated per epoch.
    """

    def __init__(self, root: str, split: Literal["val", "test"] = "test",
                 processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, layout: Optional[LayoutName] = None,
                 ann_file: Optional[str] = None, image_root: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(root, split, "coco_retrieval", layout, processor, text_processor, ann_file, image_root,
                         max_samples, max_bad_fraction)
        images = self.keep(group_by_image(self.entries))
        self.index_media([(self.find_media(self.images, entry.image), entry.captions) for entry in images])
