"""The world as stages of a project (make_world, then train_tokenizers): run before the stages that read them,
checked again on a rerun; a bad world stage is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.vlreg.data.world.test_world import load


def world_project(root: Path, out: Path) -> dict:
    """The world's first stages as the recipes have them (world, tokenizers), then an LM trained for a step."""
    text = {"name": "text_lines", "root": "${vars.world}/text", "split": "train", "val_size": 100,
            "text_processor": {"name": "caption"}}
    tokenizer = "${vars.world}/backbones/tokenizers/opt"
    return {
        "name": "world_project", "output_dir": str(out), "vars": {"world": str(root)},
        "stages": [
            {"name": "world", "task": {"name": "make_world", "root": "${vars.world}", "size": "small"}},
            {"name": "tokenizers", "task": {"name": "train_tokenizers", "texts": text,
                                            "tokenizers": [{"path": tokenizer, "style": "opt", "vocab_size": 300}]}},
            {"name": "lm", "task": {"name": "lm_pretrain"},
             "model": {"llm": {"includes": ["llms/opt_tiny.yaml"], "tokenizer": tokenizer}},
             "data": {"train": text, "eval": {**text, "split": "val", "max_samples": 4}},
             "run": {"max_steps": 1, "batch_size": 4, "num_workers": 0}},
        ],
    }


def test_a_project_generates_its_world_and_tokenizers_in_its_first_stages(tmp_path, capsys):
    from vlreg.config import load_config, to_plain
    from vlreg.pipeline import Project
    from vlreg.run import main as run_main

    path = tmp_path / "project.yaml"
    path.write_text(json.dumps(world_project(tmp_path / "world", tmp_path / "out")))
    assert run_main(["--cfg", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage world: task make_world\nprepares files: no model\n" in out and "stage lm: task lm_pretrain" in out
    assert not (tmp_path / "world").exists()

    assert run_main(["--cfg", str(path), "--stage", "lm"]) == 0  # the preparations before it run too
    assert load(tmp_path / "world", "world.json")["size"] == "small"
    assert (tmp_path / "world" / "backbones" / "tokenizers" / "opt" / "tokenizer.json").is_file()
    assert (tmp_path / "out" / "lm" / "stage.json").is_file()
    assert not (tmp_path / "out" / "world").exists()  # a preparation writes nothing of its own

    assert run_main(["--cfg", str(path)]) == 0  # again: the world is checked, the trained stage skipped
    out = capsys.readouterr().out
    assert "stage world: ready" in out and "stage lm: already complete" in out

    project = Project.from_config(to_plain(load_config(path)))
    assert [s.prepares for s in project.stages] == [True, True, False]
    assert [s.name for s in project.select(["tokenizers"])] == ["world", "tokenizers"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["stages"][0]["task"].update(size="huge"),
     "stages.world.task.size: 'huge' is not a world size; sizes: small, default, large"),
    (lambda c: c["stages"][0].update(model={"llm": "causal_lm"}),
     "stages.world.model: this stage's task prepares files and builds no model; remove model"),
    (lambda c: c["stages"][1]["task"]["tokenizers"][0].update(stlye="bert"),
     "stages.tokenizers.task.tokenizers[0]: unknown key 'stlye' for TokenizerToTrain (did you mean 'style'?)"),
])
def test_a_bad_world_stage_is_one_line(tmp_path, capsys, edit, message):
    from vlreg.run import main as run_main

    cfg = world_project(tmp_path / "world", tmp_path / "out")
    edit(cfg)
    path = tmp_path / "project.yaml"
    path.write_text(json.dumps(cfg))
    assert run_main(["--cfg", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "world").exists()
