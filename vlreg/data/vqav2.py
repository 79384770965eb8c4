"""VQAv2 in its official files: questions, annotations (10 answers each), COCO images.

Layout under ``root`` (the VQAv2 directory as distributed)::

    v2_OpenEnded_mscoco_<split>_questions.json   {"questions": [{"image_id", "question", "question_id"}]}
    v2_mscoco_<split>_annotations.json           {"annotations": [{"question_id", "answers": [{"answer", ...}] x 10, ...}]}
    answer_list.json                             candidate answers for rank-based inference

with ``<split>`` one of train2014, val2014, test2015, test-dev2015 (the test splits
have no annotations). Images are COCO's, found by file name:
``<image_root>/<images split>/COCO_<images split>_<image_id:012d>.jpg`` (test-dev2015 uses
test2015's images); ``image_root`` defaults to the sibling ``../coco/images``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from ..build import component
from ..errors import DataError
from ..registry import register
from .annotations import entry_list, field, load_json, resolve
from .base import RecordDataset

AnswerChoice = Literal["frequency", "most_common"]


def answer_weights(answers: list[str]) -> tuple[list[str], list[float]]:
    """Distinct answers (first-seen order) and their share of the annotators: weights sum to 1."""
    counts = Counter(answers)
    distinct = list(counts)
    return distinct, [counts[a] / len(answers) for a in distinct]


def choose_answer(answers: list[str], weights: list[float], rule: AnswerChoice) -> str:
    """The training target: drawn with probability ``weights`` ("frequency"), or the heaviest."""
    if rule == "most_common":
        return answers[max(range(len(answers)), key=lambda i: (weights[i], -i))]
    return answers[int(torch.multinomial(torch.tensor(weights, dtype=torch.float64), 1))]


class AnswerTargets:
    """Mixin for QA readers: training items get ``text_output`` from ``answers`` / ``weights``."""

    training: bool
    answer_choice: AnswerChoice

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.training:
            item["text_output"] = choose_answer(item["answers"], item["weights"], self.answer_choice)
        return item


@register("dataset", "vqav2")
class VQAv2(AnswerTargets, RecordDataset):
    """VQAv2 open-ended questions on COCO images, for training and evaluation.

    Items. Training: ``{"image" [3,H,W], "text_input": question, "text_output": answer,
    "answers": [distinct answers], "weights": [their share of the 10 annotators],
    "question_id", "media_path"}``; ``text_output`` is drawn per access with
    probability ``weights`` ("frequency", as BLIP-2 fine-tuning does) or is the most
    frequent answer ("most_common", ties to the first annotator's).
    Evaluation: ``{"image", "text_input", "question_id", "media_path"}``; the dataset
    exposes ``question_file``, ``annotation_file`` (None for test splits) and
    ``answer_list`` for the metric and rank-based inference.

    Args:
        root: the VQAv2 directory.
        split: the official subtype: train2014, val2014, test2015 or test-dev2015.
        processor: image processor; None for no media.
        text_processor: applied to questions (e.g. question).
        training: training items (default: for splits starting with "train").
        answer_choice: "frequency" or "most_common" (see above).
        image_root: COCO image directory, relative to root or absolute (default "../coco/images").
        question_file, annotation_file, answer_list_file: overrides, relative to root.
        max_samples: keep the first N questions.
        max_bad_fraction: the largest share of bad image files tolerated per epoch.
    """

    def __init__(self, root: str, split: str = "train2014", processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, training: Optional[bool] = None,
                 answer_choice: AnswerChoice = "frequency", image_root: Optional[str] = None,
                 question_file: Optional[str] = None, annotation_file: Optional[str] = None,
                 answer_list_file: Optional[str] = None, max_samples: Optional[int] = None,
                 max_bad_fraction: float = 0.05):
        super().__init__(split, processor, text_processor, max_samples, max_bad_fraction)
        self.root = Path(root)
        self.training = split.startswith("train") if training is None else training
        self.answer_choice = answer_choice
        self.image_root = resolve(self.root, image_root, "../coco/images")
        self.question_file = resolve(self.root, question_file, f"v2_OpenEnded_mscoco_{split}_questions.json")
        annotations = resolve(self.root, annotation_file, f"v2_mscoco_{split}_annotations.json")
        self.annotation_file: Optional[Path] = annotations if annotations.is_file() else None
        if self.annotation_file is None and (self.training or annotation_file is not None):
            raise DataError(f"annotation file {annotations} not found (needed for training on {split})")
        self.answer_list_file = resolve(self.root, answer_list_file, "answer_list.json")
        self._answer_list: Optional[list[str]] = None

        answers = self._read_answers() if self.training else {}
        image_split = split.replace("test-dev", "test")
        for index, entry in enumerate(entry_list(load_json(self.question_file), self.question_file, "questions")):
            image_id = field(entry, "image_id", int, self.question_file, index, "questions")
            record = {
                "media_path": self.media_file(self.image_root, f"{image_split}/COCO_{image_split}_{image_id:012d}.jpg"),
                "text_input": field(entry, "question", str, self.question_file, index, "questions"),
                "question_id": field(entry, "question_id", int, self.question_file, index, "questions"),
            }
            if self.training:
                if record["question_id"] not in answers:
                    raise DataError(f"{self.question_file} questions entry {index}: question_id "
                                    f"{record['question_id']} has no entry in {self.annotation_file}")
                record["answers"], record["weights"] = answers[record["question_id"]]
            self.records.append(record)
        self.records = self.keep(self.records)

    def _read_answers(self) -> dict[int, tuple[list[str], list[float]]]:
        path = self.annotation_file
        out = {}
        for index, entry in enumerate(entry_list(load_json(path), path, "annotations")):
            question_id = field(entry, "question_id", int, path, index, "annotations")
            given = field(entry, "answers", list, path, index, "annotations")
            if not given:
                raise DataError(f"{path} annotations entry {index}: 'answers' is empty")
            answers = [field(a, "answer", str, path, j, f"annotations entry {index} answers") for j, a in enumerate(given)]
            out[question_id] = answer_weights(answers)
        return out

    @property
    def answer_list(self) -> list[str]:
        """The candidate answers of rank-based inference (``answer_list.json``)."""
        if self._answer_list is None:
            data = load_json(self.answer_list_file, "answer list")
            if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
                raise DataError(f"{self.answer_list_file}: expected a non-empty JSON list of answer strings")
            self._answer_list = data
        return self._answer_list
