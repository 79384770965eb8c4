"""THE resume test: a run killed with SIGKILL at a random moment and resumed with
``resume: auto`` ends with exactly the weights of an uninterrupted run (CPU, fp32,
dropout, shuffled map-style data with per-sample augmentation, accum_steps=2)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vlreg.io.checkpoints import step_checkpoints

SCRIPT = Path(__file__).with_name("toys.py")


def command(output_dir, weights, workers, sleep=0.0):
    settings = {"output_dir": str(output_dir), "max_steps": 14, "batch_size": 8, "accum_steps": 2,
                "num_workers": workers, "checkpoint_every": 2, "keep_checkpoints": 2, "lr": 0.01, "warmup_steps": 2,
                "log_every": 2, "eval_every": 5, "best_metric": "accuracy", "resume": "auto"}
    return [sys.executable, str(SCRIPT), "--settings", json.dumps(settings), "--eval-samples", "7",
            "--dropout", "0.2", "--sleep", str(sleep), "--weights", str(weights)]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path, workers):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    reference = subprocess.Popen(command(tmp_path / "reference", tmp_path / "reference.pt", workers), env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_dir = tmp_path / "run"
    victim = subprocess.Popen(command(run_dir, tmp_path / "run.pt", workers, sleep=0.03), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not step_checkpoints(run_dir / "checkpoints"):
        assert victim.poll() is None, victim.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    delay = random.uniform(0.0, 0.3)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    log = victim.communicate()[0].decode()
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists(), "the run finished before it was killed"
    killed_at = step_checkpoints(run_dir / "checkpoints")[-1][0]

    resumed = subprocess.run(command(run_dir, tmp_path / "run.pt", workers), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert reference.wait(timeout=120) == 0, reference.stdout.read().decode()
    want, got = torch.load(tmp_path / "reference.pt"), torch.load(tmp_path / "run.pt")
    where = f"killed {delay:.2f}s after the first checkpoint, resumed from step {killed_at}; log:\n{log}"
    assert got["results"]["resumed_from"] == str(run_dir / "checkpoints" / f"step_{killed_at:08d}"), where
    assert got["results"]["steps"] == 14
    for name, value in want["weights"].items():
        assert torch.equal(got["weights"][name], value), f"{name} differs; {where}"
    assert got["results"]["best"] == want["results"]["best"] and got["results"]["final"] == want["results"]["final"]
