"""The truth about every media file: attribute labels (multi-hot) and the scenes themselves.

::

    attributes/images.json   {"attributes": [names], "root": "coco/images",
                              "labels": {"train2014/COCO_train2014_000000000009.jpg": [0, 1, ...]},
                              "split": {file: "train" | "val" | "test"}}
    attributes/videos.json   the same for "msrvtt/videos/all" ("video0.mp4"; splits train | validate | test)
    attributes/scenes.json   {"images": {file: scene}, "videos": {file: scene}}  (Scene.to_dict)

Attribute names are ``kind=value``: colours and shapes present (for clips, any colour
shown at any time), the number of things, places and sizes (pictures), the event and
the direction of motion (clips). A frame encoder can be pretrained on these labels
without any caption.
"""

from __future__ import annotations

from pathlib import Path

from .plan import Clip, Picture
from .scenes import COLORS, DIRECTIONS, EVENTS, POSITIONS, SHAPES, SIZES, Scene
from .writing import write_json

_COMMON = [f"color={c}" for c in COLORS] + [f"shape={s}" for s in SHAPES] + [f"count={n}" for n in (1, 2, 3)]
IMAGE_ATTRIBUTES = _COMMON + [f"position={p}" for p in POSITIONS] + [f"size={s}" for s in SIZES]
VIDEO_ATTRIBUTES = _COMMON + [f"event={e}" for e in EVENTS] + [f"direction={d}" for d in DIRECTIONS]


def scene_attributes(scene: Scene) -> set[str]:
    """The attribute names true of a scene."""
    names = {f"count={len(scene.things)}"}
    for thing in scene.things:
        names |= {f"color={c}" for c in thing.colors()} | {f"shape={thing.shape}"}
    if scene.event == "still":
        names |= {f"position={t.position}" for t in scene.things} | {f"size={t.size}" for t in scene.things}
    else:
        names.add(f"event={scene.event}")
        if scene.direction is not None:
            names.add(f"direction={scene.direction}")
    return names


def multi_hot(scene: Scene, attributes: list[str]) -> list[int]:
    true = scene_attributes(scene)
    return [int(name in true) for name in attributes]


def labels_file(items: list[Picture] | list[Clip], attributes: list[str], root: str) -> dict:
    return {"attributes": attributes, "root": root,
            "labels": {item.file: multi_hot(item.scene, attributes) for item in items},
            "split": {item.file: item.split for item in items}}


def write(root: Path, pictures: list[Picture], clips: list[Clip]) -> dict[str, str]:
    """The two label files and the scenes; returns their paths by name, relative to ``root``."""
    write_json(root / "attributes" / "images.json", labels_file(pictures, IMAGE_ATTRIBUTES, "coco/images"))
    write_json(root / "attributes" / "videos.json", labels_file(clips, VIDEO_ATTRIBUTES, "msrvtt/videos/all"))
    write_json(root / "attributes" / "scenes.json",
               {"images": {p.file: p.scene.to_dict() for p in pictures},
                "videos": {c.file: c.scene.to_dict() for c in clips}})
    return {"image_attributes": "attributes/images.json", "video_attributes": "attributes/videos.json",
            "scenes": "attributes/scenes.json"}
