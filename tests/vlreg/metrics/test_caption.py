"""Metrics: captioning (equal to pycocoevalcap), VQA accuracy (the official rules), retrieval recall."""

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
from vlreg.metrics.retrieval import retrieval_ranks
from vlreg.metrics.vqa import normalize_answer, question_accuracy, strip_punctuation

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


# -- VQA ------------------------------------------------------------------------------------------

# (question type, answer type, the ten human answers, prediction, expected accuracy in %, why).
# A question scores the mean over the ten leave-one-annotator-out subsets of min(1, matches/3).
VQA_CASES = [
    ("is the", "yes/no", ["yes"] * 10, "yes", 100.0, "10 matches: every subset keeps 9"),
    ("is the", "yes/no", ["yes"] * 10, "Yes", 0.0, "ten identical answers: nothing is normalised, case counts"),
    ("is the", "yes/no", ["yes"] * 10, " yes\n", 100.0, "newlines, tabs and outer spaces always go"),
    ("how many", "number", ["2"] * 4 + ["3"] * 6, "Two", 100.0, "'Two' -> '2'; 4 matches: every subset keeps >= 3"),
    ("how many", "number", ["2"] * 3 + ["3"] * 7, "2", 90.0, "3 matches: (3 x 2/3 + 7 x 1) / 10"),
    ("how many", "number", ["2"] * 2 + ["3"] * 8, "2", 60.0, "2 matches: (2 x 1/3 + 8 x 2/3) / 10"),
    ("how many", "number", ["2"] + ["3"] * 9, "2", 30.0, "1 match: (1 x 0 + 9 x 1/3) / 10"),
    ("how many", "number", ["3"] * 5 + ["4"] * 5, "2", 0.0, "no match"),
    ("how many", "number", ["1000"] * 3 + ["1,000"] + ["many"] * 6, "1,000", 100.0,
     "a comma between digits is deleted, in the prediction and in the answers: 4 matches"),
    ("what is", "other", ["dog"] * 2 + ["puppy"] * 8, "a dog", 60.0, "the article goes: 2 matches"),
    ("what is", "other", ["don't"] * 4 + ["no"] * 6, "dont", 100.0, "'dont' -> \"don't\": 4 matches"),
    ("what is", "other", ["t-shirt"] * 3 + ["shirt"] * 7, "t shirt", 90.0, "'t-shirt' -> 't shirt': 3 matches"),
    ("what is", "other", ["3.5"] * 4 + ["3"] * 6, "3.5", 100.0, "a period before a digit stays"),
    ("what is", "other", ["dog"] * 4 + ["cat"] * 6, "Dog.", 100.0, "other periods go, case goes"),
    ("what color", "other", ["black white"] * 2 + ["black and white"] * 3 + ["gray"] * 5, "black/white", 60.0,
     "'/' touching no space becomes a space: 2 matches"),
]


def vqa_files(cases):
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                 "questions": []}
    annotations = {"info": {}, "data_type": "mscoco", "data_subtype": "val2014", "annotations": []}
    results = []
    for n, (question_type, answer_type, human, predicted, _, why) in enumerate(cases):
        question_id = 1000 + n
        questions["questions"].append({"image_id": 7, "question": why, "question_id": question_id})
        annotations["annotations"].append({
            "question_id": question_id, "image_id": 7, "question_type": question_type, "answer_type": answer_type,
            "multiple_choice_answer": human[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(human)],
        })
        results.append({"question_id": question_id, "answer": predicted})
    return questions, annotations, results


def test_vqa_accuracy_follows_the_official_rules(tmp_path):
    questions, annotations, results = vqa_files(VQA_CASES)
    paths = []
    for name, document in [("q.json", questions), ("a.json", annotations), ("r.json", results)]:
        (tmp_path / name).write_text(json.dumps(document))
        paths.append(tmp_path / name)
    scores = vqa_accuracy(*paths)
    assert scores == vqa_accuracy(questions, annotations, results)
    expected = {1000 + n: case[4] for n, case in enumerate(VQA_CASES)}
    assert scores["per_question"] == expected
    # yes/no: 100, 0, 100; number: 100, 90, 60, 30, 0, 100; other: 60, 100, 90, 100, 100, 60
    assert scores["per_answer_type"] == {"yes/no": 66.67, "number": 63.33, "other": 85.0}
    assert scores["per_question_type"] == {"is the": 66.67, "how many": 63.33, "what is": 90.0, "what color": 60.0}
    assert scores["overall"] == 72.67  # 1090 / 15


