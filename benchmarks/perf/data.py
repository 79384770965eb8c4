"""Benchmark 4: data. Decoding throughput, and how long the main job's steps wait for data.

- Video clips/s: MSRVTT-format clips of the small world rendered at 224 px, 8 frames per clip
  decoded by decord at 224 x 224 (``video_train``: one random frame per segment), batches of 8
  through a ``DataLoader`` with 0 and with 2 worker processes. Worker start-up is timed apart
  from the steady rate (the first batch is not counted).
- Images/s: the same world's COCO pictures through ``image_train`` at 224 px (JPEG decoding,
  random resized crop, normalisation), in the main process.
- Waiting in the main job: ``projects/pformer/video.yaml``'s media stages (stage 1 and stage 2)
  as the project configures them (model shapes, data, batch size, workers, feature cache), on
  a world of the project's size, for a few dozen steps. Their backbones (frame encoder, LLM,
  P-Former) are built from their configs with random weights instead of loaded from the
  earlier stages' exports, which changes no shape and no data path. The share is the runner's
  ``data_wait`` in ``metrics.jsonl``: seconds waiting for batches over seconds of steps.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Iterable

from .results import Row

WAIT_TARGET = 0.10
MAIN_JOB = Path(__file__).resolve().parents[2] / "projects" / "pformer" / "video.yaml"
MEDIA_STAGES = ("stage1", "stage2")


def loader_rate(dataset: Any, workers: int, batches: int, batch_size: int = 8) -> dict[str, float]:
    """Items per second over ``batches`` batches after the first, and the seconds to the first batch."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from vlreg.data.collate import collate

    # one pass of (batches + 1) batches drawn with replacement: no epoch ends, so no worker restarts
    sampler = RandomSampler(dataset, replacement=True, num_samples=(batches + 1) * batch_size,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    steady = time.perf_counter()
    items = sum(len(batch.get("video", batch.get("image"))) for batch in iterator)
    return {"items_per_s": items / (time.perf_counter() - steady), "first_batch_s": first}


def media_rows(world: Path, batches: int) -> list[Row]:
    """Video clips/s with 0 and 2 workers, images/s in the main process."""
    from vlreg.build import build

    clips = build("dataset", {"name": "msrvtt_caption", "root": str(world / "msrvtt"), "split": "train",
                              "processor": {"name": "video_train", "image_size": 224, "num_frames": 8}})
    pictures = build("dataset", {"name": "coco_caption", "root": str(world / "coco"), "split": "train",
                                 "processor": {"name": "image_train", "image_size": 224}})
    rows = []
    rates = {workers: loader_rate(clips, workers, batches) for workers in (0, 2)}
    for workers, rate in rates.items():
        rows.append(Row("data", f"video clips/s, 8 frames at 224 px (decord), {workers} workers",
                        f"{rate['items_per_s']:.1f} clips/s", check=f"first batch after {rate['first_batch_s']:.2f} s",
                        details=rate))
    rate = loader_rate(pictures, 0, batches * 4)
    rows.append(Row("data", "images/s, 224 px (JPEG, random crop), 0 workers", f"{rate['items_per_s']:.0f} images/s",
                    check=f"first batch after {rate['first_batch_s']:.2f} s", details=rate))
    return rows


def _without_weight_files(node: Any) -> Any:
    """A stage config with every weight file reference removed (``checkpoint``, an LLM's ``path``)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "checkpoint" or (key == "path" and "config" in node):
                continue
            out[key] = _without_weight_files(value)
        return out
    if isinstance(node, list):
        return [_without_weight_files(item) for item in node]
    return node


def main_job_stages(world_root: Path, output_dir: Path, steps: int, names: Iterable[str] = MEDIA_STAGES) -> dict:
    """The main job's media stages, ready to run on ``world_root`` for ``steps`` steps without evaluation."""
    from vlreg.config import load_config, to_plain

    cfg = load_config(MAIN_JOB)
    cfg.vars.world = str(world_root)
    cfg.output_dir = str(output_dir)
    plain = to_plain(cfg)
    stages = []
    for stage in plain["stages"]:
        if stage.get("name") not in names:
            continue
        stage = _without_weight_files(copy.deepcopy(stage))
        stage.pop("init", None)
        llm = (stage.get("model") or {}).get("llm")
        if llm and not llm.get("tokenizer"):  # it came with the removed checkpoint
            llm["tokenizer"] = str(world_root / "backbones" / "tokenizers" / "opt")
        stage["data"] = {"train": stage["data"]["train"]}
        stage["run"] = {**stage["run"], "max_steps": steps, "log_every": max(1, steps // 4), "checkpoint_every": 0,
                        "resume": False}
        stages.append(stage)
    return {"name": plain["name"], "output_dir": str(output_dir), "vars": plain["vars"], "stages": stages}


def world_tokenizers(world_root: Path) -> None:
    """The tokenizers the main job's configs expect under ``backbones/tokenizers``, trained on the world's text."""
    from vlreg.models.tokenizers import save_tokenizer, train_tokenizer

    lines = (world_root / "text" / "corpus.txt").read_text().splitlines()
    for style in ("opt", "bert"):
        directory = world_root / "backbones" / "tokenizers" / style
        if not (directory / "tokenizer_config.json").exists():
            save_tokenizer(train_tokenizer(lines, style, vocab_size=1000), directory)


def main_job_rows(work: Path, steps: int) -> list[Row]:
    """Run the main job's media stages briefly; the share of step time spent waiting for data."""
    from vlreg.config import load_config, to_plain
    from vlreg.data.world import make_world
    from vlreg.pipeline import Project

    if not MAIN_JOB.is_file():
        return [Row("data", "waiting for data in the main job", "n/a", check=f"{MAIN_JOB} does not exist", ok=False)]
    world = next(s["task"] for s in to_plain(load_config(MAIN_JOB))["stages"] if s["name"] == "world")
    root = make_world(work / f"world_{world['size']}", world["size"], world["seed"])
    world_tokenizers(root)
    config = main_job_stages(root, work / "main_job", steps)
    project = Project.from_config(config, str(MAIN_JOB))
    project.run(project.stages, force=True)
    rows = []
    for stage in project.stages:
        lines = [json.loads(line) for line in stage.run_dir.metrics.read_text().splitlines()]
        windows = [line for line in lines if "data_wait" in line]
        waited = sum(line["data_wait"] * line["step_time_s"] for line in windows)
        elapsed = sum(line["step_time_s"] for line in windows)
        share = waited / elapsed
        run = stage.config["run"]
        case = (f"main job {stage.name}: batch {run['batch_size']}, {run.get('num_workers', 2)} workers, "
                f"feature cache {'on' if stage.config.get('feature_cache') else 'off'}")
        rows.append(Row("data", case, f"{share:.1%} of step time waiting",
                        check=f"{len(windows)} windows of {steps // len(windows)} steps, "
                              f"{elapsed / len(windows):.3f} s/step",
                        target=f"< {WAIT_TARGET:.0%}", met=share < WAIT_TARGET,
                        details={"windows": windows}))
    return rows
