"""COCO captioning in LAVIS's Karpathy layout, with the pictures as COCO 2014 files.

::

    coco/images/train2014/COCO_train2014_000000000009.jpg    Karpathy train pictures
    coco/images/val2014/COCO_val2014_000000000010.jpg        Karpathy val and test pictures
    coco/annotations/coco_karpathy_train.json   [{"image", "caption", "image_id": "coco_9"}], one per caption
    coco/annotations/coco_karpathy_{val,test}.json   [{"image", "caption": [5 captions]}], one per picture
    coco/annotations/coco_karpathy_{val,test}_gt.json   COCO-format ground truth for pycocoevalcap:
        {"images": [{"id"}], "annotations": [{"image_id", "id", "caption"}], "info", "type": "captions"}
"""

from __future__ import annotations

from pathlib import Path

from .plan import Picture
from .scenes import render_image
from .writing import write_json

JPEG_QUALITY = 90
INFO = {
    "description": "vlreg synthetic world: COCO-style captions of generated pictures",
    "version": "1.0",
    "contributor": "vlreg",
}


def write_pictures(root: Path, pictures: list[Picture], side: int) -> None:
    """Render every picture to its COCO file name under ``root/coco/images``."""
    for picture in pictures:
        path = root / "coco" / "images" / picture.file
        path.parent.mkdir(parents=True, exist_ok=True)
        # 4:4:4 chroma keeps the colours of small shapes crisp at 64 px
        render_image(picture.scene, side).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def ground_truth(pictures: list[Picture], first_id: int = 1) -> dict:
    """COCO-format caption ground truth of some pictures; annotation ids count from ``first_id``."""
    annotations = []
    for picture in pictures:
        for text in picture.captions:
            annotations.append({"image_id": picture.image_id, "id": first_id + len(annotations), "caption": text})
    return {"info": INFO, "images": [{"id": p.image_id} for p in pictures], "annotations": annotations,
            "type": "captions"}


def write(root: Path, pictures: dict[str, list[Picture]], side: int) -> dict[str, str]:
    """Pictures and Karpathy annotation files; returns the written paths by name, relative to ``root``."""
    for split_pictures in pictures.values():
        write_pictures(root, split_pictures, side)
    ann = Path("coco") / "annotations"
    train = [{"image": p.file, "caption": text, "image_id": f"coco_{p.image_id}"}
             for p in pictures["train"] for text in p.captions]
    write_json(root / ann / "coco_karpathy_train.json", train)
    paths = {"coco_images": "coco/images", "coco_karpathy_train": str(ann / "coco_karpathy_train.json")}
    next_id = 1  # annotation ids run on over val and test (not train: worlds of other sizes share these files)
    for split in ("val", "test"):
        entries = [{"image": p.file, "caption": list(p.captions)} for p in pictures[split]]
        gt = ground_truth(pictures[split], next_id)
        next_id += len(gt["annotations"])
        write_json(root / ann / f"coco_karpathy_{split}.json", entries)
        write_json(root / ann / f"coco_karpathy_{split}_gt.json", gt)
        paths[f"coco_karpathy_{split}"] = str(ann / f"coco_karpathy_{split}.json")
        paths[f"coco_karpathy_{split}_gt"] = str(ann / f"coco_karpathy_{split}_gt.json")
    return paths
