"""Benchmark suites on the small world: a tiny project and its transformers export side by side,
stage choice, n/a reasons, numbers equal to the tasks' own evaluation, reports, custom suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import vlreg
from vlreg.bench.__main__ import main as bench_main
from vlreg.bench.report import format_value
from vlreg.interop.processors import with_defaults

QFORMER = {"includes": ["bridges/qformer_tiny.yaml"], "num_queries": 8, "hidden_size": 64, "num_heads": 4,
           "intermediate_size": 128, "embed_dim": 32, "dropout": 0.0}
IMAGE = {"name": "image_eval", "image_size": 32}
VIDEO = {"name": "video_eval", "image_size": 32, "num_frames": 2}
RUN = {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "num_workers": 0, "log_every": 1}
SAMPLES = 6
# quick settings shared by the runs below: 6 samples, greedy, short captions, two fast caption metrics
QUICK = ["quick.max_samples=6", "evaluations.caption.task.max_new_tokens=10",
         "evaluations.caption.task.metrics=[Bleu,CIDEr]", "evaluations.retrieval.task.k=4"]


def run_pipeline(config: dict, directory: Path) -> Path:
    from vlreg.run import main as run_main

    path = directory / "project.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_main(["--cfg", str(path)]) == 0
    return Path(config["output_dir"])


@pytest.fixture(scope="module")
def project(small_world, tokenizer_dirs, tmp_path_factory):
    """A project output: stage1 (Q-Former with its text branch, no LLM), stage2 (with OPT, no text branch),
    vqa (stage 2's model fine-tuned on VQAv2 questions)."""
    root = tmp_path_factory.mktemp("bench_project")
    encoder = {"includes": ["encoders/vit_tiny.yaml"], "img_size": 32}
    llm = {"includes": ["llms/opt_tiny.yaml"], "tokenizer": tokenizer_dirs["opt"]}
    coco = f"{small_world}/coco"
    train = {"name": "coco_caption", "root": coco, "processor": {**IMAGE, "name": "image_train", "hflip": False}}
    config = {
        "name": "tiny", "output_dir": str(root / "out"),
        "stages": [
            {"name": "stage1", "task": {"name": "pretrain_stage1", "k": 4},
             "model": {"encoder": encoder, "bridge": {**QFORMER, "tokenizer": tokenizer_dirs["bert"]},
                       "losses": [{"name": "blip2_stage1"}]},
             "data": {"train": train, "eval": {"name": "coco_retrieval", "root": coco, "processor": IMAGE,
                                               "max_samples": 2}},
             "run": RUN},
            {"name": "stage2", "task": {"name": "pretrain_stage2", "num_beams": 1, "max_new_tokens": 3,
                                        "min_new_tokens": 1, "metrics": ["Bleu"]},
             "init": {"bridge": "stage1"},
             "model": {"encoder": encoder, "bridge": {**QFORMER, "text_branch": False}, "llm": llm,
                       "losses": [{"name": "lm"}]},
             "data": {"train": train, "eval": {"name": "coco_caption", "root": coco, "split": "test",
                                               "processor": IMAGE, "max_samples": 2}},
             "run": RUN},
            {"name": "vqa", "task": {"name": "vqa", "num_beams": 1, "max_new_tokens": 3},
             "init": {"bridge": "stage2"},
             "model": {"encoder": encoder, "bridge": {**QFORMER, "text_branch": False}, "llm": llm,
                       "losses": [{"name": "lm"}]},
             "data": {"train": {"name": "vqav2", "root": f"{small_world}/vqav2", "split": "train2014",
                                "processor": train["processor"], "text_processor": {"name": "question"}}},
             "run": RUN},
        ],
    }
    return run_pipeline(config, root)


@pytest.fixture(scope="module")
def hf_dir(project, tmp_path_factory):
    """The project's stage-2 model exported as a transformers BLIP-2 directory."""
    directory = tmp_path_factory.mktemp("bench_hf") / "blip2"
    vlreg.interop.save_transformers(vlreg.load_model(project / "stage2"), directory)
    return directory


@pytest.fixture(scope="module")
def video_run(small_world, tokenizer_dirs, tmp_path_factory):
    """A one-stage video model: 2 frames of 32 px through the tiny ViT, a Q-Former without text branch, OPT."""
    root = tmp_path_factory.mktemp("bench_video")
    msrvtt = f"{small_world}/msrvtt"
    frame = {"includes": ["encoders/vit_tiny.yaml"], "img_size": 32}
    config = {
        "name": "video", "output_dir": str(root / "video"),
        "task": {"name": "pretrain_stage2", "num_beams": 1, "max_new_tokens": 3, "min_new_tokens": 1,
                 "metrics": ["Bleu"]},
        "model": {"encoder": {"name": "video", "num_frames": 2, "frame_encoder": frame},
                  "bridge": {**QFORMER, "text_branch": False},
                  "llm": {"includes": ["llms/opt_tiny.yaml"], "tokenizer": tokenizer_dirs["opt"]},
                  "losses": [{"name": "lm"}]},
        "data": {"train": {"name": "msrvtt_caption", "root": msrvtt, "processor": {**VIDEO, "name": "video_train"}},
                 "eval": {"name": "msrvtt_caption", "root": msrvtt, "split": "test", "processor": VIDEO,
                          "max_samples": 2}},
        "run": {**RUN, "max_steps": 2},
    }
    return run_pipeline(config, root)


def bench(world: Path | str, out: Path, *args: str) -> dict:
    """Run the bench quickly on the small world at ``world``; returns results.json."""
    argv = [*args, "--out", str(out), "--quick", "--batch-size", "4", "--num-workers", "0",
            "--set", f"world.root={world}", "world.size=small", *QUICK]
    assert bench_main(argv) == 0
    return json.loads((out / "results.json").read_text())


def direct(model, task, node: dict, tmp_path: Path) -> dict:
    """What the task's own evaluate returns for the model on the dataset node."""
    from vlreg.build import build
    from vlreg.runner.context import EvalContext
    from vlreg.runner.distributed_setup import setup_distributed

    context = EvalContext(tmp_path / "direct", 0, 0, setup_distributed(), "fp32", batch_size=4, collate_fn=task.collate)
    with torch.no_grad():
        metrics = task.evaluate(model.eval(), build("dataset", node), context)
    return {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def side_by_side(small_world, project, hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_coco") / "out"
    with pytest.MonkeyPatch.context() as patch:  # a world given by a relative path, as the suites' default is
        patch.chdir(small_world.parent)
        record = bench(small_world.name, out, "--suite", "coco", "--suite", "vqav2", "--model", str(project),
                       "--model", str(hf_dir), "--name", "ours", "--name", "hf")
    return out, record


def test_each_evaluation_runs_on_the_last_stage_that_has_its_parts(side_by_side, project):
    _, record = side_by_side
    ours, hf = record["results"]["ours"], record["results"]["hf"]
    assert list(ours) == ["coco/caption", "coco/retrieval", "vqav2/vqa"] == record["evaluations"]
    # each on the last stage trained for its task: stage2 captions although the later vqa stage could
    assert [ours[k]["stage"] for k in record["evaluations"]] == ["stage2", "stage1", "vqa"]
    ran = [r for results in record["results"].values() for r in results.values() if r["status"] == "ok"]
    assert len(ran) == 5 and all(r["metrics"]["skipped_media"] == 0 for r in ran)  # every image was read
    assert {"accuracy", "accuracy_yes_no"} <= set(ours["vqav2/vqa"]["metrics"])
    assert ours["coco/caption"]["model"] == str(project / "stage2")
    assert ours["coco/caption"]["processor"] == with_defaults(IMAGE)  # the stage config's evaluation processor
    assert record["models"]["ours"] == {"source": str(project), "kind": "project",
                                        "models": ["stage1", "stage2", "vqa"]}
    assert hf["coco/retrieval"] == {"status": "n/a", "reason": "it has no Q-Former text branch (retrieval needs a "
                                                                "stage-1 model's ITC and ITM heads)"}
    assert hf["coco/caption"]["processor"]["image_size"] == 32
    # the export holds the same weights: the same captions, so the same scores
    assert hf["coco/caption"]["metrics"] == ours["coco/caption"]["metrics"]
    settings = record["suites"]["coco"]["evaluations"]["caption"]
    assert settings["task"] == {"name": "caption", "num_beams": 1, "max_new_tokens": 10, "min_new_tokens": 8,
                                "length_penalty": 1.0, "metrics": ["Bleu", "CIDEr"]}
    assert settings["dataset"]["max_samples"] == SAMPLES


def test_numbers_equal_the_tasks_own_evaluation(side_by_side, project, small_world, tmp_path):
    from vlreg.tasks.caption import CaptionTask
    from vlreg.tasks.retrieval import RetrievalTask

    _, record = side_by_side
    coco = f"{small_world}/coco"
    caption = direct(vlreg.load_model(project / "stage2"),
                     CaptionTask(num_beams=1, max_new_tokens=10, min_new_tokens=8, metrics=["Bleu", "CIDEr"]),
                     {"name": "coco_caption", "root": coco, "split": "test", "processor": IMAGE,
                      "max_samples": SAMPLES}, tmp_path)
    retrieval = direct(vlreg.load_model(project / "stage1"), RetrievalTask(k=4),
                       {"name": "coco_retrieval", "root": coco, "split": "test", "processor": IMAGE,
                        "text_processor": {"name": "caption", "max_words": 35}, "max_samples": SAMPLES}, tmp_path)
    assert {"CIDEr", "Bleu_4"} <= set(caption) and {"txt_r1", "img_r1", "r_mean"} <= set(retrieval)
    assert record["results"]["ours"]["coco/caption"]["metrics"] == caption
    assert record["results"]["ours"]["coco/retrieval"]["metrics"] == retrieval


def test_reports_table_footnotes_and_chart(side_by_side):
    from PIL import Image

    out, record = side_by_side
    table = (out / "results.md").read_text()
    ours = record["results"]["ours"]
    assert "| evaluation | metric | ours | hf |" in table
    cider = format_value(ours["coco/caption"]["metrics"]["CIDEr"])
    assert f"| coco/caption | CIDEr | {cider} | {cider} |" in table
    assert "| coco/caption | METEOR | – | – |" in table  # a headline metric this run did not compute
    r1 = format_value(ours["coco/retrieval"]["metrics"]["txt_r1"])
    assert f"| coco/retrieval | txt_r1 | {r1} | n/a [1] |" in table
    assert "[1] **hf** (coco/retrieval): it has no Q-Former text branch" in table
    assert "coco/retrieval: stage1 (`" in table and "![results](results.png)" in table
    with Image.open(out / "results.png") as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 200
        assert len(image.convert("RGB").getcolors(1 << 16)) > 3  # bars, not a blank canvas
    assert (out / "runs" / "ours" / "coco" / "retrieval" / "results.json").is_file()
    assert next((out / "runs" / "hf" / "coco" / "caption" / "predictions").glob("caption_step0.json"))


def test_video_suite_needs_a_video_model(small_world, project, video_run, tmp_path):
    from vlreg.tasks.vqa import VQATask

    record = bench(small_world, tmp_path / "out", "--suite", "msrvtt", "--model", str(project),
                   "--model", str(video_run))
    image, video = record["results"]["out"], record["results"]["video"]
    why = "it is an image model; this evaluation needs a video encoder"
    assert image["msrvtt/caption"]["reason"] == image["msrvtt/retrieval"]["reason"] == "; ".join(
        f"{stage}: {why}" for stage in ("stage1", "stage2", "vqa"))
    assert {r["status"] for r in image.values()} == {"n/a"}
    table = (tmp_path / "out" / "results.md").read_text()  # one footnote per model and reason
    assert "[1] **out** (msrvtt/caption, msrvtt/qa, msrvtt/retrieval): stage1: it is an image model" in table
    assert "| msrvtt/retrieval | r_mean | n/a [1] | n/a [2] |" in table
    assert video["msrvtt/caption"]["status"] == video["msrvtt/qa"]["status"] == "ok"
    assert video["msrvtt/caption"]["processor"] == with_defaults(VIDEO)  # frames and size from the run's evaluation node
    assert "no Q-Former text branch" in video["msrvtt/retrieval"]["reason"]
    qa = direct(vlreg.load_model(video_run), VQATask(num_beams=1),
                {"name": "msrvtt_qa", "root": f"{small_world}/msrvtt", "split": "test", "processor": VIDEO,
                 "text_processor": {"name": "question", "max_words": 50}, "max_samples": SAMPLES}, tmp_path)
    assert video["msrvtt/qa"]["metrics"] == qa


def test_a_custom_suite_by_path_or_registered_and_a_real_data_root(small_world, project, tmp_path):
    from vlreg.registry import registry
    from vlreg.tasks.vqa import VQATask

    suite = {"name": "ranked_vqa", "description": "VQAv2 with answers ranked over the answer list.",
             "data": {"root": "/nonexistent"},
             "evaluations": {"vqa": {"media": "image",
                                     "task": {"name": "vqa", "method": "rank", "num_beams": 5},
                                     "dataset": {"name": "vqav2", "root": "${data.root}/vqav2", "split": "val2014"}}}}
    path = tmp_path / "ranked_vqa.yaml"
    path.write_text(yaml.safe_dump(suite))
    world = tmp_path / "no_world"
    argv = ["--model", str(project / "stage2"), "--quick", "--num-workers", "0", "--batch-size", "4",
            "--set", f"data.root={small_world}", f"world.root={world}", "quick.max_samples=6"]
    assert bench_main(["--suite", str(path), "--out", str(tmp_path / "a"), *argv]) == 0
    record = json.loads((tmp_path / "a" / "results.json").read_text())
    assert not world.exists()  # data.root points at real data: no world is generated
    result = record["results"]["stage2"]["ranked_vqa/vqa"]
    assert record["suites"]["ranked_vqa"]["evaluations"]["vqa"]["needs"] == ["llm"]  # implied by the task
    expected = direct(vlreg.load_model(project / "stage2"), VQATask(method="rank", num_beams=1),
                      {"name": "vqav2", "root": f"{small_world}/vqav2", "split": "val2014", "processor": IMAGE,
                       "max_samples": SAMPLES}, tmp_path)
    assert result["metrics"] == expected and "accuracy_yes_no" in expected

    vlreg.bench.register_suite("ranked_vqa", path)
    try:
        assert registry("suite").summary("ranked_vqa") == "VQAv2 with answers ranked over the answer list."
        assert bench_main(["--suite", "ranked_vqa", "--out", str(tmp_path / "b"), *argv]) == 0
        again = json.loads((tmp_path / "b" / "results.json").read_text())
        assert again["results"]["stage2"]["ranked_vqa/vqa"]["metrics"] == expected
    finally:
        del registry("suite")._entries["ranked_vqa"]
