"""Evaluation metrics: captioning (pycocoevalcap), VQA accuracy, retrieval recall.

``import vlreg.metrics`` imports none of them; each function loads its module (and
pycocoevalcap or numpy) on first use::

    from vlreg.metrics import caption_scores, vqa_accuracy, retrieval_recall
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "caption_scores": "caption",
    "caption_scores_from_coco": "caption",
    "coco_caption_inputs": "caption",
    "spice_unavailable_reason": "caption",
    "vqa_accuracy": "vqa",
    "question_accuracy": "vqa",
    "normalize_answer": "vqa",
    "retrieval_recall": "retrieval",
    "retrieval_ranks": "retrieval",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
