"""Bad configs and bad surroundings: exit status 2 and one line on stderr, never a traceback, before any work.

Each case runs the command line's ``main`` in-process (the imports are paid once); a handful run
``python -m vlreg ...`` in a subprocess, the way a user does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vlreg.run import main as run_main
from vlreg.runner import checkpoint as ckpt
from vlreg.io.run_dir import RunDir
from vlreg.runner.lock import OutputLock

from tests.common import ROOT, corpus
from tests.vlreg.test_pipeline import project_config

IMAGE = {"name": "image_eval", "image_size": 32}


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m vlreg.run ARGV`` in-process: (exit status, stderr)."""
    capsys.readouterr()
    try:
        code = run_main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert message in err, err


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def stage(tokenizer_dirs, tmp_path) -> dict:
    """A tiny single-stage BLIP-2 stage 2 (nothing in it is read by a dry run)."""
    coco = str(tmp_path / "world" / "coco")
    return {
        "name": "tiny", "output_dir": str(tmp_path / "out"),
        "task": {"name": "pretrain_stage2", "num_beams": 1, "max_new_tokens": 4},
        "model": {"encoder": {"includes": ["encoders/vit_tiny.yaml"], "img_size": 32},
                  "bridge": {"includes": ["bridges/qformer_tiny.yaml"], "num_queries": 8, "hidden_size": 64,
                             "num_heads": 4, "intermediate_size": 128, "embed_dim": 32, "text_branch": False},
                  "llm": {"includes": ["llms/opt_tiny.yaml"], "tokenizer": tokenizer_dirs["opt"]},
                  "losses": [{"name": "lm"}]},
        "data": {"train": {"name": "coco_caption", "root": coco, "processor": IMAGE},
                 "eval": {"name": "coco_caption", "root": coco, "split": "test", "processor": IMAGE}},
        "run": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "num_workers": 0},
    }


@pytest.fixture()
def stage_file(stage, tmp_path) -> Path:
    return write(tmp_path / "stage.yaml", stage)


@pytest.fixture()
def project_file(tokenizer_dirs, tmp_path) -> Path:
    """Three stages: stage1, stage2 (init from stage1), vqa (init from stage2)."""
    return write(tmp_path / "project.yaml", project_config(tmp_path / "world", tokenizer_dirs, tmp_path / "out"))


