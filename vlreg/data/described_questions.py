"""Questions that follow a description of their media: text for a language model to learn to answer from.

BLIP-2's frozen LLM answers a question about soft prompts that describe the picture:
``[prompts] </s> Question: ... Short answer:``. An LLM learns that skill from text where a
question follows what it asks about. :class:`DescribedQuestions` writes such text from a
question-answer dataset and a caption dataset of the same media: each question's text is
preceded by one caption of its picture or video and a separator (the LLM's ``</s>``, so that
the question starts where it will start after the prompts)::

    a red circle moves to the left</s>Question: what color is the circle? Short answer:   ->   red

Text only: media are never read.
"""

from __future__ import annotations

from typing import Any

from ..build import component
from ..errors import DataError
from ..registry import register


@register("dataset", "described_questions")
class DescribedQuestions:
    """Each item of ``questions`` with a caption of the same media file put before its question.

    Items are the question items with ``text_input`` = caption + ``separator`` + the question's
    ``text_input`` (formatted by its own text processor); ``text_output``, answers and ids are kept.
    Question ``i`` takes caption ``i mod n`` of the ``n`` captions of its media, so every caption
    is used and the text is the same in every epoch.

    Args:
        questions: a question-answer dataset node (``vqav2``, ``msrvtt_qa``), without a media processor.
        captions: a caption dataset node of the same media (``coco_caption``, ``msrvtt_caption``).
        separator: text between the caption and the question (e.g. the LLM's eos, ``</s>``).
    """

    def __init__(self, questions: component("dataset"), captions: component("dataset"), separator: str = " "):
        self.questions, self.separator = questions, separator
        self.captions: dict[str, list[str]] = {}
        for index in range(len(captions)):
            item = captions[index]
            self.captions.setdefault(item["media_path"], []).append(item["text_input"])
        if not self.captions:
            raise DataError("described_questions: the caption dataset is empty")

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.questions[index])
        described = self.captions.get(item["media_path"])
        if described is None:
            raise DataError(f"described_questions: no caption describes {item['media_path']} (question {index}); "
                            "give the caption dataset of the same media and split")
        item["text_input"] = described[index % len(described)] + self.separator + item["text_input"]
        return item

    def __repr__(self) -> str:
        return f"DescribedQuestions({self.questions!r}, {len(self.captions)} described media)"
