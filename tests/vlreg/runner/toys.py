"""Small real models, datasets and tasks for the runner tests (this file holds no tests).

Run as a script it trains one of them with the runner (the subprocess and
torchrun tests use that); the final trainable weights are the run's last
checkpoint, and ``--weights`` also writes them (all ranks gather under FSDP).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset, default_collate

import vlreg  # noqa: F401  (installs the torchvision guard before anything imports it)
from vlreg.tasks.base import Task


class Numbers(Dataset):
    """``n`` samples: a feature vector (fixed per index, plus augmentation noise drawn from
    torch's and numpy's global generators), a class and the sample's index."""

    def __init__(self, n: int = 40, dim: int = 8, classes: int = 3, noise: float = 0.1):
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=generator)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.5).long()
        self.y = self.y.clamp(max=classes - 1)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, Any]:
        jitter = self.noise * (torch.randn(self.x.shape[1]) + float(np.random.uniform(-1, 1)) + random.random())
        return {"x": self.x[index] + jitter, "y": self.y[index], "index": index, "name": f"n{index}"}


class NumberStream(IterableDataset):
    """The same samples as an IterableDataset: shuffled per epoch, sharded over ranks and workers."""

    def __init__(self, n: int = 40, seed: int = 0):
        self.data, self.seed, self.epoch = Numbers(n, noise=0.0), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        from vlreg import distributed

        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        shards, shard = distributed.world_size() * workers, distributed.rank() * workers + worker
        order = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        for i in order.tolist()[shard::shards]:
            sample = self.data[i]
            sample["x"] = sample["x"] + 0.1 * torch.randn(sample["x"].shape)
            yield sample


class Block(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.drop(torch.tanh(self.fc(self.norm(h))))


class FrozenEncoder(nn.Module):
    """A frozen projection with a running-mean buffer; ``source`` feeds ``weight_source()``."""

    def __init__(self, dim: int, width: int, source: dict[str, str] | None = None):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.register_buffer("scale", torch.full((width,), 0.5))
        self.source = source
        self.requires_grad_(False)

    def weight_source(self) -> dict[str, str] | None:
        return self.source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.scale


class ToyModel(nn.Module):
    """frozen encoder -> learned position offset -> residual blocks (with dropout) -> head: ``[B, dim] -> [B, classes]``."""

    def __init__(self, dim: int = 8, width: int = 16, classes: int = 3, depth: int = 2, dropout: float = 0.1,
                 source: dict[str, str] | None = None, frozen_layers: int = 0):
        super().__init__()
        self.encoder = FrozenEncoder(dim, width, source)
        self.pos_embed = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(Block(width, dropout) for _ in range(depth))
        self.layers[:frozen_layers].requires_grad_(False)
        self.head = nn.Linear(width, classes)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x) + self.pos_embed
        for layer in self.layers:
            h = layer(h)
        if self.training:
            self.calls += 1
        return self.head(h)


class Classify(Task):
    """Cross-entropy training and accuracy evaluation; ``nan_at`` makes chosen training calls return NaN,
    ``sleep`` slows every training call (so a test can kill a run mid-way). Batches are torch's
    ``default_collate`` (the sample indices a tensor)."""

    def __init__(self, nan_at: tuple[int, ...] = (), sleep: float = 0.0):
        self.nan_at, self.sleep, self.calls = set(nan_at), sleep, 0

    def collate(self, items: list[Any]) -> Any:
        return default_collate(items)

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        logits = model(batch["x"])
        loss = nn.functional.cross_entropy(logits, batch["y"])
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "accuracy": (logits.argmax(-1) == batch["y"]).float().mean()}

    def evaluate(self, model: nn.Module, dataset: Any, context: Any) -> dict[str, float]:
        predictions = []
        for batch in context.loader(dataset):
            batch = context.to_device(batch)
            with context.autocast():
                logits = model(batch["x"]).float()
            for index, pred, label in zip(batch["index"].tolist(), logits.argmax(-1).tolist(), batch["y"].tolist()):
                predictions.append({"index": index, "pred": pred, "label": label})
        predictions = context.gather(predictions)
        if context.is_main:
            path = Path(context.output_dir) / f"predictions_step{context.step}.json"
            path.write_text(json.dumps(predictions))
        correct = sum(p["pred"] == p["label"] for p in predictions)
        return {"accuracy": correct / len(predictions), "count": float(len(predictions)),
                "loss_proxy": 1.0 - correct / len(predictions)}

    def counters(self) -> dict[str, int]:
        return {"train_calls": self.calls}


FAST = dict(batch_size=8, num_workers=0, log_every=2, lr=0.01, checkpoint_every=0)


def train_toy(output_dir: Any, *, task: Any = None, data: Any = None, eval_data: Any = None, dropout: float = 0.1,
              seed: int = 0, **run: Any) -> tuple[ToyModel, dict[str, Any]]:
    """Train a fresh :class:`ToyModel` (initialised from ``seed``) in this process; ``run`` overrides :data:`FAST`."""
    from vlreg.runner import Trainer

    torch.manual_seed(seed)
    model = ToyModel(dropout=dropout)
    settings = {**FAST, "output_dir": str(output_dir), **run}
    if "max_steps" not in settings and "max_epochs" not in settings:
        settings["max_steps"] = 6
    results = Trainer(settings).fit(model, task or Classify(), data if data is not None else Numbers(), eval_data)
    return model, results


def read_metrics(output_dir: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def trainable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters as full CPU tensors (a collective under FSDP)."""
    from vlreg.runner.distributed_setup import full_tensor

    return {name: full_tensor(p.detach()).cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default="{}", help="RunConfig fields as JSON")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--frozen-layers", type=int, default=0)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--eval-samples", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--stream", action="store_true", help="train on the IterableDataset")
    parser.add_argument("--weights", default="", help="also save the final trainable weights here (rank 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume-from-step", type=int, default=0,
                        help="then train again in <output_dir>_resumed from a copy of this step's checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vlreg.runner import Trainer

    from vlreg import distributed

    settings = json.loads(args.settings)
    runs = [settings]
    if args.resume_from_step:
        resumed = f"{settings['output_dir']}_resumed"
        if distributed.is_main():
            shutil.rmtree(resumed, ignore_errors=True)
        runs.append({**settings, "output_dir": resumed, "resume": "auto"})
    saved = {}
    for i, run in enumerate(runs):
        if i == 1 and distributed.is_main():  # seed the second run with a copy of one checkpoint of the first
            step = f"step_{args.resume_from_step:08d}"
            shutil.copytree(Path(runs[0]["output_dir"]) / "checkpoints" / step,
                            Path(run["output_dir"]) / "checkpoints" / step, copy_function=shutil.copy2)
        distributed.barrier()
        torch.manual_seed(i + 1)  # the resumed run must not depend on the initial weights
        model = ToyModel(dropout=args.dropout, frozen_layers=args.frozen_layers)
        data = NumberStream(args.samples) if args.stream else Numbers(args.samples)
        eval_data = Numbers(args.eval_samples, noise=0.0) if args.eval_samples else None
        results = Trainer(run).fit(model, Classify(sleep=args.sleep), data, eval_data)
        saved["weights" if i == 0 else "resumed_weights"] = trainable_weights(model)
        saved["results" if i == 0 else "resumed_results"] = results
    if args.weights and distributed.is_main():
        torch.save(saved, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
