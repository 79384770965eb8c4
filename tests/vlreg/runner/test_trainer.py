import io
import json
import shutil

import pytest
import torch
import torch.distributed as dist
from tests.vlreg.runner.toys import Classify, Numbers, NumberStream, ToyModel, read_metrics, train_toy

from vlreg.build import call
from vlreg.errors import ConfigError, UserError
from vlreg.runner import NonFiniteLossError, RunConfig, Trainer
from vlreg.io.checkpoints import step_checkpoints
from vlreg.runner.logging import Progress

CONSTANT_LR = dict(lr=0.01, min_lr=0.01, warmup_steps=0)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_run_config_checks_its_values():
    with pytest.raises(ConfigError, match="exactly one of max_steps and max_epochs"):
        RunConfig(output_dir="o")
    with pytest.raises(ConfigError, match="exactly one"):
        RunConfig(output_dir="o", max_steps=3, max_epochs=1)
    with pytest.raises(ConfigError, match="not divisible by run.accum_steps"):
        RunConfig(output_dir="o", max_steps=3, batch_size=10, accum_steps=4)
    config = RunConfig(output_dir="o", max_steps=3, batch_size=12, accum_steps=2, resume=True)
    assert config.micro_batch_size(3) == 2 and config.resume == "auto"
    with pytest.raises(ConfigError, match=r"divisible by world_size \* accum_steps = 4 \* 2 = 8"):
        config.micro_batch_size(4)
    # as vlreg.build validates a run: section (YAML gives betas as a list)
    built = call(RunConfig, {"output_dir": "o", "max_steps": 2, "betas": [0.9, 0.98]}, "run", "run")
    assert built.betas == (0.9, 0.98)
    with pytest.raises(ConfigError, match="unknown key 'warmup_step'.*did you mean 'warmup_steps'"):
        Trainer({"output_dir": "o", "max_steps": 2, "warmup_step": 5})
    with pytest.raises(ConfigError, match="run.precision: expected one of"):
        Trainer({"output_dir": "o", "max_steps": 2, "precision": "fp8"})