def test_vqa_normalisation_steps():
    assert strip_punctuation("1,000") == "1000"
    assert strip_punctuation("black/white") == "black white"
    assert strip_punctuation("yes, it is") == "yes it is"  # a mark touching a space is deleted
    assert strip_punctuation("3,5 (approx)") == "35 approx"  # a digit comma deletes every mark
    assert strip_punctuation("3.5") == "3.5" and strip_punctuation("dog.") == "dog"
    assert strip_punctuation("." * 40) == "." * 8  # the official code removes at most 32 periods
    assert normalize_answer("The Two dogs") == "2 dogs"
    assert normalize_answer("an apple") == "apple"
    assert normalize_answer("None") == "0"
    assert normalize_answer("isnt") == "isn't" and normalize_answer("whats up") == "what's up"
    assert normalize_answer("Im") == "im"  # the official table's capitalised keys never match
    assert normalize_answer("somebody'd") == "somebodyd"
    assert normalize_answer("yes!") == "yes"
    # normalisation only when the human answers differ
    assert question_accuracy("Two", ["2"] * 10) == 0.0
    assert question_accuracy("Two", ["2"] * 9 + ["3"]) == 1.0
    assert question_accuracy("two", ["2", "two"] + ["3"] * 8) == pytest.approx(0.6)


def test_vqa_missing_extra_and_repeated_questions_are_named():
    questions, annotations, results = vqa_files(VQA_CASES[:3])
    with pytest.raises(DataError, match="1 question ids missing from the VQA results: 1001"):
        vqa_accuracy(questions, annotations, [results[0], results[2]])
    with pytest.raises(DataError, match="in the VQA results but not in the ground truth: 5"):
        vqa_accuracy(questions, annotations, results + [{"question_id": 5, "answer": "yes"}])
    with pytest.raises(DataError, match="the VQA results holds 1 question ids more than once: 1002"):
        vqa_accuracy(questions, annotations, results + [results[2]])
    with pytest.raises(DataError, match="missing from the VQA questions: 1000"):
        vqa_accuracy({"questions": questions["questions"][1:]}, annotations, results)
    with pytest.raises(DataError, match="answer to question 1000 is not a string"):
        vqa_accuracy(questions, annotations, [{"question_id": 1000, "answer": 2}] + results[1:])
    with pytest.raises(DataError, match="expected a JSON object with a 'annotations' list"):
        vqa_accuracy(questions, {"questions": []}, results)


# -- retrieval ------------------------------------------------------------------------------------

# 3 media items with 2 texts each; rows are media, columns texts.
SIM = np.array([
    [0.9, 0.1, 0.8, 0.2, 0.3, 0.0],
    [0.7, 0.6, 0.5, 0.1, 0.2, 0.4],
    [0.2, 0.3, 0.9, 0.8, 0.1, 0.05],
])
TXT2MEDIA = [0, 0, 1, 1, 2, 2]
MEDIA2TXT = [[0, 1], [2, 3], [4, 5]]


def test_retrieval_ranks_and_recall_by_hand():
    text_ranks, media_ranks = retrieval_ranks(SIM, TXT2MEDIA, MEDIA2TXT)
    # media 0: its best text (0.9) beats all; media 1: best own 0.5, beaten by 0.7 and 0.6;
    # media 2: best own 0.1, beaten by 0.2, 0.3, 0.9, 0.8
    assert text_ranks.tolist() == [1, 3, 5]
    # text t: how many other media score at least the text's own media, plus 1
    assert media_ranks.tolist() == [1, 3, 3, 3, 3, 2]
    scores = retrieval_recall(SIM, TXT2MEDIA, MEDIA2TXT)
    expected = {
        "txt_r1": 100 / 3, "txt_r5": 100.0, "txt_r10": 100.0, "txt_r_mean": (100 / 3 + 200) / 3,
        "txt_medr": 3.0, "txt_meanr": 3.0,
        "img_r1": 100 / 6, "img_r5": 100.0, "img_r10": 100.0, "img_r_mean": (100 / 6 + 200) / 3,
        "img_medr": 3.0, "img_meanr": 2.5,
    }
    expected["r_mean"] = (expected["txt_r_mean"] + expected["img_r_mean"]) / 2
    assert scores == pytest.approx(expected, rel=1e-12)
    assert set(scores) == set(expected)


