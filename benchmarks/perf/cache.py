"""Benchmark 3: stage-1 epochs with and without the frozen-feature cache.

Stage 1 (ITC, ITM, ITG) on the synthetic world's COCO training pairs, with the frozen ViT of
benchmark 1's small scale (12 blocks x 384 at 224 px) and the tiny Q-Former with its text
branch (``configs/bridges/qformer_tiny.yaml``): the frozen encoder dominates, as EVA ViT-g does
in BLIP-2. Pictures are prepared deterministically (``image_eval``), which the cache needs.

Both runs go through the runner (``Trainer.fit``, fp32, no worker processes, one metrics line per
epoch); an epoch's time is the sum of its step times (data included). The cached run first
encodes every picture once (:func:`vlreg.runner.feature_cache.attach_feature_cache`): that
time belongs to its first epoch. Later epochs read ``[N, D]`` token rows from the memory-mapped
shards instead of decoding, resizing and encoding pictures.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .results import Row, seconds
from .texts import Texts

SPEEDUP_TARGET = 3.0


def stage1_model(texts: Texts) -> Any:
    """The stage-1 model, seeded (each run builds its own, equal, copy), frozen encoder in fp32."""
    from vlreg.config import load_config, to_plain
    from vlreg.models.assembly import VisionLanguageModel

    bridge = {**to_plain(load_config("bridges/qformer_tiny.yaml")), "tokenizer": texts.bert_tokenizer}
    torch.manual_seed(0)
    return VisionLanguageModel.from_config({
        "encoder": {"name": "timm_vit", "model": "vit_small_patch16_224", "img_size": 224, "precision": "fp32"},
        "bridge": bridge,
        "losses": [{"name": "blip2_stage1"}],
    })


def pairs_dataset(world: Path, samples: int) -> Any:
    from vlreg.build import build

    return build("dataset", {"name": "coco_caption", "root": str(world / "coco"), "split": "train",
                             "max_samples": samples, "processor": {"name": "image_eval", "image_size": 224}})


def train_epochs(work: Path, world: Path, texts: Texts, samples: int, epochs: int, batch_size: int,
                 cached: bool) -> dict[str, Any]:
    """One run of ``epochs`` epochs; returns the fill time and each epoch's seconds."""
    from vlreg.runner import Trainer
    from vlreg.runner.feature_cache import attach_feature_cache
    from vlreg.tasks.retrieval import Stage1Pretraining

    out = work / ("stage1_cached" if cached else "stage1_plain")
    shutil.rmtree(out, ignore_errors=True)
    model, dataset = stage1_model(texts), pairs_dataset(world, samples)
    fill = 0.0
    if cached:
        start = time.perf_counter()
        assert attach_feature_cache(dataset, model.encoder, out / "feature_cache", batch_size=batch_size)
        fill = time.perf_counter() - start
    steps = len(dataset) // batch_size
    Trainer({"output_dir": str(out), "max_epochs": epochs, "batch_size": batch_size, "num_workers": 0,
             "log_every": steps, "checkpoint_every": 0, "lr": 1e-4, "seed": 0, "precision": "fp32"}
            ).fit(model, Stage1Pretraining(), dataset)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch_seconds = [line["step_time_s"] * steps for line in lines if "step_time_s" in line]
    losses = [line["loss"] for line in lines if "loss" in line]
    return {"fill_s": fill, "epochs_s": epoch_seconds, "losses": losses,
            "data_wait": [line["data_wait"] for line in lines if "data_wait" in line]}


def run(work: Path, world: Path, texts: Texts, samples: int, epochs: int, batch_size: int = 16) -> list[Row]:
    """Both runs, the plain one first; rows for the first epoch and for the later ones."""
    plain = train_epochs(work, world, texts, samples, epochs, batch_size, cached=False)
    cached = train_epochs(work, world, texts, samples, epochs, batch_size, cached=True)
    first_plain, first_cached = plain["epochs_s"][0], cached["fill_s"] + cached["epochs_s"][0]
    later_plain = statistics.median(plain["epochs_s"][1:])
    later_cached = statistics.median(cached["epochs_s"][1:])
    diff = max(abs(a - b) for a, b in zip(plain["losses"], cached["losses"]))
    check = f"epoch losses differ by {diff:.1e} at most"
    case = f"stage 1, {samples} pairs, batch {batch_size}"
    details = {"plain": plain, "cached": cached}
    return [
        Row("feature cache", f"{case}: first epoch (cache filled in it)", seconds(first_cached), seconds(first_plain),
            round(first_plain / first_cached, 3), check=check, details=details),
        Row("feature cache", f"{case}: later epochs (median of {epochs - 1})", seconds(later_cached),
            seconds(later_plain), round(later_plain / later_cached, 3), check=check,
            ok=diff <= 1e-4, target=f">= {SPEEDUP_TARGET:g}x", met=later_plain / later_cached >= SPEEDUP_TARGET),
    ]