@pytest.mark.parametrize("override, message", [
    ("run=[1]", "override 'run=[1]': run is a mapping"),
    ("model=abc", "stages.tiny.model: expected a mapping, got str 'abc'"),
    ("data=3", "stages.tiny.data: expected a mapping, got int 3"),
    ("data.train.processor.image_size=-1", "stages.tiny.data.train.processor.image_size: must be at least 1, got -1"),
    ("model.llm.config.hidden_sizee=64", "stages.tiny.model.llm.config: unknown key 'hidden_sizee' for "
                                         "transformers' OPTConfig (did you mean 'hidden_size'?)"),
    ("model.llm.config.model_type=otp", "model.llm.config.model_type: transformers knows no model type 'otp'"),
    ("model.llm.tokenizer=???", "model.llm.tokenizer is ??? (a value the config leaves for you to set): set it"),
    ("run.batch_size=0", "run.batch_size must be at least 1, got 0"),
    ("run.batch_size=-8", "run.batch_size must be at least 1, got -8"),
    ("run.accum_steps=3", "run.batch_size 8 is not divisible by run.accum_steps 3"),
    ("run.max_steps=-1", "run.max_steps must not be negative, got -1"),
    ("run.lr=-1", "run.lr must not be negative, got -1"),
    ("run.lr=fast", "stages.tiny.run.lr: expected float, got str 'fast'"),
    ("run.min_lr=1", "run.min_lr 1 is above run.lr 0.001"),
    ("run.warmup_steps=-1", "run.warmup_steps must not be negative, got -1"),
    ("run.keep_checkpoints=0", "run.keep_checkpoints must be at least 1, got 0"),
    ("run.grad_clip=0", "run.grad_clip must be positive"),
    ("run.betas=[0.9,1.5]", "run.betas must be two numbers in [0, 1), got [0.9, 1.5]"),
    ("run.max_epochs=1", "run: set exactly one of max_steps and max_epochs"),
    ("run.lr.peak=1", "override 'run.lr.peak=1': run.lr is a value (0.001), not a mapping"),
    ("run.resume=no/such/run", "stages.tiny.run.resume: 'no/such/run' does not exist"),
    ("runner=trainr", "unknown runner 'trainr' (did you mean 'trainer'?)"),
    ("vars=3", "project.vars: expected a mapping, got int 3"),
    ("tokenizers=[]", "stages.tiny: unknown key 'tokenizers'"),
    ("init.bridgee=x", "stages.tiny.init: the model has no component 'bridgee' (did you mean 'bridge'?)"),
    ("init.bridge=nowhere", "stages.tiny.init.bridge: 'nowhere' is neither an earlier stage (none) nor"),
    ("run.best_metric=CIDEER", "stages.tiny.run.best_metric: 'CIDEER' is not a metric of task Stage2Pretraining "
                               "(did you mean 'CIDEr'?)"),
    ("task.metrics=[CIDEER]", "unknown caption metric 'CIDEER' (did you mean 'CIDEr'?)"),
    ("task=captoin", "unknown task 'captoin' (did you mean 'caption'?)"),
    ("feature_cache=[1]", "stages.tiny.feature_cache: expected bool or str, got list [1]"),
    ("plugins=os", "plugins: must be a list of module names, got 'os'"),
    ("plugins=[json]", "plugin module 'json' listed under plugins: is not part of an installed package"),
])
def test_a_bad_stage_is_one_line_before_any_work(stage_file, tmp_path, capsys, override, message):
    code, err = cli(["--cfg", str(stage_file), override], capsys)  # a real run: it must stop before any work
    assert_one_line(code, err, message)
    assert not (tmp_path / "out").exists()
    assert_one_line(*cli(["--cfg", str(stage_file), "--dry-run", override], capsys), message)


@pytest.mark.parametrize("override, message", [
    ("stages.2.model.bridge.no_such_key=1", "stages.vqa.model.bridge: unknown key 'no_such_key' for bridge 'qformer'"),
    ("stages.3.model.bridge.no_such_key=1", "override 'stages.3.model.bridge.no_such_key=1': stages is a list; "
                                            "address its items by position (0 to 2) or by name (stage1, stage2, vqa)"),
    ("stages.stage3.run.lr=1", "stages is a list; address its items by position (0 to 2) or by name"),
    ("stages.9.run.lr=1", "override 'stages.9.run.lr=1': stages is a list"),
    ("stages.stage1=1", "stages[0]: a stage is a mapping with a name, got 1"),
    ("stage2.model.bridge.no_such_key=1", "stages.stage2.model.bridge: unknown key 'no_such_key' for bridge 'qformer'"),
    ("all.run.lr=fast", "stages.stage1.run.lr: expected float, got str 'fast'"),
    ("stag1.run.lr=1", "override 'stag1.run.lr=1': 'stag1' is neither a stage (did you mean 'stage1'?) nor a key of "
                       "the project; stages: stage1, stage2, vqa. Set a stage's key as STAGE.key=value"),
    ("run.max_steps=7", "override 'run.max_steps=7': 'run' is neither a stage nor a key of the project"),
    ("stages.0=1", "stages[0]: a stage is a mapping with a name, got 1"),
    ("stages=[]", "project: stages must be a non-empty list"),
    ("stages={a: 1}", "override 'stages={a: 1}': stages is a list"),
    ("stages.1.init.bridge=vqa", "stages.stage2.init.bridge: 'vqa' is neither an earlier stage (stage1)"),
    ("stages.0.run.best_metric=CIDEr", "'CIDEr' is not a metric of task Stage1Pretraining"),
    ("vqa.run.max_steps=2", "stages.vqa.model.losses: the stage trains for 2 steps but its model lists no objective"),
])
def test_a_bad_override_of_a_project_is_one_line(project_file, capsys, override, message):
    assert_one_line(*cli(["--cfg", str(project_file), "--dry-run", override], capsys), message)


