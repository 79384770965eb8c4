"""The layouts VQAv2 comes in, each read into the same questions, answers and image files.

A layout says which file it reads first for a split (:meth:`VQAv2Layout.key_file`), reads a
split's questions (:meth:`VQAv2Layout.questions`: with the annotators' answers when they are
needed for training), and names the files in the official format that the VQAv2 accuracy
is computed from (:meth:`VQAv2Layout.official_files`). Splits are VQAv2's subtypes: train2014,
val2014, test2015, test-dev2015. Images are COCO's, relative to one of ``image_folders``.
The trees are drawn in ``vlreg/data/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..errors import DataError
from .annotations import entry_list, field, load_json

LayoutName = Literal["official", "vqa_api", "lavis"]


@dataclass(frozen=True)
class VQAQuestion:
    """A question about an image (path relative to the image folders), with its annotators' answers if read."""

    question_id: int
    question: str
    image: str
    answers: Optional[list[str]] = None


def read_answers(path: Path) -> dict[int, list[str]]:
    """``{question_id: [the annotators' answers]}`` from an official annotation file."""
    out = {}
    for index, entry in enumerate(entry_list(load_json(path), path, "annotations")):
        question_id = field(entry, "question_id", int, path, index, "annotations")
        given = field(entry, "answers", list, path, index, "annotations")
        if not given:
            raise DataError(f"{path} annotations entry {index}: 'answers' is empty")
        out[question_id] = [field(a, "answer", str, path, j, f"annotations entry {index} answers")
                            for j, a in enumerate(given)]
    return out


class VQAv2Layout:
    """A way VQAv2 lies on disk."""

    name: str = ""
    image_folders: tuple[str, ...] = ()
    answer_list_file: str = ""

    def key_file(self, split: str, training: bool) -> str:
        raise NotImplementedError

    def questions(self, root: Path, split: str, training: bool) -> list[VQAQuestion]:
        raise NotImplementedError

    def official_files(self, split: str, training: bool) -> tuple[str, Optional[str]]:
        """The split's question file and annotation file in the official format (None where the layout
        has none: test splits, LAVIS's training files, which hold the answers themselves)."""
        raise NotImplementedError


class OfficialFiles(VQAv2Layout):
    """The official question and annotation files, in ``question_folder`` and ``annotation_folder``:
    ``v2_OpenEnded_mscoco_<split>_questions.json`` ``{"questions": [{"image_id", "question",
    "question_id"}]}`` and ``v2_mscoco_<split>_annotations.json`` ``{"annotations": [{"question_id",
    "answers": [{"answer", ...}] x 10, ...}]}``; images named ``<split>/COCO_<split>_<image_id:012d>.jpg``
    (test-dev2015 asks about test2015's images)."""

    def __init__(self, name: str, question_folder: str, annotation_folder: str, image_folders: tuple[str, ...]):
        self.name, self.question_folder, self.annotation_folder = name, question_folder, annotation_folder
        self.image_folders, self.answer_list_file = image_folders, "answer_list.json"

    def key_file(self, split: str, training: bool) -> str:
        return str(Path(self.question_folder, f"v2_OpenEnded_mscoco_{split}_questions.json"))

    def official_files(self, split: str, training: bool) -> tuple[str, Optional[str]]:
        annotations = str(Path(self.annotation_folder, f"v2_mscoco_{split}_annotations.json"))
        return self.key_file(split, training), None if split.startswith("test") and not training else annotations

    def questions(self, root: Path, split: str, training: bool) -> list[VQAQuestion]:
        path = root / self.key_file(split, training)
        answers = read_answers(root / self.official_files(split, True)[1]) if training else {}
        images = split.replace("test-dev", "test")
        out = []
        for index, entry in enumerate(entry_list(load_json(path), path, "questions")):
            image_id = field(entry, "image_id", int, path, index, "questions")
            question_id = field(entry, "question_id", int, path, index, "questions")
            if training and question_id not in answers:
                raise DataError(f"{path} questions entry {index}: question_id {question_id} has no entry in "
                                f"{root / self.official_files(split, True)[1]}")
            out.append(VQAQuestion(question_id, field(entry, "question", str, path, index, "questions"),
                                   f"{images}/COCO_{images}_{image_id:012d}.jpg", answers.get(question_id)))
        return out


class Lavis(VQAv2Layout):
    """LAVIS's ``coco/`` directory for VQAv2: lists of ``{"question_id", "question", "image":
    "val2014/COCO_val2014_<id>.jpg", "answer": [the annotators' answers]}`` in ``annotations/``
    (``vqa_train.json`` train2014; ``vqa_val.json`` val2014 for training, ``vqa_val_eval.json`` for
    evaluation, with the official val2014 files beside it for the accuracy; ``vqa_test.json`` for the
    test splits, without answers), LAVIS's ``answer_list.json``, and the images in ``images/``."""

    name, image_folders, answer_list_file = "lavis", ("images",), "annotations/answer_list.json"

    def key_file(self, split: str, training: bool) -> str:
        if split.startswith("test"):
            return "annotations/vqa_test.json"
        if split == "val2014":
            return "annotations/vqa_val.json" if training else "annotations/vqa_val_eval.json"
        return f"annotations/vqa_{split.removesuffix('2014')}.json"

    def official_files(self, split: str, training: bool) -> tuple[str, Optional[str]]:
        if split == "val2014" and not training:
            return ("annotations/v2_OpenEnded_mscoco_val2014_questions.json",
                    "annotations/v2_mscoco_val2014_annotations.json")
        return self.key_file(split, training), None

    def questions(self, root: Path, split: str, training: bool) -> list[VQAQuestion]:
        path = root / self.key_file(split, training)
        out = []
        for index, entry in enumerate(entry_list(load_json(path), path)):
            answers = None
            if training:
                answers = field(entry, "answer", list, path, index)
                if not answers or not all(isinstance(a, str) for a in answers):
                    raise DataError(f"{path} entry {index}: 'answer' must be a non-empty list of strings")
            out.append(VQAQuestion(field(entry, "question_id", int, path, index),
                                   field(entry, "question", str, path, index),
                                   field(entry, "image", str, path, index), answers))
        return out


LAYOUTS: dict[str, VQAv2Layout] = {layout.name: layout for layout in (
    OfficialFiles("official", "", "", ("../coco/images", "images", ".")),
    OfficialFiles("vqa_api", "Questions", "Annotations", ("Images/mscoco",)),
    Lavis(),
)}
