"""Captioning metrics: equal to pycocoevalcap, SPICE said to be unavailable without its jars, mistakes in the
inputs named; the metrics are registered plain functions, and importing them loads no scorer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vlreg
from vlreg.errors import ConfigError, DataError
from vlreg.metrics import caption_scores, retrieval_recall, vqa_accuracy
from vlreg.metrics.caption import caption_scores_from_coco, coco_caption_inputs, spice_unavailable_reason

from tests.common import ASSETS

DATA = ASSETS / "metrics"
GT_FILE = DATA / "coco_caption_gt.json"
RESULTS_FILE = DATA / "coco_caption_results.json"


def test_metrics_are_registered_plain_functions_and_import_light():
    for name, function in [("caption_scores", caption_scores), ("vqa_accuracy", vqa_accuracy),
                           ("retrieval_recall", retrieval_recall)]:
        assert vlreg.get("metric", name) is function
        assert vlreg.registry("metric").summary(name)
    code = (
        "import sys, vlreg.metrics\n"
        "print('pycocoevalcap' in sys.modules, 'vlreg.metrics.caption' in sys.modules)\n"
        "from vlreg.metrics import caption_scores\n"
        "print('pycocoevalcap' in sys.modules, 'vlreg.metrics.caption' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "True"]


# -- captioning -----------------------------------------------------------------------------------

def direct_pycocoevalcap(gts, res):
    """The reference: pycocoevalcap's tokenizer and scorers called by hand, as COCOEvalCap does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({i: [{"caption": c} for c in caps] for i, caps in gts.items()})
    hyps = tokenizer.tokenize({i: [{"caption": res[i]}] for i in gts})
    corpus, per_image = {}, {i: {} for i in gts}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), ["METEOR"]),
                          (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        score, scores = scorer.compute_score(refs, hyps)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, each in zip(names, score, scores):
            corpus[name] = value
            for image_id, v in zip(gts, each):
                per_image[image_id][name] = v
    return corpus, per_image


@pytest.fixture(scope="module")
def coco_inputs():
    return coco_caption_inputs(GT_FILE, RESULTS_FILE)


def test_coco_files_become_gts_and_res(coco_inputs):
    gts, res = coco_inputs
    assert list(gts) == [101, 202, 303, 404]
    assert [len(v) for v in gts.values()] == [3, 4, 3, 3]
    assert gts[303][1] == "Rice, broccoli and chicken on a white plate."
    assert res[202] == "Two dogs playing with a ball."
    # the same from loaded objects
    loaded = coco_caption_inputs(json.loads(GT_FILE.read_text()), json.loads(RESULTS_FILE.read_text()))
    assert loaded == (gts, res)


@pytest.mark.slow
def test_caption_scores_equal_pycocoevalcap_and_pinned_values(coco_inputs):
    gts, res = coco_inputs
    scores = caption_scores(gts, res)
    corpus, per_image = direct_pycocoevalcap(gts, res)
    for name, value in corpus.items():
        assert scores[name] == value, name
    assert scores["per_image"] == per_image
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE",
                           "per_image", "unavailable"}
    # image 101: "a man riding a horse on the beach" vs "a man riding a horse on a beach": the longest
    # common subsequence is 7 of 8 tokens both ways, so ROUGE-L = 7/8; every word is in a reference
    assert scores["per_image"][101]["ROUGE_L"] == 0.875
    assert scores["per_image"][101]["Bleu_1"] == pytest.approx(1.0, abs=1e-9)
    # pycocoevalcap's corpus CIDEr is the mean of the per-image CIDEr
    assert scores["CIDEr"] == pytest.approx(np.mean([s["CIDEr"] for s in scores["per_image"].values()]), rel=1e-12)
    # numbers pinned on this fixture (pycocoevalcap 1.2)
    assert scores["Bleu_4"] == pytest.approx(0.4231, abs=1e-4)
    assert scores["CIDEr"] == pytest.approx(1.9644, abs=1e-4)
    assert scores["ROUGE_L"] == pytest.approx(0.6909, abs=1e-4)
    assert scores["METEOR"] == pytest.approx(0.3585, abs=1e-4)
    reason = spice_unavailable_reason()
    if reason is None:
        assert isinstance(scores["SPICE"], float) and scores["unavailable"] == {}
    else:
        assert scores["SPICE"] is None and scores["unavailable"] == {"SPICE": reason}
        assert "SPICE" not in scores["per_image"][101]


