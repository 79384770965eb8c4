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
