"""Two processes on CPU with gloo, launched by torchrun, against one process.

(a) DDP and (b) FSDP2 training give the weights of one process with the same
global batch (8 = 2 ranks x 2 accumulated micro-batches of 2, the first without
gradient sync, against 1 process x 4 micro-batches of 2). The model's first
block is frozen (under FSDP2 it is sharded, and gathered for the checkpoint's
frozen weights), and it has no dropout: each rank draws dropout masks from its own
random stream, which one process cannot reproduce, so with dropout the runs
would differ by design. The remaining difference is the order in which the
gradient mean is summed (all-reduce of two halves against accumulation), a
rounding-level effect; we allow 1e-6 relative.

Each launch also resumes, from a copy of its step-3 checkpoint, a second run
with a differently initialised model: it must end exactly where the first did
(full checkpoints under FSDP2 gathered on rank 0, loaded and re-sharded).

(c) Evaluation on 7 samples (odd, so the ranks get 4 and 3) gathers every
prediction exactly once in dataset order and gives the metrics of one process.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.common import ROOT

SCRIPT = ROOT / "tests" / "vlreg" / "runner" / "toys.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def settings(output_dir, mode, accum_steps):
    return json.dumps({"output_dir": str(output_dir), "max_steps": 6, "batch_size": 8, "accum_steps": accum_steps,
                       "num_workers": 0, "checkpoint_every": 3, "keep_checkpoints": 5, "eval_every": 3,
                       "best_metric": "accuracy", "log_every": 2, "lr": 0.01, "warmup_steps": 2, "grad_clip": 0.5,
                       "distributed": mode})


def script_args(output_dir, mode, accum_steps):
    return [str(SCRIPT), "--settings", settings(output_dir, mode, accum_steps), "--dropout", "0", "--eval-samples", "7",
            "--frozen-layers", "1", "--weights", f"{output_dir}.pt", "--resume-from-step", "3"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, global batch 8 as 4 accumulated micro-batches of 2."""
    out = tmp_path_factory.mktemp("single") / "run"
    done = subprocess.run([sys.executable, *script_args(out, "ddp", 4)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, torch.load(f"{out}.pt")


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, single, mode):
    out = tmp_path / mode
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              *script_args(out, mode, 2)]
    done = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    single_dir, one = single
    two = torch.load(f"{out}.pt")
    assert two["results"]["world_size"] == 2 and one["results"]["world_size"] == 1

    # (a) / (b): the same weights as one process
    for name, value in one["weights"].items():
        difference = (two["weights"][name] - value).abs().max() / value.abs().max()
        assert difference <= 1e-6, f"{name}: relative difference {difference:.2e}"

    # the run resumed from its step-3 checkpoint ends exactly where the uninterrupted one did
    assert two["resumed_results"]["resumed_from"].endswith("step_00000003")
    for name, value in two["weights"].items():
        assert torch.equal(two["resumed_weights"][name], value), name

    # (c) every prediction once, in dataset order, and the metrics of one process
    for step in (3, 6):
        predictions = json.loads((out / f"predictions_step{step}.json").read_text())
        assert [p["index"] for p in predictions] == list(range(7))
        assert predictions == json.loads((single_dir / f"predictions_step{step}.json").read_text())
    assert two["results"]["final"] == one["results"]["final"] and two["results"]["final"]["count"] == 7
    assert two["results"]["best"] == one["results"]["best"]
    assert two["results"]["counters"] == {"train_calls": 24}  # 6 steps x 2 micro-batches on each of 2 ranks
