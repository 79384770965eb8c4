"""VQAv2 open-ended questions on COCO images, in the layouts users have it.

The reader recognises the layout of ``root`` from the files there (:mod:`vlreg.data.vqav2_layouts`;
the trees are drawn in ``vlreg/data/README.md``), or reads the one named by ``layout:``:

- ``official``: the official files unzipped into one directory,
  ``v2_OpenEnded_mscoco_<split>_questions.json`` and ``v2_mscoco_<split>_annotations.json``;
  COCO's images in ``../coco/images`` (COCO beside VQAv2, as vlreg's data directory has it),
  ``images/`` or root itself;
- ``vqa_api``: the tree the official VQA API expects, ``Questions/``, ``Annotations/``,
  ``Images/mscoco/<split>/``;
- ``lavis``: LAVIS's ``coco/`` directory, ``annotations/vqa_{train,val,val_eval,test}.json``
  with the official val2014 files for scoring, and ``images/``.

``<split>`` is one of train2014, val2014, test2015, test-dev2015 (the test splits have no
answers). ``answer_list.json``, the candidate answers of rank-based inference, is LAVIS's file,
not part of the official release: the lavis layout has it in ``annotations/``; with the others
put it in ``root``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from ..build import component
from ..errors import DataError
from ..registry import register
from .annotations import load_json
from .base import RecordDataset
from .layouts import choose_layout
from .vqav2_layouts import LAYOUTS, LayoutName

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
    exposes ``question_file`` and ``annotation_file`` in the official format (the latter None
    for test splits) for the metric, and ``answer_list`` for rank-based inference.

    Args:
        root: the VQAv2 directory, in any layout (see the module docstring).
        split: the official subtype: train2014, val2014, test2015 or test-dev2015.
        processor: image processor; None for no media.
        text_processor: applied to questions (e.g. question).
        training: training items (default: for splits starting with "train").
        answer_choice: "frequency" or "most_common" (see above).
        layout: official, vqa_api or lavis (default: recognised from the files).
        image_root: one COCO image directory instead of the layout's, relative to root or absolute.
        answer_list_file: the candidate answers, relative to root (default: the layout's ``answer_list.json``).
        max_samples: keep the first N questions.
        max_bad_fraction: the largest share of bad image files tolerated per epoch.
    """

    def __init__(self, root: str, split: str = "train2014", processor: Optional[component("processor")] = None,
                 text_processor: Optional[component("processor")] = None, training: Optional[bool] = None,
                 answer_choice: AnswerChoice = "frequency", layout: Optional[LayoutName] = None,
                 image_root: Optional[str] = None, answer_list_file: Optional[str] = None,
                 max_samples: Optional[int] = None, max_bad_fraction: float = 0.05):
        super().__init__(split, processor, text_processor, max_samples, max_bad_fraction)
        self.root = Path(root)
        self.training = split.startswith("train") if training is None else training
        self.answer_choice = answer_choice
        reader = f"vqav2 {split}"
        key_files = {name: l.key_file(split, self.training) for name, l in LAYOUTS.items()}
        self.layout = LAYOUTS[choose_layout(self.root, key_files, layout, reader)]
        question_file, annotation_file = self.layout.official_files(split, self.training)
        self.question_file = self.root / question_file
        self.annotation_file: Optional[Path] = self.root / annotation_file if annotation_file else None
        if self.annotation_file is not None and not self.annotation_file.is_file():
            raise DataError(f"annotation file {self.annotation_file} not found (layout {self.layout.name}, {split})")
        self.answer_list_file = self.root / (answer_list_file or self.layout.answer_list_file)
        self._answer_list: Optional[list[str]] = None
        images = self.media_folders(self.root, self.layout.image_folders, image_root, reader)
        for question in self.keep(self.layout.questions(self.root, split, self.training)):
            record = {"media_path": self.find_media(images, question.image), "text_input": question.question,
                      "question_id": question.question_id}
            if self.training:
                record["answers"], record["weights"] = answer_weights(question.answers)
            self.records.append(record)

    @property
    def answer_list(self) -> list[str]:
        """The candidate answers of rank-based inference (LAVIS's ``answer_list.json``)."""
        if self._answer_list is None:
            data = load_json(self.answer_list_file, "answer list (LAVIS's answer_list.json)")
            if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
                raise DataError(f"{self.answer_list_file}: expected a non-empty JSON list of answer strings")
            self._answer_list = data
        return self._answer_list
