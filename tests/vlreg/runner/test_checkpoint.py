import errno
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tests.vlreg.runner.toys import FAST, Classify, Numbers, ToyModel, read_metrics

from vlreg.errors import ConfigError, UserError
from vlreg.runner import CheckpointError, Trainer
from vlreg.runner import checkpoint as ckpt
from vlreg.io.checkpoints import final_checkpoint, load_component_weights, load_weights, resolve_checkpoint, step_checkpoints
from vlreg.io.sources import weight_layout
from vlreg.runner.checkpoint import Checkpointer

SOURCE = {"source": "hub/frozen-encoder", "sha256": "ab" * 32}


def fit(output_dir, model=None, max_steps=6, eval_data=None, **run):
    """Train ``model`` (a fresh ToyModel by default) with the toy task; returns (model, results)."""
    torch.manual_seed(0)
    model = model or ToyModel()
    settings = {**FAST, "output_dir": str(output_dir), "max_steps": max_steps, "checkpoint_every": 2, **run}
    return model, Trainer(settings).fit(model, Classify(), Numbers(), eval_data)


def test_layout_files_and_a_state_that_loads_weights_only(tmp_path):
    model, results = fit(tmp_path, keep_checkpoints=2)
    directory = tmp_path / "checkpoints"
    assert [s for s, _ in step_checkpoints(directory)] == [4, 6]  # rotated: the last two
    last = directory / "step_00000006"
    manifest = json.loads((last / "manifest.json").read_text())
    assert manifest["frozen"] == ["encoder.scale", "encoder.proj.weight", "encoder.proj.bias"]
    assert set(manifest["trainable"]) == {n for n, p in model.named_parameters() if p.requires_grad} | {"calls"}
    assert manifest["sources"] == {} and (last / "COMPLETE").is_file()
    saved = load_file(last / "trainable.safetensors")
    assert all(torch.equal(saved[n], p.detach()) for n, p in model.named_parameters() if p.requires_grad)
    assert saved["calls"].item() == 6  # a trainable module's buffer
    # frozen weights without a source: written once, hard-linked into each checkpoint
    inode = os.stat(directory / "frozen.safetensors").st_ino
    assert os.stat(last / "frozen.safetensors").st_ino == os.stat(directory / "step_00000004" / "frozen.safetensors").st_ino == inode
    assert torch.equal(load_file(last / "frozen.safetensors")["encoder.proj.weight"], model.encoder.proj.weight)
    state = torch.load(last / "state.pt", weights_only=True)
    assert state["step"] == 6 and state["scheduler"] == {"steps": 6} and state["world_size"] == 1
    assert set(state["optimizer"]["state"]) == set(manifest["trainable"]) - {"calls"}  # keyed by parameter name
    assert len(state["rng"]) == 1 and state["data"] == [{"epoch": 1, "batches": 1, "bad_media": 0}]
    assert results["checkpoint"] == str(last)


def test_frozen_weights_with_a_source_are_referenced_and_verified(tmp_path):
    fit(tmp_path, model=ToyModel(source=SOURCE), max_steps=4)
    last = tmp_path / "checkpoints" / "step_00000004"
    manifest = json.loads((last / "manifest.json").read_text())
    assert manifest["sources"] == {"encoder": SOURCE} and manifest["frozen"] == []
    assert not (last / "frozen.safetensors").exists()
    assert "encoder.proj.weight" not in load_file(last / "trainable.safetensors")
    other = {"source": "hub/other-encoder", "sha256": "cd" * 32}
    with pytest.raises(CheckpointError, match=r"frozen weights of 'encoder' differ: the checkpoint was trained on "
                                              r"hub/frozen-encoder \(sha256 abababababab\), the model now loads "
                                              r"hub/other-encoder \(sha256 cdcdcdcdcdcd\)"):
        fit(tmp_path, model=ToyModel(source=other), max_steps=6)
    with pytest.raises(CheckpointError, match="came from hub/frozen-encoder .* the model now has no weight source"):
        fit(tmp_path, model=ToyModel(), max_steps=6)
    _, results = fit(tmp_path, model=ToyModel(source=dict(SOURCE)), max_steps=6)
    assert results["resumed_from"] == str(last)


