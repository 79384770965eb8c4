"""Run every performance benchmark and print one table: ``python -m benchmarks.perf [--quick]``.

Also ``python benchmarks/perf/run.py``. The table and its JSON (every sample, the machine, the
command) are written to ``--out`` (``benchmarks/perf/results.json`` and ``.txt``; a quick run
writes ``results_quick.*``). Generated data (worlds, tokenizers, runs) goes to ``--work``.

Torch runs on ``--threads`` threads (default 1): on these shared two-core machines, other
processes take cores at random moments, and two OpenMP threads then wait for each other at every
operation; one thread gives steadier figures (and, under load, faster steps). Both contenders of
a comparison always run with the same threads in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import vlreg  # noqa: E402,F401  (before transformers and timm: the torchvision guard)

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("generation", "train", "cache", "data", "startup")
TRAIN_STEP_TARGET = 1.3  # small scale, against transformers


@dataclass(frozen=True)
class Settings:
    scales: tuple[str, ...]
    train_repeats: dict[str, int]
    generation_repeats: dict[str, int]
    new_tokens: dict[str, int]
    cache_pairs: int
    cache_epochs: int
    loader_batches: int
    main_job_steps: int
    startup_repeats: int


FULL = Settings(scales=("tiny", "small"), train_repeats={"tiny": 10, "small": 5},
                generation_repeats={"tiny": 10, "small": 4}, new_tokens={"tiny": 30, "small": 20},
                cache_pairs=64, cache_epochs=3, loader_batches=6, main_job_steps=40, startup_repeats=7)
QUICK = Settings(scales=("tiny",), train_repeats={"tiny": 3}, generation_repeats={"tiny": 3}, new_tokens={"tiny": 10},
                 cache_pairs=32, cache_epochs=2, loader_batches=2, main_job_steps=8, startup_repeats=3)


def model_rows(scale: str, settings: Settings, work: Path, world: Path, generate: bool, train: bool) -> list:
    """Generation (1b), then training (1a), precision (2) and utilisation (6) on one pair of models."""
    from . import flops, generation, pairs, train_step

    pair = pairs.build_pair(scale, work, world)
    rows = []
    if generate:  # first: training changes the weights (alike in both, up to rounding)
        rows += [generation.run(pair, beams, settings.new_tokens[scale], settings.generation_repeats[scale])
                 for beams in (1, 5)]
    if train:
        repeats = settings.train_repeats[scale]
        step, versus = train_step.run(pair, repeats, TRAIN_STEP_TARGET if scale == "small" else None)
        precision, halves = train_step.precision(pair, repeats)
        batch = {"image": pair.images, "text_input": pair.texts}
        counted = flops.counted_flops(train_step.vlreg_step(pair.vlreg, batch))
        seconds = {"fp32": versus["vlreg"].median, "bf16": halves["bf16"].median}
        rows += [step, precision, *flops.utilisation(pair, seconds, counted)]
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    from vlreg.data.world import make_world

    from . import cache, data, startup
    from .results import table, write
    from .timing import machine

    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny scale, few repetitions")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)} (train includes precision and "
                             "utilisation)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see above)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "perf", help="generated data and runs")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (the table goes next to it as .txt)")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)}")
    settings = QUICK if args.quick else FULL
    out = args.out or Path(__file__).with_name("results_quick.json" if args.quick else "results.json")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    started, info = time.perf_counter(), machine()
    world = make_world(args.work / "world_small_224", "small", 0, image_size=224)

    rows = []
    if "generation" in selected or "train" in selected:
        for scale in settings.scales:
            rows += model_rows(scale, settings, args.work, world, "generation" in selected, "train" in selected)
    if "cache" in selected:
        rows += cache.run(args.work, world, settings.cache_pairs, settings.cache_epochs)
    if "data" in selected:
        rows += data.media_rows(world, settings.loader_batches)
        rows += data.main_job_rows(args.work, settings.main_job_steps)
    if "startup" in selected:
        rows += startup.run(settings.startup_repeats, REPO)

    info["load_average_end"] = list(os.getloadavg())
    info["seconds"] = round(time.perf_counter() - started, 1)
    command = "python -m benchmarks.perf " + " ".join(argv if argv is not None else sys.argv[1:])
    write(rows, info, command.strip(), out)
    print()
    print(table(rows))
    print(f"\n{info['cpu']}, {info['threads']} torch thread(s), torch {info['torch']}; load average "
          f"{info['load_average'][0]:.1f} at start; {info['seconds']:.0f} s. Written to {out} and "
          f"{out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        from benchmarks.perf.run import main as package_main  # relative imports need the package

        raise SystemExit(package_main())
    raise SystemExit(main())