def test_a_stage_override_of_a_project_applies(project_file, capsys):
    code, err = cli(["--cfg", str(project_file), "--dry-run", "stages.1.run.lr=2e-4", "stages.1.model.bridge.num_queries=4"],
                    capsys)
    assert code == 0, err


@pytest.mark.parametrize("edit, message", [
    (lambda c, tmp: {}, "the config is neither a project (stages: [...]) nor a stage (task: ...)"),
    (lambda c, tmp: {**c, "task": None}, "stages.tiny.task: expected str or dict, got NoneType None"),
    (lambda c, tmp: {**c, "model": {**c["model"], "llm": {**c["model"]["llm"], "tokenizer": "???"}}},
     "model.llm.tokenizer is ???"),
    (lambda c, tmp: {**c, "description": "${oc.env:VLREG_NO_SUCH_VARIABLE}"}, "cannot resolve config: "),
    (lambda c, tmp: {**c, "init": {"bridge": str(tmp / "bridge.pth")}},
     "stages.tiny.init.bridge: '{tmp}/bridge.pth' is a file; init takes an earlier stage (none) or a vlreg "
     "checkpoint directory"),
    (lambda c, tmp: {**c, "run": {**c["run"], "output_dir": str(tmp / "file" / "out")}},
     "Not a directory: {tmp}/file/out: check that path"),
])
def test_a_bad_config_file_is_one_line(stage, tmp_path, capsys, edit, message):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "bridge.pth")
    (tmp_path / "file").write_text("a file where a directory should be")
    path = write(tmp_path / "bad.yaml", edit(stage, tmp_path))
    assert_one_line(*cli(["--cfg", str(path)], capsys), message.format(tmp=tmp_path))


def test_a_plugin_beside_the_config_runs_only_with_allow_local_plugins(stage, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    path = write(tmp_path / "plugged.yaml", {**stage, "plugins": ["evil_plugin"]})
    monkeypatch.chdir(tmp_path)  # beside the config and in the current directory
    monkeypatch.syspath_prepend(str(tmp_path))  # even where the current directory is on sys.path
    code, err = cli(["--cfg", str(path), "--dry-run"], capsys)
    assert_one_line(code, err, "plugin module 'evil_plugin' listed under plugins: is not part of an installed "
                               "package, and vlreg imports no code from next to a config")
    assert "--allow-local-plugins" in err and not marker.exists()
    code, err = cli(["--cfg", str(path), "--dry-run", "--allow-local-plugins"], capsys)
    assert code == 0 and marker.exists(), err
    sys.modules.pop("evil_plugin", None)


# -- weights files that would run code ---------------------------------------------------

class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def pickled_pretrained(directory: Path, config, marker: Path) -> Path:
    """A transformers model directory whose pytorch_model.bin would run code when unpickled."""
    from transformers import AutoModel

    directory.mkdir()
    config.save_pretrained(directory)
    state = dict(AutoModel.from_config(config).state_dict())
    torch.save({**state, "payload": Payload(marker)}, directory / "pytorch_model.bin")
    return directory


def test_a_pickled_llm_path_or_init_from_is_refused_in_one_line(stage, tmp_path, capsys):
    from transformers import BertConfig, OPTConfig

    marker = tmp_path / "ran"
    opt = pickled_pretrained(tmp_path / "opt", OPTConfig(vocab_size=1000, hidden_size=64, word_embed_proj_dim=64,
                                                          ffn_dim=128, num_hidden_layers=1, num_attention_heads=4), marker)
    bert = pickled_pretrained(tmp_path / "bert", BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=1,
                                                             num_attention_heads=4, intermediate_size=128), marker)
    no_data = {k: v for k, v in stage.items() if k not in ("data", "tokenizers")}  # the model is built first
    llm = {**no_data, "model": {**stage["model"], "llm": {"name": "causal_lm", "path": str(opt), "tokenizer": "x"}}}
    code, err = cli(["--cfg", str(write(tmp_path / "llm.yaml", llm))], capsys)
    assert_one_line(code, err, f"CausalLM: '{opt}' holds a pickle that needs code to load (it calls exec)")
    bridge = {**no_data, "model": {**stage["model"], "bridge": {**stage["model"]["bridge"], "init_from": str(bert)}}}
    code, err = cli(["--cfg", str(write(tmp_path / "bridge.yaml", bridge))], capsys)
    assert_one_line(code, err, f"qformer: init_from: '{bert}' holds a pickle that needs code to load (it calls exec)")
    assert "weights_only" not in err and not marker.exists()