def test_spice_is_reported_unavailable_without_corenlp_jars(tmp_path):
    reason = spice_unavailable_reason(str(tmp_path))
    assert str(tmp_path) in reason and "stanford-corenlp-3.6.0.jar" in reason
    assert "stanford-corenlp-3.6.0-models.jar" in reason and "download" in reason
    (tmp_path / "stanford-corenlp-3.6.0.jar").write_bytes(b"")
    assert "stanford-corenlp-3.6.0-models.jar" in spice_unavailable_reason(str(tmp_path))
    assert "stanford-corenlp-3.6.0.jar," not in spice_unavailable_reason(str(tmp_path))
    (tmp_path / "stanford-corenlp-3.6.0-models.jar").write_bytes(b"")
    assert spice_unavailable_reason(str(tmp_path)) is None
    # the default place is pycocoevalcap's own spice/lib, where Spice() would download to
    from pycocoevalcap.spice import spice

    default_lib = os.path.join(os.path.dirname(spice.__file__), "lib")
    has_jars = os.path.isfile(os.path.join(default_lib, "stanford-corenlp-3.6.0-models.jar"))
    assert (spice_unavailable_reason() is None) == has_jars
    if not has_jars:
        assert default_lib in spice_unavailable_reason()


def test_caption_subset_of_metrics_and_coco_helper(coco_inputs):
    gts, res = coco_inputs
    chosen = caption_scores_from_coco(GT_FILE, RESULTS_FILE, metrics=["CIDEr", "Bleu"])
    assert set(chosen) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr", "per_image", "unavailable"}
    assert chosen["per_image"][404].keys() == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"}
    assert chosen["CIDEr"] == pytest.approx(1.9644, abs=1e-4)
    with pytest.raises(ConfigError, match="unknown caption metric 'CIDER'.*did you mean 'CIDEr'"):
        caption_scores(gts, res, metrics=["CIDER"])


def test_caption_line_breaks_stay_with_their_image(coco_inputs):
    gts, res = coco_inputs
    broken = {**res, 202: "Two dogs\rplaying with\u2028a ball."}
    assert caption_scores(gts, broken, metrics=["ROUGE_L"]) == caption_scores(gts, res, metrics=["ROUGE_L"])


def test_caption_ids_missing_extra_or_repeated_are_named(coco_inputs):
    gts, res = coco_inputs
    with pytest.raises(DataError, match=r"1 image ids missing from the caption results: 303$"):
        caption_scores(gts, {i: c for i, c in res.items() if i != 303})
    with pytest.raises(DataError, match=r"in the caption results but not in the ground truth: 999, 1000"):
        caption_scores(gts, {**res, 999: "a cat", 1000: "a dog"})
    results = json.loads(RESULTS_FILE.read_text())
    with pytest.raises(DataError, match="caption results holds 1 image ids more than once: 202"):
        coco_caption_inputs(GT_FILE, results + [{"image_id": 202, "caption": "dogs"}])
    with pytest.raises(DataError, match="record 1 lacks 'caption'"):
        coco_caption_inputs(GT_FILE, [results[0], {"image_id": 202}])
    with pytest.raises(DataError, match="does not exist"):
        coco_caption_inputs(DATA / "nope.json", results)
    with pytest.raises(DataError, match="image 101 must be a non-empty list"):
        caption_scores({**gts, 101: []}, res)
