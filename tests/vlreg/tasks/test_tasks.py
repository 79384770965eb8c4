"""Evaluation tasks with bad media: skipped and counted, and a clear error when nothing is left."""

import json
import shutil

import pytest
import torch

from vlreg.build import build
from vlreg.errors import DataError
from vlreg.models.assembly import VisionLanguageModel
from vlreg.runner import Trainer

IMAGE = {"name": "image_eval", "image_size": 32}


@pytest.fixture()
def world(small_world, tmp_path):
    """A copy of the small world that a test may break."""
    copy = tmp_path / "world"
    shutil.copytree(small_world, copy)
    return copy


@pytest.fixture(scope="module")
def model(tiny_nodes):
    torch.manual_seed(0)
    return VisionLanguageModel.from_config({"encoder": tiny_nodes["image"], "llm": tiny_nodes["opt"],
                                            "bridge": {**tiny_nodes["qformer"], "text_branch": False}})


def evaluate(model, task, dataset, out):
    run = {"output_dir": str(out), "max_steps": 0, "batch_size": 4, "num_workers": 0}
    return Trainer(run).fit(model, build("task", task), None, dataset)["final"]


def caption_set(world, n=6):
    return build("dataset", {"name": "coco_caption", "root": f"{world}/coco", "split": "test", "processor": IMAGE,
                             "max_samples": n})


def test_a_bad_image_is_skipped_counted_named_and_left_out_of_the_scores(world, model, tmp_path, caplog):
    dataset = caption_set(world)
    broken = dataset.records[2]
    with open(broken["media_path"], "r+b") as f:
        f.truncate(64)
    with caplog.at_level("WARNING", logger="vlreg.data"):
        metrics = evaluate(model, {"name": "caption", "num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 1,
                                   "metrics": ["Bleu"]}, dataset, tmp_path / "run")
    assert metrics["skipped_media"] == 1
    assert f"evaluation: skipped 1 bad media files of 6 items (16.7%): {broken['media_path']} (" in caplog.text
    predictions = json.loads(next((tmp_path / "run" / "predictions").glob("caption_step0.json")).read_text())
    assert len(predictions) == 5 and broken["image_id"] not in {p["image_id"] for p in predictions}


def test_an_evaluation_set_with_no_readable_media_is_an_error(world, model, tmp_path):
    dataset = caption_set(world, n=3)
    for record in dataset.records:
        with open(record["media_path"], "r+b") as f:
            f.truncate(10)
    with pytest.raises(DataError, match=r"every media file of the evaluation set failed to load \(3\)"):
        evaluate(model, {"name": "caption", "num_beams": 1, "max_new_tokens": 2, "min_new_tokens": 1}, dataset,
                 tmp_path / "run")


def test_vqa_prompt_is_applied_once(world, model, tmp_path):
    questions = []
    original = model.llm.generate

    def spy(prompts, text_input=None, **options):
        questions.extend(text_input)
        return original(prompts, text_input, **options)

    model.llm.generate = spy
    try:
        dataset = build("dataset", {"name": "vqav2", "root": f"{world}/vqav2", "split": "val2014", "processor": IMAGE,
                                    "text_processor": {"name": "question"}, "max_samples": 2})
        metrics = evaluate(model, {"name": "vqa", "num_beams": 1, "max_new_tokens": 2}, dataset, tmp_path / "run")
    finally:
        del model.llm.generate
    assert 0.0 <= metrics["accuracy"] <= 100.0
    assert all(q.startswith("Question: ") and q.count("Question:") == 1 and q.endswith(" Short answer:")
               for q in questions)
