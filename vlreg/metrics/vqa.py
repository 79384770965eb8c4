"""VQA accuracy as the official VQAv2 evaluation computes it (vqaEval.py of the VQA API).

For one question with ten human answers, a predicted answer scores
``mean over the ten leave-one-annotator-out subsets of min(1, matches / 3)``: an answer
given by 3 or more annotators scores 1, by 2 annotators 0.6, by 1 annotator 0.3.

Answers are compared after the official normalisation, with its quirks kept:

- newlines and tabs become spaces and the ends are stripped, always;
- the rest (punctuation, then lower case, number words to digits, articles dropped,
  contractions restored) is applied to the ten answers and to the prediction only when
  the ten answers are not all the same string; so "Yes" does not match ten "yes".
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import DataError
from ..registry import register
from .inputs import check_same_ids, check_unique, load_json, records

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_IN_NUMBER = re.compile(r"\d,\d")
# a period not followed by a digit ("3.5" keeps its period)
_PERIOD = re.compile(r"\.(?!\d)")
# the official code passes re.UNICODE (32) where Pattern.sub takes its count: at most 32 periods go
_MAX_PERIODS_REMOVED = 32

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}

# Written without apostrophes (or with some) -> the official spelling. The table is the
# official one, oddities included ("somebody'd" -> "somebodyd"; capitalised keys that
# can never match lower-cased words).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def strip_punctuation(text: str) -> str:
    """The official punctuation step.

    Each mark of the list is deleted when it touches a space somewhere in ``text`` or when
    ``text`` holds a comma between digits ("1,000" -> "1000"); otherwise it becomes a
    space ("black/white" -> "black white"). Then periods not followed by a digit go.
    """
    out = text
    delete = _COMMA_IN_NUMBER.search(text) is not None
    for mark in _PUNCTUATION:
        if delete or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS_REMOVED)


def normalize_words(text: str) -> str:
    """The official word step: lower case, number words to digits, no articles, contractions restored."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """Both official steps: :func:`strip_punctuation`, then :func:`normalize_words`."""
    return normalize_words(strip_punctuation(text))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def question_accuracy(answer: str, human_answers: list[str]) -> float:
    """The VQA accuracy (0..1) of ``answer`` against the annotators' ``human_answers``.

    The mean over the leave-one-out subsets of ``human_answers`` of min(1, matches / 3),
    after the official normalisation (see the module docstring).
    """
    human = [_clean(a) for a in human_answers]
    answer = _clean(answer)
    if len(set(human)) > 1:
        human = [normalize_answer(a) for a in human]
        answer = normalize_answer(answer)
    matches = sum(a == answer for a in human)
    subsets = [min(1, (matches - (left_out == answer)) / 3) for left_out in human]
    return sum(subsets) / len(subsets)


def _percent(accuracies: list[float]) -> float:
    """Mean accuracy in percent, rounded to 2 decimals as the official code does."""
    return round(100 * float(sum(accuracies)) / len(accuracies), 2)


@register("metric", "vqa_accuracy")
def vqa_accuracy(questions: Any, annotations: Any, results: Any) -> dict[str, Any]:
    """VQAv2 accuracy, equal to the official evaluation (vqaEval.py), overall and per type.

    Args:
        questions: the ``v2_OpenEnded_mscoco_<split>_questions.json`` object
            ``{"questions": [{"question_id", "image_id", "question"}], ...}`` or its path.
        annotations: the ``v2_mscoco_<split>_annotations.json`` object ``{"annotations":
            [{"question_id", "question_type", "answer_type", "answers": [{"answer", ...}] x 10, ...}]}``
            or its path. Questions and annotations must hold the same question ids.
        results: ``[{"question_id", "answer"}]`` or its path, one answer for each annotated
            question: a missing, extra or repeated question id is a DataError that names it.

    Returns:
        ``{"overall": float, "per_answer_type": {type: float}, "per_question_type": {type: float},
        "per_question": {question_id: float}}``, all in percent rounded to 2 decimals (the
        official ``accuracy["overall"]``, ``["perAnswerType"]``, ``["perQuestionType"]`` and
        ``evalQA``). Each annotator is left out once by position; with the official files,
        whose answers carry distinct ``answer_id``s, this is exactly the official rule.
    """
    question_list = records(load_json(questions, "VQA questions"), "questions", ("question_id",), "VQA questions")
    annotation_list = records(
        load_json(annotations, "VQA annotations"), "annotations",
        ("question_id", "question_type", "answer_type", "answers"), "VQA annotations",
    )
    result_list = records(load_json(results, "VQA results"), None, ("question_id", "answer"), "VQA results")
    annotated = [a["question_id"] for a in annotation_list]
    check_unique(annotated, "question ids", "the VQA annotations")
    check_unique([q["question_id"] for q in question_list], "question ids", "the VQA questions")
    check_unique([r["question_id"] for r in result_list], "question ids", "the VQA results")
    check_same_ids(annotated, [q["question_id"] for q in question_list], "question ids", "the VQA questions")
    check_same_ids(annotated, [r["question_id"] for r in result_list], "question ids", "the VQA results")
    predicted = {r["question_id"]: r["answer"] for r in result_list}

    overall: list[float] = []
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    per_question: dict[Any, float] = {}
    for annotation in annotation_list:
        question_id = annotation["question_id"]
        answer = predicted[question_id]
        human = [a.get("answer") if isinstance(a, dict) else None for a in annotation["answers"]]
        if not human or not all(isinstance(a, str) for a in human):
            raise DataError(f"VQA annotations: question {question_id!r} needs a non-empty list of answers {{'answer': str}}")
        if not isinstance(answer, str):
            raise DataError(f"VQA results: the answer to question {question_id!r} is not a string: {answer!r}")
        accuracy = question_accuracy(answer, human)
        overall.append(accuracy)
        by_answer_type.setdefault(annotation["answer_type"], []).append(accuracy)
        by_question_type.setdefault(annotation["question_type"], []).append(accuracy)
        per_question[question_id] = round(100 * accuracy, 2)
    if not overall:
        raise DataError("VQA annotations hold no question")
    return {
        "overall": _percent(overall),
        "per_answer_type": {t: _percent(v) for t, v in by_answer_type.items()},
        "per_question_type": {t: _percent(v) for t, v in by_question_type.items()},
        "per_question": per_question,
    }
