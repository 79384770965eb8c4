"""VQA accuracy by the official rules: answers normalised only where the human answers differ, leave-one-out
over ten annotators, mistakes in the files named."""

import json

import pytest

from vlreg.errors import DataError
from vlreg.metrics import vqa_accuracy
from vlreg.metrics.vqa import normalize_answer, question_accuracy, strip_punctuation

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
