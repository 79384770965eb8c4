"""Projects end to end on the small world: stages in order, init by reference, skips, dry runs, errors."""

import json

import pytest
import torch
import yaml

from vlreg.pipeline import Project, build_model, initialise
from vlreg.run import main as run_main

TINY_QFORMER = {"includes": ["bridges/qformer_tiny.yaml"], "num_queries": 8, "hidden_size": 64, "num_heads": 4,
                "intermediate_size": 128, "embed_dim": 32, "dropout": 0.0}
IMAGE = {"name": "image_eval", "image_size": 32}


def project_config(world, tokenizers, out) -> dict:
    encoder = {"includes": ["encoders/vit_tiny.yaml"], "img_size": 32}
    llm = {"includes": ["llms/opt_tiny.yaml"], "tokenizer": tokenizers["opt"]}
    coco = f"{world}/coco"
    run = {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "num_workers": 0, "log_every": 2}
    return {
        "name": "tiny", "output_dir": str(out),
        "stages": [
            {"name": "stage1", "task": {"name": "pretrain_stage1", "k": 4},
             "model": {"encoder": encoder, "bridge": {**TINY_QFORMER, "tokenizer": tokenizers["bert"]},
                       "losses": [{"name": "blip2_stage1"}]},
             "data": {"train": {"name": "coco_caption", "root": coco, "processor": IMAGE},
                      "eval": {"name": "coco_retrieval", "root": coco, "split": "test", "processor": IMAGE,
                               "max_samples": 6}},
             "run": run},
            {"name": "stage2", "task": {"name": "pretrain_stage2", "num_beams": 1, "max_new_tokens": 6,
                                        "min_new_tokens": 1, "metrics": ["Bleu", "CIDEr"]},
             "init": {"bridge": "stage1"},
             "model": {"encoder": encoder, "bridge": {**TINY_QFORMER, "text_branch": False}, "llm": llm,
                       "losses": [{"name": "lm"}]},
             "data": {"train": {"name": "coco_caption", "root": coco, "processor": IMAGE},
                      "eval": {"name": "coco_caption", "root": coco, "split": "test", "processor": IMAGE,
                               "max_samples": 6}},
             "run": run},
            {"name": "vqa", "task": {"name": "vqa", "num_beams": 1, "max_new_tokens": 3},
             "init": {"bridge": "stage2"},
             "model": {"encoder": encoder, "bridge": {**TINY_QFORMER, "text_branch": False}, "llm": llm},
             "data": {"eval": {"name": "vqav2", "root": f"{world}/vqav2", "split": "val2014", "processor": IMAGE,
                               "max_samples": 6}},
             "run": {**run, "max_steps": 0}},
        ],
    }


@pytest.fixture(scope="module")
def project(small_world, tokenizer_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    path = root / "project.yaml"
    path.write_text(yaml.safe_dump(project_config(small_world, tokenizer_dirs, root / "out")))
    return path


@pytest.fixture(scope="module")
def finished(project):
    assert run_main(["--cfg", str(project)]) == 0
    return yaml.safe_load(project.read_text())["output_dir"]


def test_dry_run_prints_each_component(project, capsys):
    assert run_main(["--cfg", str(project), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage stage2: task pretrain_stage2" in out
    assert "bridge     qformer    prompts [2, 8, 64]" in out
    assert "llm        causal_lm  logits [2, L, " in out


def test_stages_run_in_order_and_write_official_formats(finished):
    from pathlib import Path

    out = Path(finished)
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["stages"]) == ["stage1", "stage2", "vqa"]
    assert {"txt_r1", "img_r1", "r_mean"} <= set(summary["stages"]["stage1"]["final"])
    assert {"Bleu_4", "CIDEr"} <= set(summary["stages"]["stage2"]["final"])
    assert "accuracy" in summary["stages"]["vqa"]["final"]
    captions = json.loads(next((out / "stage2" / "predictions").glob("caption_step*.json")).read_text())
    assert len(captions) == 6 and set(captions[0]) == {"image_id", "caption"} and isinstance(captions[0]["image_id"], int)
    answers = json.loads(next((out / "vqa" / "predictions").glob("vqa_step*.json")).read_text())
    assert len(answers) == 6 and set(answers[0]) == {"question_id", "answer"}
    rankings = json.loads(next((out / "stage1" / "predictions").glob("retrieval_step*.json")).read_text())
    assert len(rankings["i2t"]) == 6 and len(rankings["t2i"]) == 30
    assert (out / "stage2" / "config.yaml").is_file()


def test_rerun_skips_completed_stages(project, finished, capsys):
    from pathlib import Path

    before = (Path(finished) / "stage1" / "results.json").stat().st_mtime_ns
    assert run_main(["--cfg", str(project)]) == 0
    out = capsys.readouterr().out
    assert out.count("already complete") == 3
    assert (Path(finished) / "stage1" / "results.json").stat().st_mtime_ns == before


def test_init_loads_an_earlier_stage_component(project, finished):
    from vlreg.config import load_config, to_plain
    from vlreg.io.checkpoints import final_checkpoint, load_weights

    proj = Project.from_config(to_plain(load_config(project)))
    stage2 = proj.stage("stage2")
    model = build_model(stage2.config)
    initialise(proj, stage2, model)
    reference = build_model(proj.stage("stage1").config)
    load_weights(reference, final_checkpoint(stage2.output_dir.parent / "stage1"), strict=False)
    assert torch.equal(model.bridge.query_tokens, reference.bridge.query_tokens)
    assert torch.equal(model.bridge.layers[0].self_attn.query.weight, reference.bridge.layers[0].self_attn.query.weight)


def test_one_stage_and_unknown_stage(project, finished, capsys):
    assert run_main(["--cfg", str(project), "--stage", "stag1"]) == 2
    assert "unknown stage 'stag1' (did you mean 'stage1'?)" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(stagez=[]), "project: unknown key 'stagez'"),
    (lambda c: c["stages"][0].update(trian={}), "stages.stage1: unknown key 'trian'"),
    (lambda c: c["stages"][1].update(init={"bridge": "vqa"}), "stages.stage2.init.bridge: 'vqa' is neither an earlier stage"),
    (lambda c: c["stages"][0]["run"].update(lr="fast"), "stages.stage1.run.lr: expected float, got str 'fast'"),
    (lambda c: c["stages"][0]["model"]["bridge"].update(num_querys=4), "unknown key 'num_querys' for bridge 'qformer'"),
    (lambda c: c["stages"][0]["data"].update(test={}), "stages.stage1.data: unknown split 'test'"),
    (lambda c: c["stages"][0]["task"].update(name="retreival"), "unknown task 'retreival' (did you mean 'retrieval'?)"),
])
def test_config_mistakes_are_named_before_anything_runs(small_world, tokenizer_dirs, tmp_path, capsys, edit, message):
    cfg = project_config(small_world, tokenizer_dirs, tmp_path / "out")
    edit(cfg)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_main(["--cfg", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_declared_metric_names_cover_each_evaluation(project, finished):
    from pathlib import Path

    from vlreg.build import build
    from vlreg.config import load_config, to_plain

    summary = json.loads((Path(finished) / "results.json").read_text())
    for stage in Project.from_config(to_plain(load_config(project))).stages:
        declared = build("task", stage.config["task"]).metric_names()
        assert set(summary["stages"][stage.name]["final"]) <= set(declared), stage.name