def test_resume_names_missing_unexpected_and_misshapen_weights(tmp_path):
    fit(tmp_path, max_steps=2)
    with pytest.raises(CheckpointError, match=r"trainable weights of the model missing from the checkpoint: "
                                              r"layers\.2\.fc\.bias, layers\.2\.fc\.weight, layers\.2\.norm\.bias, layers\.2\.norm\.weight$"):
        fit(tmp_path, model=ToyModel(depth=3), max_steps=4)
    with pytest.raises(CheckpointError, match=r"trainable weights in the checkpoint that the model does not have: "
                                              r"layers\.1\.fc\.bias, layers\.1\.fc\.weight"):
        fit(tmp_path, model=ToyModel(depth=1), max_steps=4)
    with pytest.raises(CheckpointError, match=r"step_00000002: shapes differ from the model's: head\.weight \(3, 16\) vs model \(3, 32\)"):
        fit(tmp_path, model=ToyModel(width=32), max_steps=4)


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes(tmp_path, monkeypatch):
    real_write = ckpt.write_weights
    calls = []

    def fill_the_disk(tensors, path, metadata=None):
        calls.append(path.name)
        if len(calls) == 3:  # step 2 wrote frozen + trainable; step 4 fails half-way through its weights
            path.write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(tensors, path, metadata)

    monkeypatch.setattr(ckpt, "write_weights", fill_the_disk)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*step_00000004: no space left on device "
                                              r"\(it needs about [\d.]+ kB, [\d.]+ .B are free on .*\); the previous "
                                              r"checkpoint .*step_00000002 is intact: free space and run again to "
                                              r"resume from it") as error:
        fit(tmp_path / "run", max_steps=6)
    assert isinstance(error.value, UserError)
    directory = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in directory.iterdir()) == ["frozen.safetensors", "step_00000002"]
    monkeypatch.setattr(ckpt, "write_weights", real_write)
    resumed, results = fit(tmp_path / "run", max_steps=6)
    assert results["resumed_from"] == str(directory / "step_00000002")
    uninterrupted, _ = fit(tmp_path / "clean", max_steps=6)
    assert all(torch.equal(p, q) for p, q in zip(resumed.parameters(), uninterrupted.parameters()))


def test_only_complete_checkpoints_count(tmp_path):
    fit(tmp_path, max_steps=4)
    directory = tmp_path / "checkpoints"
    crashed = directory / "step_00000009"  # a copy cut short: no COMPLETE marker
    shutil.copytree(directory / "step_00000004", crashed)
    (crashed / "COMPLETE").unlink()
    (directory / ".tmp-step_00000010").mkdir()
    assert resolve_checkpoint(tmp_path) == directory / "step_00000004"
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        resolve_checkpoint(crashed)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")
    Checkpointer(directory)
    assert not (directory / ".tmp-step_00000010").exists()  # leftovers of a crash are removed


def test_resume_choices(tmp_path):
    fit(tmp_path / "a", max_steps=4)
    with pytest.raises(ConfigError, match="already holds checkpoints .*run.resume is false"):
        fit(tmp_path / "a", max_steps=6, resume=False)
    step2 = tmp_path / "a" / "checkpoints" / "step_00000002"
    with pytest.raises(ConfigError, match=r"holds checkpoints newer than .*step_00000002 \(step_00000004\)"):
        fit(tmp_path / "a", max_steps=6, resume=str(step2))
    _, results = fit(tmp_path / "b", max_steps=6, resume=str(step2))  # another run's checkpoint, by path
    assert results["resumed_from"] == str(step2)
    lines = read_metrics(tmp_path / "b")
    assert [r["step"] for r in lines] == [4, 6]  # the resumed run logs from step 3 on


def test_metrics_past_the_resumed_step_are_dropped(tmp_path):
    fit(tmp_path, max_steps=4, keep_checkpoints=5)
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000004")  # as if killed after logging step 4
    fit(tmp_path, max_steps=6)
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6]


