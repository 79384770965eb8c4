"""Every project under projects/ dry-runs, and the paper-scale recipes say what the papers say.

A project is any YAML file under ``projects/`` outside a ``stages/`` or ``models/`` folder (those hold the
parts that projects include; :func:`vlreg.recipes.projects`), so a new project is checked as soon as it is added. The dry run resolves
and validates the whole config and builds each stage's model on the meta device; nothing is read,
downloaded or trained. Runs in-process: the imports are paid once.
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import pytest

from vlreg import recipes
from vlreg.config import load_config, to_plain
from vlreg.pipeline import Project
from vlreg.run import main as run_main

from tests.common import ROOT

PROJECTS = sorted(recipes.projects().values())
PAPER_PFORMER = sorted(p for p in PROJECTS if p.parent == ROOT / "projects" / "pformer" / "paper")


def name(path: Path) -> str:
    return str(path.relative_to(ROOT / "projects"))


@functools.lru_cache(maxsize=None)
def project(path: Path) -> Project:
    return Project.from_config(to_plain(load_config(path)), source=str(path))


@functools.lru_cache(maxsize=None)
def dry_run(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_main(["--cfg", str(path), "--dry-run"])
    return status, out.getvalue()


def summary_rows(output: str, stage: str) -> dict[str, list[str]]:
    """``{component: its columns}`` of one stage's table in a dry run's output."""
    block = output.split(f"stage {stage}: ", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: line.split() for line in block.splitlines()[1:] if line.strip()}


def test_the_projects_are_found():
    found = {name(p) for p in PROJECTS}
    assert {"pformer/video.yaml", "blip2/stage1.yaml", "blip2/stage2_t5.yaml", "blip2/paper/stage2_opt.yaml",
            "pformer/paper/image.yaml", "pformer/paper/video_features.yaml"} <= found
    assert not any("/stages/" in f or "/models/" in f for f in found)


@pytest.mark.parametrize("path", PROJECTS, ids=name)
def test_project_dry_runs_every_stage(path):
    status, output = dry_run(path)
    assert status == 0
    for stage in project(path).stages:
        task = stage.config["task"]
        assert f"stage {stage.name}: task {task if isinstance(task, str) else task['name']}\n" in output
        assert "total" in summary_rows(output, stage.name) or stage.prepares


@pytest.mark.parametrize("path", PROJECTS, ids=name)
def test_the_world_is_the_first_stage_of_the_world_recipes_only(path):
    """The recipes on the synthetic world generate it and train its tokenizers in their first stages; the
    recipes on real data have no world stage at all."""
    tasks = [s.config["task"]["name"] for s in project(path).stages]
    world_tasks = {"make_world", "train_tokenizers", "attribute_pretrain"}
    if "/paper/" in name(path):
        assert not world_tasks & set(tasks)
    else:
        assert tasks[:2] == ["make_world", "train_tokenizers"]


def test_a_stage_directory_holds_one_stage_definition():
    """Recipes that share a stage's directory (stage 1 under outputs/blip2, the world's backbones) define it
    identically, so skipping it as complete in a later recipe reuses what that recipe would have trained."""
    defined: dict[Path, tuple[str, dict]] = {}
    for path in PROJECTS:
        for stage in project(path).stages:
            first = defined.setdefault(stage.output_dir, (name(path), stage.config))
            assert stage.config == first[1], f"{stage.output_dir}: {name(path)} differs from {first[0]}"
    tiny = {project(p).output_dir for p in PROJECTS if name(p).startswith("blip2/") and "/paper/" not in name(p)}
    paper = {project(p).output_dir for p in PROJECTS if name(p).startswith("blip2/paper/")}
    assert tiny == {Path("outputs/blip2")} and paper == {Path("outputs/blip2_paper")}


def test_blip2_paper_recipes_have_the_papers_models_and_schedule():
    _, output = dry_run(ROOT / "projects/blip2/paper/stage2_opt.yaml")
    assert summary_rows(output, "stage1")["total"][-1] == "186,702,654"
    opt = summary_rows(output, "stage2_opt")
    assert opt["bridge"][-2:] == ["107,130,880", "107,130,880"] and opt["total"][-1] == "107,130,880"
    assert opt["encoder"][-1] == opt["llm"][-1] == "0"
    _, output = dry_run(ROOT / "projects/blip2/paper/stage2_t5.yaml")
    assert summary_rows(output, "stage2_t5")["total"][-1] == "106,737,152"

    stages = {s.name: s.config for s in project(ROOT / "projects/blip2/paper/caption_coco.yaml").stages}
    for stage, steps, min_lr, batch in [("stage1", 250_000, 1e-5, 1680), ("stage2_opt", 80_000, 5e-5, 1920)]:
        run = stages[stage]["run"]
        assert (run["max_steps"], run["min_lr"], run["batch_size"]) == (steps, min_lr, batch)
        assert (run["lr"], run["warmup_steps"], run["weight_decay"], run["betas"]) == (1e-4, 2000, 0.05, [0.9, 0.98])
        processor = stages[stage]["data"]["train"]["processor"]
        assert (processor["name"], processor["image_size"], processor.get("hflip", True)) == ("image_train", 224, True)
    assert stages["caption_coco"]["model"]["llm"]["prompt"] == "a photo of"
    assert stages["caption_coco"]["model"]["encoder"]["frozen"] is False


@pytest.mark.parametrize("path", PAPER_PFORMER, ids=name)
def test_pformer_paper_alignment(path):
    """Stage 0 trains the P-Former; stages 1 and 2 align to it, frozen, at weights 10 and 100."""
    stages = project(path).stages
    assert [s.config["task"]["name"] for s in stages[:3]] == ["pformer_pretrain", "pretrain_stage1", "pretrain_stage2"]
    pformer, stage1, stage2 = (s.config["model"] for s in stages[:3])
    assert pformer["llm"]["path"] == stage2["llm"]["path"] == "facebook/opt-2.7b"
    assert stage1["losses"] == [{"name": "blip2_stage1", "itc": 1, "itm": 1, "itg": 1},
                                {"name": "pformer_alignment", "weight": 10}]
    assert stage2["losses"] == [{"name": "lm"}, {"name": "pformer_alignment", "weight": 100}]
    for model in (stage1, stage2):
        assert model["prompter"]["frozen"] is True
        assert model["prompter"]["checkpoint"] == str(stages[0].output_dir)
    assert stages[2].config["init"] == {"bridge": stages[1].name}
