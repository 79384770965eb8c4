"""What a world holds before anything is written: its pictures, clips and sentences, with their language.

Every item draws from its own random stream, seeded by ``(seed, stream, index)``,
so worlds of different sizes share their items: the first 2,000 training
pictures of the ``large`` world are the ``default`` world's training pictures,
and ``default`` and ``large`` have the same validation and test items (an
experiment with N and 10N training pairs is evaluated on the same data).

Identifiers follow the real datasets: COCO image ids are sparse integers, unique
over train2014 and val2014 (train pictures ``9 + 4i``; Karpathy val ``10 + 4i``
and test ``11 + 4i``, both in val2014); MSRVTT videos are numbered ``video0``,
``video1``, ... over train, then validate, then test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from .language import Question, annotate, caption, captions, clip_questions, image_questions
from .scenes import Scene, sample_image_scene, sample_video_scene

PICTURE_SPLITS = ("train", "val", "test")  # Karpathy splits
CLIP_SPLITS = ("train", "validate", "test")  # MSRVTT splits
STREAMS = {("picture", "train"): 1, ("picture", "val"): 2, ("picture", "test"): 3,
           ("clip", "train"): 11, ("clip", "validate"): 12, ("clip", "test"): 13,
           ("corpus", ""): 21, ("shuffle", ""): 31}
FIRST_IMAGE_ID = {"train": 9, "val": 10, "test": 11}
IMAGE_ID_STRIDE = 4


@dataclass(frozen=True)
class WorldSize:
    """How many items of each kind, and how media look.

    ``images``: Karpathy train/val/test pictures; ``videos``: MSRVTT train/validate/test
    clips; ``corpus``: text-only sentences; ``shards``: WebDataset shards of the
    training pairs; ``image_size``: side of pictures and frames in pixels;
    ``num_frames``: frames per clip.
    """

    images: tuple[int, int, int]
    videos: tuple[int, int, int]
    corpus: int
    shards: int
    image_size: int = 64
    num_frames: int = 8
    fps: int = 8
    captions: int = 5
    image_questions: int = 5
    video_questions: int = 4


# Generation on 2 shared CPU cores: small about 2 s (3 MB), default about 25 s (75 MB), large about 4 min (0.7 GB).
SIZES: dict[str, WorldSize] = {
    "small": WorldSize(images=(60, 20, 20), videos=(30, 10, 10), corpus=2_000, shards=4),
    "default": WorldSize(images=(2_000, 200, 200), videos=(600, 100, 100), corpus=20_000, shards=10),
    "large": WorldSize(images=(20_000, 200, 200), videos=(6_000, 100, 100), corpus=200_000, shards=40),
}


def stream(seed: int, name: str, split: str = "", index: int = 0) -> np.random.Generator:
    """The random stream of one item."""
    return np.random.default_rng([seed, STREAMS[(name, split)], index])


@dataclass
class Picture:
    """One COCO-style picture: its scene, captions and VQA questions with ten annotators' answers each."""

    split: Literal["train", "val", "test"]
    index: int
    image_id: int
    scene: Scene
    captions: list[str]
    questions: list[Question]
    answers: list[list[tuple[str, str]]] = field(default_factory=list)  # per question: 10 (answer, confidence)

    @property
    def folder(self) -> str:
        """``train2014`` for Karpathy train, ``val2014`` for val and test (as in the real splits' images)."""
        return "train2014" if self.split == "train" else "val2014"

    @property
    def file(self) -> str:
        """Path under the COCO image root: ``train2014/COCO_train2014_000000000009.jpg``."""
        return f"{self.folder}/COCO_{self.folder}_{self.image_id:012d}.jpg"


@dataclass
class Clip:
    """One MSRVTT-style clip: its scene, captions and one-word QA pairs."""

    split: Literal["train", "validate", "test"]
    index: int
    number: int
    scene: Scene
    captions: list[str]
    questions: list[Question]

    @property
    def video_id(self) -> str:
        return f"video{self.number}"

    @property
    def file(self) -> str:
        """Path under the MSRVTT video root: ``video0.mp4``."""
        return f"{self.video_id}.mp4"


def _per_split(kind: str, splits: tuple[str, ...], counts: tuple[int, ...], seed: int, make: Callable) -> dict:
    """``{split: [make(split, index, number, rng), ...]}``; ``number`` runs on over the splits."""
    out: dict[str, list] = {}
    number = 0
    for split, count in zip(splits, counts):
        out[split] = []
        for i in range(count):
            out[split].append(make(split, i, number, stream(seed, kind, split, i)))
            number += 1
    return out


def plan_pictures(size: WorldSize, seed: int) -> dict[str, list[Picture]]:
    """The pictures of each Karpathy split."""

    def make(split: str, i: int, number: int, rng: np.random.Generator) -> Picture:
        scene = sample_image_scene(rng)
        texts = captions(scene, rng, size.captions)
        questions = image_questions(scene, rng, size.image_questions)
        answers = [annotate(q.answer, rng) for q in questions]
        image_id = FIRST_IMAGE_ID[split] + IMAGE_ID_STRIDE * i
        return Picture(split, i, image_id, scene, texts, questions, answers)

    return _per_split("picture", PICTURE_SPLITS, size.images, seed, make)


def plan_clips(size: WorldSize, seed: int) -> dict[str, list[Clip]]:
    """The clips of each MSRVTT split, numbered consecutively over the splits."""

    def make(split: str, i: int, number: int, rng: np.random.Generator) -> Clip:
        scene = sample_video_scene(rng)
        texts = captions(scene, rng, size.captions)
        return Clip(split, i, number, scene, texts, clip_questions(scene, rng, size.video_questions))

    return _per_split("clip", CLIP_SPLITS, size.videos, seed, make)


def plan_corpus(size: WorldSize, seed: int) -> list[str]:
    """Sentences about scenes that are never rendered, one caption each.

    Pictures and clips are described in the proportion of the paired training sets.
    """
    share = size.images[0] / max(1, size.images[0] + size.videos[0])
    sentences = []
    for i in range(size.corpus):
        rng = stream(seed, "corpus", "", i)
        scene = sample_image_scene(rng) if rng.random() < share else sample_video_scene(rng)
        sentences.append(caption(scene, rng))
    return sentences
