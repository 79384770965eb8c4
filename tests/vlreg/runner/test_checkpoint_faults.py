"""Faults around checkpoints: a full disk, damaged files, kills between writing and rotating, resumed metrics."""

import errno
import json
import os

import pytest
import torch
from tests.vlreg.runner.toys import FAST, Classify, Numbers, ToyModel, read_metrics

from vlreg.cli import user_message
from vlreg.runner import CheckpointError, Trainer
from vlreg.io import checkpoints as ckpt
from vlreg.io.checkpoints import step_checkpoints


def fit(output_dir, max_steps=6, **run):
    """Train a fresh ToyModel in fp32 with the toy task; returns (model, results)."""
    torch.manual_seed(0)
    model = ToyModel()
    settings = {**FAST, "output_dir": str(output_dir), "max_steps": max_steps, "checkpoint_every": 2,
                "precision": "fp32", **run}
    return model, Trainer(settings).fit(model, Classify(), Numbers())


def steps(run_dir):
    return [s for s, _ in step_checkpoints(run_dir / "checkpoints")]


def test_torch_save_on_a_full_disk_cleans_up_and_says_how_much_space_is_needed(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError around the OSError; the previous checkpoint stays newest."""
    run_dir = tmp_path / "run"
    fit(run_dir, max_steps=2)
    left_over = run_dir / "checkpoints" / ".tmp-step_00000099"  # what a kill during a write leaves
    left_over.mkdir()
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError) as error:
        fit(run_dir, max_steps=4)
    message = str(error.value)
    assert "cannot write checkpoint" in message and "step_00000004: no space left on device (it needs about" in message
    assert "step_00000002 is intact: free space and run again to resume from it" in message
    assert user_message(error.value) == message and "\n" not in message
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["frozen.safetensors", "step_00000002"]
    monkeypatch.setattr(torch, "save", real_save)
    _, results = fit(run_dir, max_steps=4)  # space freed: the rerun resumes
    assert results["resumed_from"].endswith("step_00000002") and results["steps"] == 4


def test_a_damaged_newest_checkpoint_is_reported_and_resume_falls_back(tmp_path, capsys):
    run_dir = tmp_path / "run"
    fit(run_dir, max_steps=6)
    newest = run_dir / "checkpoints" / "step_00000006"
    weights = bytearray((newest / "trainable.safetensors").read_bytes())
    weights[-4:] = b"\x00\x00\x9a\x44"  # a weight set to 1234.5, as a tamperer would
    (newest / "trainable.safetensors").write_bytes(bytes(weights))
    capsys.readouterr()
    model, results = fit(run_dir, max_steps=6)
    out = capsys.readouterr().out
    assert "step_00000006 is damaged: trainable.safetensors does not match its recorded checksum" in out
    assert "moved to corrupt-step_00000006, resuming from the newest intact checkpoint step_00000004" in out
    assert results["resumed_from"].endswith("step_00000004") and (run_dir / "checkpoints" / "corrupt-step_00000006").is_dir()
    reference, _ = fit(tmp_path / "reference", max_steps=6)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))


def test_a_truncated_checkpoint_without_an_intact_one_is_one_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    fit(run_dir, max_steps=2)
    only = run_dir / "checkpoints" / "step_00000002" / "trainable.safetensors"
    only.write_bytes(only.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*checkpoints: checkpoint .*step_00000002 is "
                                              r"damaged: trainable.safetensors does not match its recorded checksum "
                                              r"\(changed or truncated\); restore the files, or move"):
        fit(run_dir, max_steps=4)
    with pytest.raises(CheckpointError, match="cannot read .*trainable.safetensors: .*the checkpoint is damaged"):
        ckpt.read_tensors(only.parent)  # a damaged file read without verification is no traceback either


def test_the_manifest_is_verified_too(tmp_path):
    run_dir = tmp_path / "run"
    fit(run_dir, max_steps=2)
    manifest = run_dir / "checkpoints" / "step_00000002" / "manifest.json"
    content = json.loads(manifest.read_text())
    content["sha256"]["trainable.safetensors"] = "0" * 64
    manifest.write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match="manifest.json differs from the one it was written with"):
        ckpt.verify_checkpoint(manifest.parent)


def test_keep_checkpoints_holds_after_a_kill_between_writing_and_rotating(tmp_path):
    run_dir = tmp_path / "run"
    fit(run_dir, max_steps=6, keep_checkpoints=3)
    assert steps(run_dir) == [2, 4, 6]  # as a run with keep 2 killed before its rotation leaves them
    fit(run_dir, max_steps=6, keep_checkpoints=2)
    assert steps(run_dir) == [4, 6]


def test_the_first_metrics_line_after_a_resume_averages_the_same_steps(tmp_path, monkeypatch):
    settings = dict(max_steps=8, log_every=4, checkpoint_every=3)
    fit(tmp_path / "reference", **settings)
    real_save = Trainer._save

    def save_then_die(self):
        real_save(self)
        if self.step == 6:
            raise KeyboardInterrupt  # killed right after the checkpoint of step 6, mid-window

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "run", **settings)
    monkeypatch.setattr(Trainer, "_save", real_save)
    _, results = fit(tmp_path / "run", **settings)
    assert results["resumed_from"].endswith("step_00000006")
    want = [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(tmp_path / "reference") if "loss" in r]
    got = [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert got == want and [s for s, _, _ in got] == [4, 8]


def test_tampered_frozen_weights_are_caught_in_every_checkpoint_that_links_them(tmp_path):
    run_dir = tmp_path / "run"
    fit(run_dir, max_steps=4)
    frozen = run_dir / "checkpoints" / "frozen.safetensors"  # hard-linked into step_2 and step_4
    data = bytearray(frozen.read_bytes())
    data[-1] ^= 0xFF
    frozen.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*: checkpoint .*step_00000004 is damaged: "
                                              r"frozen.safetensors does not match .* \(and 1 more\)"):
        fit(run_dir, max_steps=6)
    assert steps(run_dir) == [2, 4]  # nothing moved or removed when none verifies
