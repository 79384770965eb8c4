"""The command line: listings, help, and user errors as one line with exit status 2."""

import subprocess
import sys

import pytest

from vlreg.cli import main as cli_main
from vlreg.run import main as run_main


def test_list_prints_every_kind_with_its_names(capsys):
    from vlreg.registry import KINDS

    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind}:" in out
    for name in ("qformer", "eva_vit_g", "causal_lm", "pformer", "coco_caption", "vqa_accuracy", "pretrain_stage1"):
        assert f"  {name}\n" in out


def test_list_with_a_kind_and_a_wildcard(capsys):
    assert cli_main(["list", "bridge", "*er*"]) == 0
    assert capsys.readouterr().out.split() == ["bridge:", "perceiver", "qformer"]
    assert cli_main(["list", "msrvtt*"]) == 0  # a pattern alone searches every kind
    assert capsys.readouterr().out.split() == ["dataset:", "msrvtt_caption", "msrvtt_qa", "msrvtt_retrieval",
                                               "suite:", "msrvtt"]


def test_info_shows_signature_and_documentation(capsys):
    assert cli_main(["info", "bridge", "linear"]) == 0
    out = capsys.readouterr().out
    assert "vision_width" in out and "llm_width" in out and "num_queries" in out


@pytest.mark.parametrize("argv, message", [
    (["list", "encoderz"], "unknown kind 'encoderz' (did you mean 'encoder'?)"),
    (["info", "bridge", "qfromer"], "unknown bridge 'qfromer' (did you mean 'qformer'?)"),
])
def test_cli_user_errors(capsys, argv, message):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--cfg", "no/such/config.yaml"], "config file 'no/such/config.yaml' not found"),
    (["--cfg", "projects/pformer/video.yaml", "run.lr"], "override 'run.lr' must have the form key.path=value"),
    (["--cfg", "projects/pformer/video.yaml", "stages=3"], "project: stages must be a non-empty list"),
])
def test_run_user_errors(capsys, argv, message):
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_and_module_entry_points():
    out = subprocess.run([sys.executable, "-m", "vlreg.run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--dry-run" in out.stdout and "--stage" in out.stdout
    out = subprocess.run([sys.executable, "-m", "vlreg", "list", "llm"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["llm:", "causal_lm", "seq2seq_lm"]


def test_ls_lists_the_recipes_with_their_first_comment_line(capsys):
    assert cli_main(["ls"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["pformer/video"].startswith("P-Former for video, end to end on the synthetic world")
    assert {"pformer/image", "blip2/stage1", "blip2/paper/stage2_opt", "pformer/paper/video_features"} <= set(lines)
    assert not any("/stages/" in name or "/models/" in name for name in lines)


def test_cp_copies_a_recipe_whose_includes_still_resolve(tmp_path, capsys, monkeypatch):
    from vlreg.config import load_config, to_plain

    monkeypatch.chdir(tmp_path)
    assert cli_main(["cp", "blip2/stage1", "mine.yaml"]) == 0
    copied = (tmp_path / "mine.yaml").read_text()
    assert "- includes: [blip2/stages/stage1.yaml]" in copied  # was stages/stage1.yaml, beside the recipe
    assert "- includes: [world/stages/lm.yaml]" in copied and copied.startswith("# BLIP-2 stage 1")
    assert to_plain(load_config("mine.yaml")) == to_plain(load_config("blip2/stage1"))
    assert cli_main(["cp", "blip2/stage1", "mine.yaml"]) == 2  # never replaces a file
    assert "mine.yaml exists" in capsys.readouterr().err
    assert cli_main(["cp", "pformer/vidoe"]) == 2
    assert "no recipe 'pformer/vidoe' (did you mean 'pformer/video'?)" in capsys.readouterr().err


def test_config_prints_each_stage_resolved_and_where_each_key_was_set(capsys):
    assert cli_main(["config", "pformer/video", "--stage", "stage2", "stage2.run.max_steps=50"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# project pformer_video\nname: pformer_video\n")
    assert "# stage stage2\nname: stage2\n" in out and "# stage stage1" not in out
    assert "\n  max_steps: 50\n" in out and "\n    path: world/backbones/lm/export\n" in out  # ${vars.world} resolved
    assert cli_main(["config", "pformer/video", "--where", "all.run.precision=fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stage2 = lines[lines.index("# stage stage2"):]
    assert next(line for line in stage2 if line.startswith("  precision:")).endswith("# override all.run.precision=fp32")
    assert next(line for line in stage2 if line.startswith("      name: timm_vit")).endswith(
        "configs/world/frame_encoder.yaml:4")


@pytest.mark.parametrize("argv, message", [
    (["config", "pformer/video", "stag2.run.lr=1"], "'stag2' is neither a stage (did you mean 'stage2'?)"),
    (["config", "pformer/video", "--stage", "stag2"], "unknown stage 'stag2' (did you mean 'stage2'?)"),
    (["config", "no/such/recipe"], "config file 'no/such/recipe' not found"),
    (["config"], "name the config: a YAML file or a recipe"),
    (["config", "pformer/video", "--wrong"], "unrecognized arguments: --wrong (see vlreg config --help)"),
    (["run", "pformer/video", "--dry-run", "stage1.run.lr=[1"], "cannot parse override 'stage1.run.lr=[1'"),
    (["run", "--cfg"], "argument --cfg: expected one argument (see python -m vlreg.run --help)"),
    (["lst"], "invalid choice: 'lst'"),
])
def test_command_line_mistakes_are_one_line(capsys, argv, message):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
