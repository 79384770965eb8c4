"""The text-only baseline: the best a model can do on a world without looking at the media.

Every guess here comes from the training annotations and the question text alone;
it is scored on the evaluation splits with the metrics of :mod:`vlreg.metrics`:

- VQAv2 (val2014): the most common training answer to the same normalised question,
  else to the same question type, else overall; official VQA accuracy (percent).
- MSRVTT-QA (val, test): the same prior with the question's first two words as its
  type; exact-match accuracy (percent), as MSRVTT-QA is scored.
- Captioning (COCO Karpathy val/test, MSRVTT validate/test): one training caption for
  every picture or clip, the consensus caption (the one closest, in TF-IDF weighted
  1-4-gram cosine as CIDEr weighs n-grams, to the mean of all training captions);
  BLEU-4 and CIDEr from pycocoevalcap.
- Retrieval (COCO Karpathy test, MSRVTT 1k-A test): chance, the expected recall of a
  random ranking, in the LAVIS names of :func:`vlreg.metrics.retrieval_recall`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterable

from ...errors import DataError
from .generate import read_manifest

RECALL_AT = (1, 5, 10)


def _load(root: Path, manifest: dict, name: str):
    with open(root / manifest["paths"][name], encoding="utf-8") as f:
        return json.load(f)


def normalize_question(question: str) -> str:
    """Lower case, punctuation removed, single spaces."""
    return " ".join(re.sub(r"[^\w\s]", " ", question.lower()).split())


class AnswerPrior:
    """The most common training answer to a question, backing off from its full text to its type to any."""

    def __init__(self, pairs: Iterable[tuple[str, str, str]]):
        """``pairs``: ``(question, question_type, answer)`` of the training split."""
        by_question: dict[str, Counter] = defaultdict(Counter)
        by_type: dict[str, Counter] = defaultdict(Counter)
        overall: Counter = Counter()
        for question, qtype, answer in pairs:
            by_question[normalize_question(question)][answer] += 1
            by_type[qtype][answer] += 1
            overall[answer] += 1
        if not overall:
            raise DataError("the text-only baseline needs training questions, and found none")
        top = lambda counts: min(counts, key=lambda a: (-counts[a], a))  # noqa: E731 (ties: alphabetical)
        self.by_question = {q: top(c) for q, c in by_question.items()}
        self.by_type = {t: top(c) for t, c in by_type.items()}
        self.overall = top(overall)

    def __call__(self, question: str, qtype: str) -> str:
        return self.by_question.get(normalize_question(question), self.by_type.get(qtype, self.overall))


def _ngrams(text: str, n_max: int = 4) -> Counter:
    words = normalize_question(text).split()
    return Counter(tuple(words[i:i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1))


def consensus_caption(captions: list[str]) -> str:
    """The caption most similar, in TF-IDF n-gram cosine, to the mean of all captions (ties: alphabetical)."""
    grams = [_ngrams(c) for c in captions]
    df = Counter(g for counts in grams for g in counts)
    n = len(captions)

    def unit(counts: Counter) -> dict:
        vec = {g: tf * math.log(n / df[g]) for g, tf in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {g: v / norm for g, v in vec.items()}

    units = [unit(c) for c in grams]
    centroid: Counter = Counter()
    for vec in units:
        centroid.update(vec)
    score = {c: sum(v * centroid[g] for g, v in vec.items()) for c, vec in zip(captions, units)}
    return min(score, key=lambda c: (-score[c], c))


def chance_recall(num_media: int, texts_per_media: int) -> dict[str, float]:
    """Expected recall (percent) of a random ranking, in both directions; LAVIS names."""
    num_texts = num_media * texts_per_media
    out = {}
    for k in RECALL_AT:
        # a media item finds one of its texts in the top k unless all k come from the other texts
        miss = math.comb(num_texts - texts_per_media, k) / math.comb(num_texts, k) if k <= num_texts else 0.0
        out[f"txt_r{k}"] = 100 * (1 - miss)
        out[f"img_r{k}"] = 100 * min(1.0, k / num_media)
    out["txt_r_mean"] = sum(out[f"txt_r{k}"] for k in RECALL_AT) / len(RECALL_AT)
    out["img_r_mean"] = sum(out[f"img_r{k}"] for k in RECALL_AT) / len(RECALL_AT)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def _vqa(root: Path, manifest: dict) -> dict:
    from ...metrics import vqa_accuracy

    train_q = {q["question_id"]: q["question"] for q in _load(root, manifest, "vqav2_train2014_questions")["questions"]}
    train_a = _load(root, manifest, "vqav2_train2014_annotations")["annotations"]
    prior = AnswerPrior((train_q[a["question_id"]], a["question_type"], a["multiple_choice_answer"]) for a in train_a)
    questions = _load(root, manifest, "vqav2_val2014_questions")
    annotations = _load(root, manifest, "vqav2_val2014_annotations")
    types = {a["question_id"]: a["question_type"] for a in annotations["annotations"]}
    results = [{"question_id": q["question_id"], "answer": prior(q["question"], types[q["question_id"]])}
               for q in questions["questions"]]
    scores = vqa_accuracy(questions, annotations, results)
    return {"overall": scores["overall"], "per_answer_type": scores["per_answer_type"], "questions": len(results)}


def _opening(question: str) -> str:
    return " ".join(normalize_question(question).split()[:2])


def _msrvtt_qa(root: Path, manifest: dict) -> dict:
    train = _load(root, manifest, "msrvtt_qa_train")
    prior = AnswerPrior((e["question"], _opening(e["question"]), e["answer"]) for e in train)
    out = {}
    for split in ("val", "test"):
        entries = _load(root, manifest, f"msrvtt_qa_{split}")
        hits = [prior(e["question"], _opening(e["question"])) == e["answer"] for e in entries]
        out[split] = round(100 * sum(hits) / len(hits), 2)
    return out


def _caption_scores(gts: dict, guess: str) -> dict:
    from ...metrics import caption_scores

    scores = caption_scores(gts, {i: guess for i in gts}, metrics=["Bleu", "CIDEr"])
    return {"Bleu_4": scores["Bleu_4"], "CIDEr": scores["CIDEr"]}


def _coco_caption(root: Path, manifest: dict) -> dict:
    guess = consensus_caption([e["caption"] for e in _load(root, manifest, "coco_karpathy_train")])
    out: dict = {"caption": guess}
    for split in ("val", "test"):
        gts: dict[int, list[str]] = defaultdict(list)
        for a in _load(root, manifest, f"coco_karpathy_{split}_gt")["annotations"]:
            gts[a["image_id"]].append(a["caption"])
        out[split] = _caption_scores(dict(gts), guess)
    return out


def _msrvtt_caption(root: Path, manifest: dict) -> dict:
    sentences: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name in ("msrvtt_train_val", "msrvtt_test"):
        info = _load(root, manifest, name)
        split_of = {v["video_id"]: v["split"] for v in info["videos"]}
        for s in info["sentences"]:
            sentences[split_of[s["video_id"]]][s["video_id"]].append(s["caption"])
    guess = consensus_caption([c for caps in sentences["train"].values() for c in caps])
    return {"caption": guess, "val": _caption_scores(dict(sentences["validate"]), guess),
            "test": _caption_scores(dict(sentences["test"]), guess)}


def _retrieval(root: Path, manifest: dict) -> dict:
    coco_test = _load(root, manifest, "coco_karpathy_test")
    per_image = {len(e["caption"]) for e in coco_test}
    if len(per_image) != 1:
        raise DataError("coco_karpathy_test.json: pictures have different numbers of captions")
    with open(root / manifest["paths"]["msrvtt_1ka_test"], newline="", encoding="utf-8") as f:
        num_videos = len(list(csv.DictReader(f)))
    return {"coco_test": chance_recall(len(coco_test), per_image.pop()), "msrvtt_1ka_test": chance_recall(num_videos, 1)}


PARTS: dict[str, Callable[[Path, dict], dict]] = {
    "vqav2_val2014": _vqa,
    "msrvtt_qa": _msrvtt_qa,
    "coco_caption": _coco_caption,
    "msrvtt_caption": _msrvtt_caption,
    "retrieval_chance": _retrieval,
}


def text_only_baseline(world_dir: str | os.PathLike, parts: Iterable[str] | None = None) -> dict:
    """Scores of the text-only guessers on a world's evaluation splits.

    ``parts``: a subset of :data:`PARTS` (captioning runs Java, a second or two per split); all by default.
    Returns ``{part: scores}``: ``vqav2_val2014`` ``{"overall", "per_answer_type", "questions"}``;
    ``msrvtt_qa`` ``{"val", "test"}``; ``coco_caption`` and ``msrvtt_caption`` ``{"caption", "val":
    {"Bleu_4", "CIDEr"}, "test": ...}``; ``retrieval_chance`` ``{"coco_test", "msrvtt_1ka_test"}``.
    Accuracies and recalls are percentages; BLEU and CIDEr are pycocoevalcap's fractions.
    """
    root = Path(world_dir)
    manifest = read_manifest(root)
    if manifest is None:
        raise DataError(f"{root} holds no vlreg world (no readable world.json); make one with python -m vlreg.data.world")
    chosen = list(PARTS) if parts is None else list(parts)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise DataError(f"unknown baseline parts {unknown}; known: {', '.join(PARTS)}")
    return {part: PARTS[part](root, manifest) for part in chosen}
