"""VQAv2 in its official files, over the COCO pictures of the world.

::

    vqav2/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json
        {"info", "task_type": "Open-Ended", "data_type": "mscoco", "license", "data_subtype",
         "questions": [{"image_id", "question", "question_id"}]}
    vqav2/v2_mscoco_{train2014,val2014}_annotations.json
        {"info", "license", "data_subtype", "annotations": [{"question_id", "image_id", "question_type",
         "answer_type", "multiple_choice_answer", "answers": [{"answer", "answer_confidence", "answer_id"} x10]}]}
    vqav2/answer_list.json   every answer the world can give, most frequent in training first

train2014 asks about the Karpathy train pictures, val2014 about the Karpathy val and test
pictures (all in val2014, as in COCO). Question ids are ``image_id * 1000 + k``, as in VQAv2.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .language import IMAGE_ANSWERS
from .plan import Picture
from .writing import write_json

INFO = {"description": "vlreg synthetic world: VQAv2-style questions about generated pictures",
        "version": "2.0", "contributor": "vlreg"}
LICENSE = {"name": "generated data, no restrictions", "url": ""}


def question_id(picture: Picture, k: int) -> int:
    return picture.image_id * 1000 + k


def questions_file(pictures: list[Picture], subtype: str) -> dict:
    questions = [{"image_id": p.image_id, "question": q.question, "question_id": question_id(p, k)}
                 for p in pictures for k, q in enumerate(p.questions)]
    return {"info": INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": LICENSE,
            "data_subtype": subtype, "questions": questions}


def annotations_file(pictures: list[Picture], subtype: str) -> dict:
    annotations = []
    for p in pictures:
        for k, (q, answers) in enumerate(zip(p.questions, p.answers)):
            annotations.append({
                "question_id": question_id(p, k),
                "image_id": p.image_id,
                "question_type": q.question_type,
                "answer_type": q.answer_type,
                "multiple_choice_answer": Counter(a for a, _ in answers).most_common(1)[0][0],
                "answers": [{"answer": a, "answer_confidence": c, "answer_id": i + 1}
                            for i, (a, c) in enumerate(answers)],
            })
    return {"info": INFO, "license": LICENSE, "data_subtype": subtype, "annotations": annotations}


def answer_list(train: list[Picture]) -> list[str]:
    """Every true answer of the world: by frequency among training answers, then alphabetically."""
    counts = Counter(q.answer for p in train for q in p.questions)
    return sorted(set(counts) | set(IMAGE_ANSWERS), key=lambda a: (-counts[a], a))


def write(root: Path, pictures: dict[str, list[Picture]]) -> dict[str, str]:
    """The question, annotation and answer-list files; returns their paths by name, relative to ``root``."""
    paths = {}
    for subtype, split_pictures in (("train2014", pictures["train"]), ("val2014", pictures["val"] + pictures["test"])):
        q_name, a_name = f"v2_OpenEnded_mscoco_{subtype}_questions.json", f"v2_mscoco_{subtype}_annotations.json"
        write_json(root / "vqav2" / q_name, questions_file(split_pictures, subtype))
        write_json(root / "vqav2" / a_name, annotations_file(split_pictures, subtype))
        paths[f"vqav2_{subtype}_questions"] = f"vqav2/{q_name}"
        paths[f"vqav2_{subtype}_annotations"] = f"vqav2/{a_name}"
    write_json(root / "vqav2" / "answer_list.json", answer_list(pictures["train"]))
    paths["vqav2_answer_list"] = "vqav2/answer_list.json"
    return paths