def test_best_checkpoint_follows_the_metric(tmp_path):
    _, results = fit(tmp_path, max_steps=8, checkpoint_every=0, eval_every=2, best_metric="loss_proxy",
                     best_mode="min", eval_data=Numbers(11, noise=0.0), lr=0.05)
    evals = [(r["step"], r["eval/loss_proxy"]) for r in read_metrics(tmp_path) if "eval/loss_proxy" in r]
    best_step, best_value = min(evals, key=lambda e: (e[1], e[0]))
    assert results["best"] == {"metric": "loss_proxy", "value": best_value, "step": best_step}
    best = tmp_path / "checkpoints" / "best"
    assert json.loads((best / "manifest.json").read_text())["step"] == best_step
    assert (best / "COMPLETE").is_file()
    if (tmp_path / "checkpoints" / f"step_{best_step:08d}").exists():
        assert os.stat(best / "state.pt").st_ino == os.stat(tmp_path / "checkpoints" / f"step_{best_step:08d}" / "state.pt").st_ino
    with pytest.raises(ConfigError, match="run.best_metric 'CIDEr' is not among the evaluation's metrics: accuracy"):
        fit(tmp_path / "x", max_steps=2, eval_every=2, best_metric="CIDEr", eval_data=Numbers(3))


class Tied(torch.nn.Module):
    """A trainable tied embedding / output matrix next to a frozen part with a buffer-only child."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(5, 4)
        self.out = torch.nn.Linear(4, 5, bias=False)
        self.out.weight = self.embed.weight
        self.frozen = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Module()).requires_grad_(False)
        self.frozen[1].register_buffer("stat", torch.ones(2))


def test_weight_layout_rules():
    layout = weight_layout(Tied())
    assert layout.trainable == ["embed.weight", "out.weight"]
    assert layout.frozen == ["frozen.0.weight", "frozen.0.bias", "frozen.1.stat"]
    assert ckpt._full_state(Tied(), layout.trainable, frozen_too=False).keys() == {"embed.weight", "out.weight"}


class WithPrompter(ToyModel):
    """The toy model plus a frozen text-side module that inference does not need (as a P-Former)."""

    def __init__(self):
        super().__init__()
        self.prompter = torch.nn.Linear(3, 3).requires_grad_(False)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_weights_load_into_new_models_and_components(tmp_path):
    trained, _ = fit(tmp_path / "a", model=WithPrompter(), max_steps=4)
    assert final_checkpoint(tmp_path / "a") == tmp_path / "a" / "checkpoints" / "step_00000004"
    assert final_checkpoint(tmp_path / "nothing") is None
    torch.manual_seed(5)
    fresh = ToyModel()
    with pytest.raises(CheckpointError, match=r"holds weights that the model does not have: prompter\.bias, prompter\.weight"):
        load_weights(fresh, tmp_path / "a")
    assert load_weights(fresh, tmp_path / "a", exclude=("prompter",)) == []
    want = {k: v for k, v in state(trained).items() if not k.startswith("prompter")}
    assert all(torch.equal(state(fresh)[k], v) for k, v in want.items())

    torch.manual_seed(6)
    other = ToyModel()
    layers_before = state(other.layers)
    assert load_component_weights(other, "head", tmp_path / "a") == []
    assert torch.equal(other.head.weight, trained.head.weight)
    assert all(torch.equal(state(other.layers)[k], v) for k, v in layers_before.items())  # only the head
    with pytest.raises(CheckpointError, match="the model has no component 'bridge'"):
        load_component_weights(other, "bridge", tmp_path / "a")


def test_loading_weights_checks_frozen_sources(tmp_path):
    fit(tmp_path / "a", model=ToyModel(source=SOURCE), max_steps=2)
    with pytest.raises(CheckpointError, match=r"trained with frozen weights hub/frozen-encoder for 'encoder'"):
        load_weights(ToyModel(source={"source": "x", "sha256": "00" * 32}), tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"lacks weights the model needs: encoder\.proj\.bias, encoder\.proj\.weight"):
        load_weights(ToyModel(), tmp_path / "a")  # its encoder has no source: the weights are nowhere
    assert load_weights(ToyModel(), tmp_path / "a", strict=False) == ["encoder.proj.bias", "encoder.proj.weight",
                                                                      "encoder.scale"]
    assert load_weights(ToyModel(source=SOURCE), tmp_path / "a") == []
    with pytest.raises(CheckpointError, match="holds no weights of 'encoder'"):
        load_component_weights(ToyModel(source=SOURCE), "encoder", tmp_path / "a")
