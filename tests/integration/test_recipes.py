"""The recipes as a user meets them: tiny versions of the real recipes (per-stage overrides of the packaged
files, run from a directory of their own), every suite on what they produce, the README's Python example on
their models, files prepared by the models themselves, and runs moved or copied elsewhere."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import vlreg
from vlreg.bench.__main__ import main as bench_main
from vlreg.errors import ConfigError, InputError
from vlreg.run import main as run_main

from tests.common import ROOT

TINY = ["world.task.size=small", "all.run.max_steps=2", "all.run.batch_size=4", "all.run.num_workers=0",
        "all.run.warmup_steps=0", "all.run.log_every=1", "all.data.eval.max_samples=4"]
"""The recipes in miniature: the small world, two steps of four items per stage, four items per evaluation."""
VIDEO = "world/msrvtt/videos/all/video7.mp4"
PICTURE = "world/coco/images/val2014/COCO_val2014_000000000014.jpg"


def run_recipes(directory: Path, *recipes: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        for recipe in recipes:
            assert run_main([recipe, *TINY]) == 0, recipe


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A directory in which the P-Former recipes ran as the README says, shrunk: ``world/``,
    ``outputs/pformer_video`` and ``outputs/pformer_image``."""
    root = tmp_path_factory.mktemp("workspace")
    run_recipes(root, "pformer/video", "pformer/image")
    return root


def test_each_suite_runs_on_each_recipe_output(workspace, tmp_path, monkeypatch):
    run_recipes(workspace, "blip2/stage2_t5", "blip2/vqav2", "blip2/caption_coco", "blip2/retrieval_coco")
    monkeypatch.chdir(workspace)
    outputs = ["outputs/pformer_video", "outputs/pformer_image", "outputs/blip2"]
    argv = ["--suite", "all", *(arg for output in outputs for arg in ("--model", output)), "--quick",
            "--out", str(tmp_path / "bench"), "--num-workers", "0", "--batch-size", "4",
            "--set", "world.size=small", "quick.max_samples=4", "evaluations.caption.task.metrics=[Bleu,CIDEr]",
            "evaluations.caption.task.max_new_tokens=10", "evaluations.retrieval.task.k=4"]
    assert bench_main(argv) == 0
    results = json.loads((tmp_path / "bench" / "results.json").read_text())["results"]
    ran = {model: {key: r.get("stage") for key, r in found.items() if r["status"] == "ok"}
           for model, found in results.items()}
    # the stage-1 model aligned to a P-Former retrieves (its projection into the P-Former's space is not needed)
    assert ran["pformer_video"] == {"msrvtt/caption": "stage2", "msrvtt/qa": "qa", "msrvtt/retrieval": "stage1"}
    assert ran["pformer_image"] == {"coco/caption": "stage2", "coco/retrieval": "stage1", "vqav2/vqa": "vqa"}
    assert ran["blip2"] == {"coco/caption": "caption_coco", "coco/retrieval": "retrieval_coco", "vqav2/vqa": "vqav2"}
    assert all("it is an image model" in r["reason"] or "it is a video model" in r["reason"]
               for found in results.values() for r in found.values() if r["status"] != "ok")


def python_example(readme: str) -> str:
    """The README's Python example: the code block that loads a model."""
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    return next(block for block in blocks if "vlreg.load_model(" in block)


def test_the_readme_example_runs_as_written(workspace, monkeypatch, capsys):
    code = python_example((ROOT / "README.md").read_text(encoding="utf-8"))
    assert VIDEO in code and PICTURE in code and "outputs/pformer_video/stage2" in code
    monkeypatch.chdir(workspace)
    exec(compile(code, "README.md", "exec"), {})
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(printed) >= 3 and all(isinstance(x, str) for line in printed for x in eval(line))


def test_a_model_prepares_files_as_it_was_evaluated(workspace, monkeypatch):
    from PIL import Image

    from vlreg.build import build
    from vlreg.interop.processors import with_defaults

    monkeypatch.chdir(workspace)
    video = vlreg.load_model("outputs/pformer_video/stage2")
    frames = {"name": "video_eval", "image_size": 64, "num_frames": 4}  # the recipe's evaluation processor
    assert video.eval_processor == with_defaults(frames) and video.eval_processor["sampling"] == "uniform"
    batch = video.preprocess(video=[VIDEO, VIDEO])
    assert list(batch) == ["video"] and batch["video"].shape == (2, 4, 3, 64, 64)
    assert torch.equal(batch["video"][1], build("processor", frames)(VIDEO))
    assert len(video.generate(batch)) == 2

    pictures = vlreg.load_model("outputs/pformer_image/stage2")
    from_path = pictures.preprocess(image=PICTURE)["image"]
    assert from_path.shape == (1, 3, 64, 64)
    with Image.open(PICTURE) as image:
        assert torch.equal(pictures.preprocess(image=[image])["image"], from_path)
    assert len(pictures.generate({"image": from_path})) == 1

    with pytest.raises(InputError, match=r"this model reads video \(eval_processor video_eval\); got image="):
        video.preprocess(image=PICTURE)
    with pytest.raises(InputError, match="cannot read image: .*nowhere.jpg: file not found"):
        pictures.preprocess(image="nowhere.jpg")
    with pytest.raises(TypeError, match="preprocess takes one of image=, video= or features=; got image, video"):
        pictures.preprocess(image=PICTURE, video=VIDEO)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_moved_run_loads(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = weights(vlreg.load_model(workspace / "outputs/pformer_video/stage2"))
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy, ignore=shutil.ignore_patterns("feature_cache", "blip2", "pformer_image"))

    moved = tmp_path / "elsewhere" / "run"  # the whole working directory: paths found relative to the run
    shutil.move(copy, moved)
    loaded = weights(vlreg.load_model(moved / "outputs/pformer_video/stage2"))
    assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in loaded)

    alone = tmp_path / "alone"  # the project output alone, as on another machine: the world it used is gone
    shutil.move(moved / "outputs", alone)
    shutil.move(workspace / "world", tmp_path / "hidden")
    try:
        with pytest.raises(ConfigError) as caught:
            vlreg.load_model(alone / "pformer_video/stage2")
        message = str(caught.value)
        assert "model.encoder.frame_encoder.checkpoint 'world/backbones/vision/export/encoder.safetensors'" in message
        assert "overrides=['model.encoder.frame_encoder.checkpoint=PATH']" in message and "$VLREG_RUN_PATH" in message
        monkeypatch.setenv("VLREG_RUN_PATH", str(moved))
        assert vlreg.load_model(alone / "pformer_video/stage2") is not None

        lm = moved / "world/backbones/lm/export"  # one frozen source moved: an override points at it
        shutil.move(lm, tmp_path / "lm")
        with pytest.raises(ConfigError, match="model.llm.path 'world/backbones/lm/export'"):
            vlreg.load_model(alone / "pformer_video/stage2")
        model = vlreg.load_model(alone / "pformer_video/stage2", overrides=[f"model.llm.path={tmp_path / 'lm'}"])
        assert torch.equal(model.bridge.query_tokens, original["bridge.query_tokens"])
    finally:
        shutil.move(tmp_path / "hidden", workspace / "world")