def test_training_lowers_the_loss_and_writes_its_outputs(tmp_path, capsys):
    model, results = train_toy(tmp_path, max_steps=30, eval_data=Numbers(9, noise=0.0), eval_every=10,
                               warmup_steps=3, lr=0.02)
    assert not dist.is_initialized()  # one process needs no process group
    lines = read_metrics(tmp_path)
    train = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train] == list(range(2, 31, 2))
    assert train[-1]["loss"] < 0.75 * train[0]["loss"]
    for key in ("epoch", "accuracy", "lr", "grad_norm", "samples_per_s", "data_wait", "skipped_steps"):
        assert key in train[0]
    assert 0 <= train[0]["data_wait"] <= 1 and train[0]["lr"] == pytest.approx(0.02 / 3)
    evals = [r for r in lines if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [10, 20, 30] and evals[-1]["eval/count"] == 9
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["steps"] == 30 and results["samples"] == 240 and results["epochs"] == 6.0
    assert results["final"]["count"] == 9 and results["counters"] == {"train_calls": 30}
    assert (tmp_path / "predictions_step30.json").is_file()
    out = capsys.readouterr().out  # not a terminal: plain lines
    assert "step 2/30 epoch 0.4000 loss" in out and "eval step 30 accuracy" in out


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    one, _ = train_toy(tmp_path / "a", dropout=0.0, batch_size=8, accum_steps=1)
    two, _ = train_toy(tmp_path / "b", dropout=0.0, batch_size=8, accum_steps=2)
    four, _ = train_toy(tmp_path / "c", dropout=0.0, batch_size=8, accum_steps=4)
    torch.manual_seed(0)
    initial = weights(type(one)(dropout=0.0))
    for name, value in weights(one).items():
        assert not torch.allclose(value, initial[name])
        torch.testing.assert_close(weights(two)[name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights(four)[name], value, rtol=1e-5, atol=1e-6)


def test_epochs_set_the_length_and_the_evaluations(tmp_path):
    _, results = train_toy(tmp_path, max_epochs=3, eval_every=1, eval_data=Numbers(5, noise=0.0))
    assert results["steps"] == 15 and results["epochs"] == 3.0  # 40 samples, 8 per step
    assert [r["step"] for r in read_metrics(tmp_path) if "eval/accuracy" in r] == [5, 10, 15]
    with pytest.raises(ConfigError, match="max_epochs needs a map-style"):
        train_toy(tmp_path / "s", max_epochs=1, data=NumberStream())


def test_a_nonfinite_loss_skips_the_update(tmp_path):
    skipped, results = train_toy(tmp_path / "a", dropout=0.0, max_steps=3, task=Classify(nan_at=(3,)), **CONSTANT_LR)
    clean, _ = train_toy(tmp_path / "b", dropout=0.0, max_steps=2, **CONSTANT_LR)
    assert results["skipped_steps"] == 1
    assert all(torch.equal(weights(skipped)[n], w) for n, w in weights(clean).items())
    assert read_metrics(tmp_path / "a")[-1]["skipped_steps"] == 1


def test_nonfinite_losses_in_a_row_stop_the_run_at_the_last_good_checkpoint(tmp_path):
    task = Classify(nan_at=(3, 4, 5))
    with pytest.raises(NonFiniteLossError, match=r"3 optimizer steps in a row \(steps 3-5\).*step_00000002") as error:
        train_toy(tmp_path, max_steps=10, checkpoint_every=2, max_nonfinite_steps=3, task=task)
    assert isinstance(error.value, UserError)
    assert [step for step, _ in step_checkpoints(tmp_path / "checkpoints")] == [2]
    assert not (tmp_path / "results.json").exists()


def test_bf16_autocast_trains_on_cpu(tmp_path):
    model, results = train_toy(tmp_path, precision="bf16", max_steps=8)
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_fp16_needs_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        train_toy(tmp_path, precision="fp16")


class HeadOnly(Classify):
    def parameter_groups(self, model):
        return [{"params": list(model.head.parameters()), "weight_decay": 0.0}]


def test_a_task_can_choose_the_parameter_groups(tmp_path):
    model, _ = train_toy(tmp_path, task=HeadOnly())
    torch.manual_seed(0)
    initial = weights(type(model)())
    changed = {n for n, w in weights(model).items() if not torch.equal(w, initial[n])}
    assert changed == {"head.weight", "head.bias"}


class NoLoss(Classify):
    def train_step(self, model, batch):
        return {"logits": model(batch["x"])}


def test_train_step_must_return_a_loss(tmp_path):
    with pytest.raises(TypeError, match=r"NoLoss.train_step must return a dict with a 'loss' tensor, got \['logits'\]"):
        train_toy(tmp_path, task=NoLoss())


def test_iterable_dataset_run_resumes_exactly(tmp_path):
    full, _ = train_toy(tmp_path / "a", data=NumberStream(24), max_steps=8, checkpoint_every=3, keep_checkpoints=5)
    step3 = tmp_path / "b" / "checkpoints" / "step_00000003"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000003", step3)
    resumed, results = train_toy(tmp_path / "b", data=NumberStream(24), max_steps=8, checkpoint_every=3, seed=9)
    assert results["resumed_from"] == str(step3)
    assert all(torch.equal(weights(resumed)[n], w) for n, w in weights(full).items())


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_lines_elsewhere():
    terminal = FakeTerminal()
    bar = Progress(total=10, enabled=True, stream=terminal)
    bar.advance(4, loss=1.25, samples_per_s=100.0)
    bar.report({"step": 4, "loss": 1.25})  # no line on a terminal: the bar shows it
    bar.message("eval step 4 accuracy 0.5")
    bar.close()
    shown = terminal.getvalue()
    assert "4/10" in shown and "loss=1.2500" in shown and "eval step 4 accuracy 0.5" in shown
    assert "step 4/10 loss" not in shown
    plain = io.StringIO()
    lines = Progress(total=10, enabled=True, stream=plain)
    lines.advance(4, loss=1.25)
    lines.report({"step": 4, "loss": 1.25, "data_wait": 0.25})
    assert plain.getvalue() == "step 4/10 loss 1.2500 data_wait 25%\n"


class WithBadMedia(Numbers):
    """Samples whose index is in ``bad`` have an unreadable file, as vlreg.data datasets report them."""

    def __init__(self, bad, max_bad_fraction=0.5):
        super().__init__()
        self.bad, self.max_bad_fraction = set(bad), max_bad_fraction

    def __getitem__(self, index):
        from vlreg.data.media import BadSample

        return BadSample(f"img{index}.jpg", "truncated") if index in self.bad else super().__getitem__(index)

    def bad_media_report(self):
        from vlreg.data.media import BadMediaReport

        return BadMediaReport("toy train", self.max_bad_fraction, expected_total=len(self))


class CollateAndCount(Classify):
    sizes = []

    @staticmethod
    def collate(items):
        from vlreg.data.collate import collate

        return collate(items)

    def train_step(self, model, batch):
        assert "_bad" not in batch  # the runner counted and removed them
        self.sizes.append(len(batch["x"]))
        return super().train_step(model, batch)


def test_bad_media_are_skipped_counted_and_fatal_beyond_the_threshold(tmp_path):
    task = CollateAndCount()
    task.sizes = []
    _, results = train_toy(tmp_path / "a", task=task, data=WithBadMedia(bad={3, 7}), max_epochs=2)
    assert results["counters"]["bad_media"] == 4  # two bad files, two epochs
    assert sum(task.sizes) == 10 * 8 - 4
    from vlreg.errors import DataError

    with pytest.raises(DataError, match="toy train: .* bad media files .* exceed max_bad_fraction 0.1"):
        train_toy(tmp_path / "b", task=CollateAndCount(), data=WithBadMedia(bad=range(0, 40, 3), max_bad_fraction=0.1),
                  max_epochs=2)


def test_without_a_training_set_the_run_only_evaluates(tmp_path):
    torch.manual_seed(0)
    model = ToyModel()
    before = weights(model)
    results = Trainer({"output_dir": str(tmp_path), "max_steps": 0, "num_workers": 0}).fit(
        model, Classify(), None, Numbers(9, noise=0.0))
    assert results["steps"] == 0 and results["final"]["count"] == 9
    assert all(torch.equal(w, before[n]) for n, w in weights(model).items())
    assert not (tmp_path / "checkpoints").exists()
    assert [r["step"] for r in read_metrics(tmp_path)] == [0]


def test_gradients_are_clipped_to_the_global_norm_which_is_logged(tmp_path):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.nn.utils.get_total_norm(grads).item())

    handle = register_optimizer_step_pre_hook(record)
    try:
        train_toy(tmp_path, grad_clip=0.05, max_steps=4, log_every=1)
    finally:
        handle.remove()
    logged = [r["grad_norm"] for r in read_metrics(tmp_path)]
    assert min(logged) > 0.5  # the norm before clipping
    assert seen == pytest.approx([0.05] * 4, rel=1e-4)  # what the optimizer got


def test_deterministic_flag_reaches_torch(tmp_path):
    try:
        train_toy(tmp_path, deterministic=True, max_steps=1)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