# -- real runs: a tiny LM stage -------------------------------------------------------------

@pytest.fixture()
def lm_stage(tokenizer_dirs, tmp_path) -> dict:
    """A two-step run of a tiny OPT on a text file: a real run that takes a second or two."""
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "corpus.txt").write_text("\n".join(corpus(64)))
    return {"name": "lm", "output_dir": str(tmp_path / "lm"), "task": {"name": "lm_pretrain"},
            "description": "${oc.env:VLREG_TEST_SECRET}",
            "model": {"llm": {"includes": ["llms/opt_tiny.yaml"], "tokenizer": tokenizer_dirs["opt"]}},
            "data": {"train": {"name": "text_lines", "root": str(tmp_path / "text")}},
            "run": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "num_workers": 0, "log_every": 1,
                    "precision": "fp32", "checkpoint_every": 1}}


def test_environment_values_stay_out_of_the_saved_config(lm_stage, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLREG_TEST_SECRET", "hunter2")
    code, err = cli(["--cfg", str(write(tmp_path / "lm.yaml", lm_stage))], capsys)
    assert code == 0, err
    saved = (tmp_path / "lm" / "config.yaml").read_text()
    assert "${oc.env:VLREG_TEST_SECRET}" in saved and "hunter2" not in saved
    assert not (tmp_path / "lm" / RunDir.LOCK).exists()  # released at the end


def test_a_damaged_checkpoint_and_a_full_disk_are_one_line(lm_stage, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLREG_TEST_SECRET", "x")
    config = write(tmp_path / "lm.yaml", lm_stage)

    def full(tensors, path, metadata=None):
        raise OSError(28, os.strerror(28), str(path))

    monkeypatch.setattr(ckpt, "write_weights", full)
    code, err = cli(["--cfg", str(config)], capsys)
    assert_one_line(code, err, "cannot write checkpoint")
    assert "no space left on device (it needs about" in err and "free space and run again" in err
    assert sorted(p.name for p in (tmp_path / "lm" / "checkpoints").iterdir()) == []  # nothing left behind
    monkeypatch.undo()
    monkeypatch.setenv("VLREG_TEST_SECRET", "x")
    assert cli(["--cfg", str(config)], capsys)[0] == 0
    run_dir = tmp_path / "lm"
    for name in ("stage.json", "results.json"):  # as if killed after its checkpoints
        (run_dir / name).unlink()
    for step in (1, 2):
        weights = run_dir / "checkpoints" / f"step_{step:08d}" / "trainable.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line(*cli(["--cfg", str(config)], capsys), "no intact checkpoint in")


@pytest.mark.slow
def test_a_second_run_into_the_same_output_directory_is_refused(lm_stage, tmp_path, capsys, monkeypatch):
    """The first run is real (a subprocess); the second, in-process, is refused; a dead run's lock is taken over."""
    monkeypatch.setenv("VLREG_TEST_SECRET", "x")
    config = write(tmp_path / "lm.yaml", {**lm_stage, "run": {**lm_stage["run"], "max_steps": 100000}})
    first = subprocess.Popen([sys.executable, "-m", "vlreg.run", "--cfg", str(config)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lock = tmp_path / "lm" / RunDir.LOCK
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text()):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        code, err = cli(["--cfg", str(config), "run.max_steps=2"], capsys)
        assert_one_line(code, err, f"{tmp_path / 'lm'} is in use by another run (pid {first.pid} on ")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock.is_file()  # a killed run leaves its lock behind; the next run takes it over
    code, err = cli(["--cfg", str(config), "run.max_steps=2", "--force"], capsys)
    assert code == 0, err


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / RunDir.LOCK).write_text(f'{{"pid": {dead.stdout.strip()}, "host": "{os.uname().nodename}"}}')
    with OutputLock(tmp_path):
        assert f'"pid": {os.getpid()}' in (tmp_path / RunDir.LOCK).read_text()
        with pytest.raises(Exception, match="is in use by another run"):
            OutputLock(tmp_path).acquire()
    assert not (tmp_path / RunDir.LOCK).exists()


# -- the command as a user types it ---------------------------------------------------------

def python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_the_commands_as_typed(stage_file):
    out = python("-m", "vlreg", "run", "--cfg", str(stage_file), "--dry-run")  # options right after `run`
    assert out.returncode == 0 and "stage tiny: task pretrain_stage2" in out.stdout, out.stderr
    out = python("-m", "vlreg.run", "--cfg", str(stage_file), "run=[1]")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "run is a mapping" in out.stderr, out.stderr
    out = python("-m", "vlreg", "run", "--cfg", str(stage_file), "model=abc", "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "expected a mapping" in out.stderr
    out = python("-m", "vlreg.bench", "--suite", "no_such_suite", "--model", "x")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr


def test_help_names_the_new_switches():
    out = python("-m", "vlreg.run", "--help")
    assert "--allow-local-plugins" in out.stdout and "--debug" in out.stdout


def test_faults_of_input_or_machine_are_one_line_and_bugs_keep_their_traceback(tmp_path):
    import pickle

    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    from vlreg.cli import user_message

    def raised(action):
        try:
            action()
        except Exception as exc:  # noqa: BLE001
            return exc
        raise AssertionError("nothing raised")

    def torch_save_on_a_full_disk():
        try:
            raise OSError(28, os.strerror(28))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 704 vs 598") from None

    weights = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(100)}, weights)
    weights.write_bytes(weights.read_bytes()[:20])
    cases = [
        (PermissionError(13, "Permission denied", "/out"), "Permission denied: /out: choose a path you can write to"),
        (OSError(28, "No space left on device", "/out/x"), "no space left on the device: /out/x: free space"),
        (raised(torch_save_on_a_full_disk), "no space left on the device: free space (or choose another output_dir)"),
        (raised(lambda: load_file(weights)), "a safetensors file is damaged or is not one"),
        (raised(lambda: OmegaConf.create({"a": "${b}"}).a), "config: "),
        (raised(lambda: torch.load(_pickled(tmp_path), weights_only=True)),
         "a weights file is a pickle that needs code to load"),
        (pickle.UnpicklingError("pickle data was truncated"), "a weights file cannot be unpickled"),
    ]
    for exc, message in cases:
        assert message in user_message(exc), (exc, user_message(exc))
        assert "weights_only" not in user_message(exc)
    for bug in (TypeError("x"), KeyError("y"), AttributeError("z"), RuntimeError("a bug of vlreg")):
        assert user_message(bug) is None


def _pickled(tmp_path: Path) -> Path:
    path = tmp_path / "payload.pth"
    torch.save({"x": Payload(tmp_path / "ran")}, path)
    return path
