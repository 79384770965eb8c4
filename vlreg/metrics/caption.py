"""Captioning metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr and, where possible, SPICE.

The scores are those of pycocoevalcap's own scorers run on its PTB tokenization, without
``COCOEvalCap.evaluate()`` (which dies offline because SPICE downloads Stanford CoreNLP).
SPICE runs only when the CoreNLP jars are already where pycocoevalcap looks for them;
otherwise the result says why it is missing and the other scores still come out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Callable, Hashable, Optional

from ..errors import ConfigError, DataError, UserError, did_you_mean
from ..registry import register
from .inputs import check_same_ids, check_unique, load_json, records

#: The metric families ``caption_scores`` can compute, in the order pycocoevalcap reports them.
CAPTION_METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr", "SPICE")

Tokenized = dict[Hashable, list[str]]
# one family's scores: {score name: (corpus score, per-image scores in the order of the ids)}
FamilyScores = dict[str, tuple[float, list[float]]]


def spice_unavailable_reason(lib_dir: str | None = None) -> str | None:
    """Why SPICE cannot run here, or None when it can.

    SPICE needs Java and the Stanford CoreNLP 3.6.0 jars (code and models) in ``lib_dir``,
    by default the ``spice/lib`` folder of pycocoevalcap, where its ``Spice()`` would
    otherwise download them. Nothing is downloaded here.
    """
    from pycocoevalcap.spice import get_stanford_models as corenlp

    lib_dir = lib_dir or os.path.join(corenlp.SPICEDIR, corenlp.SPICELIB)
    jars = [f"{corenlp.JAR}.jar", f"{corenlp.JAR}-models.jar"]
    missing = [jar for jar in jars if not os.path.isfile(os.path.join(lib_dir, jar))]
    if missing:
        return (
            f"Stanford CoreNLP jars not found in {lib_dir} ({', '.join(missing)}); "
            f"pycocoevalcap would download them from nlp.stanford.edu"
        )
    if shutil.which("java") is None:
        return "java is not on PATH"
    return None


def _bleu(gts: Tokenized, res: Tokenized) -> FamilyScores:
    from pycocoevalcap.bleu.bleu import Bleu

    corpus, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"Bleu_{n + 1}": (corpus[n], per_image[n]) for n in range(4)}


def _meteor(gts: Tokenized, res: Tokenized) -> FamilyScores:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()  # starts the METEOR JVM; the scorer's finaliser stops it
    try:
        corpus, per_image = scorer.compute_score(gts, res)
    finally:
        # compute_score holds its lock when it fails, and the finaliser would wait on it forever
        if scorer.lock.locked():
            scorer.lock.release()
    return {"METEOR": (corpus, per_image)}


def _rouge(gts: Tokenized, res: Tokenized) -> FamilyScores:
    from pycocoevalcap.rouge.rouge import Rouge

    corpus, per_image = Rouge().compute_score(gts, res)
    return {"ROUGE_L": (corpus, list(per_image))}


def _cider(gts: Tokenized, res: Tokenized) -> FamilyScores:
    from pycocoevalcap.cider.cider import Cider

    corpus, per_image = Cider().compute_score(gts, res)
    return {"CIDEr": (corpus, list(per_image))}


class _Unavailable(Exception):
    """A metric that cannot be computed here; the message says why."""


def _spice(gts: Tokenized, res: Tokenized) -> FamilyScores:
    reason = spice_unavailable_reason()
    if reason is not None:
        raise _Unavailable(reason)
    from pycocoevalcap.spice.spice import Spice

    try:
        corpus, per_image = Spice().compute_score(gts, res)
    except subprocess.CalledProcessError as exc:
        raise _Unavailable(f"SPICE failed: {exc}") from exc
    # Spice reports images in sorted id order, not in the order of gts
    by_id = dict(zip(sorted(gts), per_image))
    return {"SPICE": (corpus, [by_id[i]["All"]["f"] for i in gts])}


_FAMILIES: dict[str, Callable[[Tokenized, Tokenized], FamilyScores]] = {
    "Bleu": _bleu,
    "METEOR": _meteor,
    "ROUGE_L": _rouge,
    "CIDEr": _cider,
    "SPICE": _spice,
}


def _selected(metrics: Optional[list[str]]) -> list[str]:
    if metrics is None:
        return list(CAPTION_METRICS)
    for name in metrics:
        if name not in _FAMILIES:
            raise ConfigError(
                f"unknown caption metric {name!r}{did_you_mean(name, CAPTION_METRICS)}; "
                f"known: {', '.join(CAPTION_METRICS)}"
            )
    return [name for name in CAPTION_METRICS if name in metrics]


def caption_score_names(metrics: Optional[list[str]] = None) -> list[str]:
    """The scores :func:`caption_scores` reports for these families (``Bleu`` is ``Bleu_1`` to ``Bleu_4``)."""
    return [name for family in _selected(metrics)
            for name in ([f"Bleu_{n}" for n in range(1, 5)] if family == "Bleu" else [family])]


def _check(gts: Any, res: Any) -> None:
    if not isinstance(gts, dict) or not isinstance(res, dict):
        raise DataError("caption_scores takes gts {id: [reference, ...]} and res {id: caption}, both dicts")
    if not gts:
        raise DataError("caption_scores: the ground truth holds no image")
    check_same_ids(gts, res, "image ids", "the caption results")
    for image_id, refs in gts.items():
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(f"caption ground truth of image {image_id!r} must be a non-empty list of strings")
        if not isinstance(res[image_id], str):
            raise DataError(f"caption result of image {image_id!r} must be a string, got {res[image_id]!r}")


def _one_line(caption: str) -> str:
    # pycocoevalcap replaces only "\n"; Java also breaks lines at "\r", "\f", "\v", "\u2028"...,
    # which would shift every later caption onto the wrong image
    return " ".join(caption.splitlines())


def _tokenize(captions: dict[Hashable, list[str]]) -> Tokenized:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize({i: [{"caption": _one_line(c)} for c in caps] for i, caps in captions.items()})
    if [len(v) for v in tokenized.values()] != [len(v) for v in captions.values()]:
        raise RuntimeError("the PTB tokenizer returned a different number of captions than it was given")
    return tokenized


@register("metric", "caption_scores")
def caption_scores(
    gts: dict[Hashable, list[str]], res: dict[Hashable, str], metrics: Optional[list[str]] = None
) -> dict[str, Any]:
    """COCO captioning scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE) of pycocoevalcap.

    Args:
        gts: ``{image_id: [reference caption, ...]}``, at least one reference per image.
        res: ``{image_id: generated caption}`` for exactly the images of ``gts``; a missing
            or an extra id is a DataError that names it.
        metrics: families to compute, among ``Bleu``, ``METEOR``, ``ROUGE_L``, ``CIDEr``,
            ``SPICE``; all by default. METEOR and SPICE each start a JVM (seconds).

    Returns:
        ``{"Bleu_1": float, ..., "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE": float | None,
        "per_image": {image_id: {score name: float}}, "unavailable": {score name: reason}}``.
        Scores are pycocoevalcap's (fractions, CIDEr around 1 for good captions), equal to
        running its PTBTokenizer and scorers directly (one difference: every line break in
        a caption becomes a space, where pycocoevalcap replaces only "\\n" and lets the others
        shift later captions onto the wrong images). SPICE is None, and ``unavailable``
        says why, when the Stanford CoreNLP jars are not present locally (see
        :func:`spice_unavailable_reason`) or SPICE fails; ``unavailable`` is empty otherwise.
        ``per_image`` holds each image's scores (SPICE: its "All" F-score) for analysis.
    """
    families = _selected(metrics)
    _check(gts, res)
    if shutil.which("java") is None:
        raise UserError("caption_scores needs Java on PATH: pycocoevalcap's PTB tokenizer and METEOR run on it")
    ref_tokens = _tokenize(gts)
    hyp_tokens = _tokenize({i: [res[i]] for i in gts})

    scores: dict[str, Any] = {}
    per_image: dict[Hashable, dict[str, float]] = {i: {} for i in gts}
    unavailable: dict[str, str] = {}
    for family in families:
        try:
            computed = _FAMILIES[family](ref_tokens, hyp_tokens)
        except _Unavailable as exc:
            scores[family] = None
            unavailable[family] = str(exc)
            continue
        for name, (corpus, each) in computed.items():
            scores[name] = float(corpus)
            for image_id, value in zip(gts, each):
                per_image[image_id][name] = float(value)
    return {**scores, "per_image": per_image, "unavailable": unavailable}


def coco_caption_inputs(ground_truth: Any, results: Any) -> tuple[dict[Hashable, list[str]], dict[Hashable, str]]:
    """``(gts, res)`` for :func:`caption_scores` from the official COCO caption formats.

    Args:
        ground_truth: a COCO caption annotation object ``{"annotations": [{"image_id", "caption", ...}],
            "images": [...], ...}`` or the path of its JSON file. The images evaluated are those
            with at least one annotation.
        results: a COCO caption result list ``[{"image_id", "caption"}]`` or its path; one
            caption per image (an id given twice is a DataError that names it).
    """
    annotations = records(load_json(ground_truth, "caption ground truth"), "annotations", ("image_id", "caption"),
                          "caption ground truth")
    predictions = records(load_json(results, "caption results"), None, ("image_id", "caption"), "caption results")
    check_unique([p["image_id"] for p in predictions], "image ids", "the caption results")
    gts: dict[Hashable, list[str]] = {}
    for annotation in annotations:
        gts.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return gts, {p["image_id"]: p["caption"] for p in predictions}


def caption_scores_from_coco(ground_truth: Any, results: Any, metrics: Optional[list[str]] = None) -> dict[str, Any]:
    """:func:`caption_scores` of COCO-format ground truth and results (objects or JSON paths)."""
    gts, res = coco_caption_inputs(ground_truth, results)
    return caption_scores(gts, res, metrics)