def test_retrieval_recall_at_5_and_10():
    # one text per media; text t's own media is beaten by exactly ranks[t] - 1 others
    ranks = [1, 2, 5, 6, 10, 11, 12, 1, 3, 4, 7, 8]
    n = len(ranks)
    sim = np.zeros((n, n))
    for t, rank in enumerate(ranks):
        others = [m for m in range(n) if m != t]
        sim[t, t] = 0.5
        sim[others[: rank - 1], t] = 0.9
        sim[others[rank - 1:], t] = 0.1
    scores = retrieval_recall(sim, list(range(n)), [[t] for t in range(n)])
    assert scores["img_r1"] == pytest.approx(100 * 2 / 12)
    assert scores["img_r5"] == pytest.approx(100 * 6 / 12)  # ranks 1, 2, 5, 1, 3, 4
    assert scores["img_r10"] == pytest.approx(100 * 10 / 12)  # and 6, 10, 7, 8
    assert scores["img_medr"] == 5.5 and scores["img_meanr"] == sum(ranks) / 12


def blip_style_ranks(sim, txt2media, media2txt):
    """The BLIP/ALBEF evaluation loop (0-based ranks from a descending argsort), for untied scores."""
    text_ranks = [min(int(np.where(np.argsort(row)[::-1] == t)[0][0]) for t in media2txt[m])
                  for m, row in enumerate(sim)]
    media_ranks = [int(np.where(np.argsort(col)[::-1] == txt2media[t])[0][0]) for t, col in enumerate(sim.T)]
    return np.array(text_ranks) + 1, np.array(media_ranks) + 1


def test_retrieval_matches_the_blip_evaluation_and_takes_torch_tensors():
    import torch

    rng = np.random.default_rng(0)
    media, per_media = 20, 5
    txt2media = np.repeat(np.arange(media), per_media)
    media2txt = [list(range(m * per_media, (m + 1) * per_media)) for m in range(media)]
    sim = rng.standard_normal((media, media * per_media)) + 2.0 * (np.arange(media)[:, None] == txt2media)
    ours = retrieval_ranks(sim, txt2media, media2txt)
    reference = blip_style_ranks(sim, txt2media, media2txt)
    np.testing.assert_array_equal(ours[0], reference[0])
    np.testing.assert_array_equal(ours[1], reference[1])
    scores = retrieval_recall(sim, txt2media, media2txt)
    assert scores["txt_r1"] == 100 * np.mean(reference[0] == 1)
    assert scores["img_r10"] == 100 * np.mean(reference[1] <= 10)
    sim32 = sim.astype(np.float32)
    assert retrieval_recall(torch.from_numpy(sim32), torch.from_numpy(txt2media), media2txt) == \
        retrieval_recall(sim32, txt2media, media2txt)


def test_retrieval_ties_count_against_the_model():
    # a constant matrix: every correct candidate ranks after every wrong one
    text_ranks, media_ranks = retrieval_ranks(np.ones((3, 6)), TXT2MEDIA, MEDIA2TXT)
    assert text_ranks.tolist() == [5, 5, 5] and media_ranks.tolist() == [3] * 6
    sim = np.array([[0.9, 0.9, 0.9, 0.1], [0.2, 0.3, 0.4, 0.9]])
    # media 0 owns texts 0 and 1, tied at the top with text 2 (wrong): rank 2; the other correct
    # text does not push it down. Text 2 (media 1): media 0 scores 0.9 > 0.4: rank 2
    text_ranks, media_ranks = retrieval_ranks(sim, [0, 0, 1, 1], [[0, 1], [2, 3]])
    assert text_ranks.tolist() == [2, 1] and media_ranks.tolist() == [1, 1, 2, 1]


def test_retrieval_rejects_inconsistent_inputs():
    with pytest.raises(DataError, match=r"media2txt\[1\] = \[2\] disagrees with txt2media"):
        retrieval_recall(SIM, TXT2MEDIA, [[0, 1], [2], [4, 5]])
    with pytest.raises(DataError, match="one integer per text \\(6\\)"):
        retrieval_recall(SIM, TXT2MEDIA[:5], MEDIA2TXT)
    with pytest.raises(DataError, match="one list per media item \\(3\\)"):
        retrieval_recall(SIM, TXT2MEDIA, MEDIA2TXT[:2])
    with pytest.raises(DataError, match="media item 2 has no text"):
        retrieval_recall(SIM, TXT2MEDIA, [[0, 1], [2, 3], []])
    with pytest.raises(DataError, match=r"media2txt\[0\] holds text indices outside 0..5"):
        retrieval_recall(SIM, TXT2MEDIA, [[0, -1], [2, 3], [4, 5]])
    with pytest.raises(DataError, match="NaN"):
        retrieval_recall(np.full((3, 6), np.nan), TXT2MEDIA, MEDIA2TXT)
    with pytest.raises(DataError, match="shape"):
        retrieval_recall(SIM[0], TXT2MEDIA, MEDIA2TXT)
