"""Run the performance benchmarks and print one table: ``python -m benchmarks.perf [--quick] [--device cuda]``.

Also ``python benchmarks/perf/run.py``. Every row is printed the moment its benchmark finishes,
and the table and its JSON (every sample, the machine, the command) are rewritten after each
(:class:`~benchmarks.perf.results.Report`) to ``--out`` (``benchmarks/perf/results.json`` and
``.txt``; a quick run writes ``results_quick.*``, a GPU run ``results_cuda*``). Generated data
(worlds, tokenizers, runs) goes to ``--work``.

``--device`` (cpu or cuda) is where the models run; ``--scale`` which of them (tiny, small,
paper; default tiny and small on a CPU, paper on a GPU, tiny for ``--quick``). The same functions
run on both devices: ``--device cpu --scale tiny`` exercises every path of ``--device cuda
--scale paper``. A GPU run does the model benchmarks only (generation, train, stage1), unless
``--only`` names others (which run on the CPU).

On a CPU, torch runs on ``--threads`` threads (default 1): on these shared two-core machines,
other processes take cores at random moments, and two OpenMP threads then wait for each other
at every operation; one thread gives steadier figures (and, under load, faster steps). Both
contenders of a comparison always run with the same threads in the same process.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import vlreg  # noqa: E402,F401  (before transformers and timm: the torchvision guard)

REPO = Path(__file__).resolve().parents[2]
MODEL_BENCHMARKS = ("generation", "train", "stage1")
BENCHMARKS = (*MODEL_BENCHMARKS, "cache", "data", "startup")
SCALES = ("tiny", "small", "paper")
DEFAULT_SCALES = {"cpu": ("tiny", "small"), "cuda": ("paper",)}


@dataclass(frozen=True)
class Repeats:
    """Timed rounds of the train steps and of generation, and the tokens each caption gets."""

    train: int
    generation: int
    new_tokens: int


REPEATS = {"tiny": Repeats(10, 10, 30), "small": Repeats(5, 4, 20), "paper": Repeats(10, 5, 30)}
QUICK_REPEATS = Repeats(3, 3, 10)


@dataclass(frozen=True)
class Targets:
    """What a scale must reach on a device: speedups over transformers, MFU fractions (None: no target)."""

    train: Optional[float] = None
    generation: Optional[float] = 1.0
    train_mfu: Optional[float] = None
    stage1_mfu: Optional[float] = None


def targets(device: str, scale: str) -> Targets:
    """Issue 12's targets: paper scale on an H100/H200; small scale (the stage-2 step) on a CPU."""
    if device == "cuda" and scale == "paper":
        return Targets(train=1.3, generation=1.2, train_mfu=0.55, stage1_mfu=0.40)
    return Targets(train=1.3 if scale == "small" else None)


@dataclass(frozen=True)
class Settings:
    """Sizes of the benchmarks that do not build the model pairs."""

    cache_pairs: int
    cache_epochs: int
    loader_batches: int
    main_job_steps: int
    startup_repeats: int


FULL = Settings(cache_pairs=64, cache_epochs=3, loader_batches=6, main_job_steps=40, startup_repeats=7)
QUICK = Settings(cache_pairs=32, cache_epochs=2, loader_batches=2, main_job_steps=8, startup_repeats=3)


def pair_rows(report, scale: str, repeats: Repeats, goal: Targets, texts, device: str, peaks,
              selected: list[str], all_precisions: bool) -> None:
    """Generation (1b), then training (1a), precision (2) and utilisation (6) on one pair of models, then freed."""
    from . import generation, pairs, train_step
    from .utilisation import mfu_row

    started = time.perf_counter()
    pair = pairs.build_pair(scale, texts, device)
    report.say(f"{scale} pair built on {device} in {time.perf_counter() - started:.1f} s ({pair.precision})")
    if "generation" in selected:  # first: training changes the weights (alike in both, up to rounding)
        for beams in (1, 5):
            report.add(generation.run(pair, beams, repeats.new_tokens, repeats.generation, goal.generation))
    if "train" in selected:
        rows, timed = train_step.run(pair, repeats.train, goal.train)
        report.add(*rows)
        row, fast = train_step.precision(pair, repeats.train, all_precisions)
        report.add(row)
        counter = train_step.counted(pair)
        for i, step in enumerate(timed + ([fast] if fast else [])):
            report.add(mfu_row(f"{scale} stage-2 step, {step.name}", step.flops, step.samples.median,
                               step.precision, peaks, goal.train_mfu if i == 0 else None,
                               counter if i == 0 else None))
    del pair
    pairs.release(device)


def stage1_rows(report, scale: str, repeats: Repeats, goal: Targets, texts, device: str, peaks) -> None:
    """The stage-1 step (7) and its utilisation on the scale's stage-1 model, then freed."""
    from . import pairs, stage1
    from .utilisation import mfu_row

    model = stage1.build(scale, texts, device)
    row, step, counter = stage1.run(model, repeats.train)
    report.add(row, mfu_row(f"{scale} stage-1 step, vlreg", step.flops, step.samples.median, step.precision, peaks,
                            goal.stage1_mfu, counter))
    del model
    pairs.release(device)


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny scale, few repetitions")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run (default cpu)")
    parser.add_argument("--scale", default=None,
                        help=f"comma-separated subset of {', '.join(SCALES)} (default: tiny,small on cpu, paper on "
                             "cuda, tiny with --quick)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)} (train includes precision and "
                             f"utilisation; default: all on cpu, {','.join(MODEL_BENCHMARKS)} on cuda)")
    parser.add_argument("--all-precisions", action="store_true",
                        help="also time precisions the device does not compute natively (bf16 on a CPU without "
                             "AVX-512 BF16 or AMX)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1 on cpu, see above)")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "perf", help="generated data and runs")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (the table goes next to it as .txt)")
    args = parser.parse_args(argv)
    args.only = [n.strip() for n in (args.only or ",".join(BENCHMARKS if args.device == "cpu" else MODEL_BENCHMARKS))
                 .split(",") if n.strip()]
    args.scale = [s.strip() for s in (args.scale or ",".join(("tiny",) if args.quick else DEFAULT_SCALES[args.device]))
                  .split(",") if s.strip()]
    for given, known, what in ((args.only, BENCHMARKS, "benchmarks"), (args.scale, SCALES, "scales")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no GPU here")
    suffix = ("_cuda" if args.device == "cuda" else "") + ("_quick" if args.quick else "")
    args.out = args.out or Path(__file__).with_name(f"results{suffix}.json")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from vlreg.data.world import make_world

    from . import cache, data, startup
    from .machine import machine
    from .results import Report, table
    from .texts import texts as make_texts
    from .utilisation import Peaks

    args = parse(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = "python -m benchmarks.perf " + " ".join(argv if argv is not None else sys.argv[1:])
    report = Report(machine(args.device), command.strip(), args.out)
    world = functools.cache(lambda: make_world(args.work / "world_small_224", "small", 0, image_size=224))
    peaks = Peaks(args.device)

    if any(name in args.only for name in MODEL_BENCHMARKS):
        texts = make_texts(args.work, world)
        for scale in args.scale:
            repeats, goal = QUICK_REPEATS if args.quick else REPEATS[scale], targets(args.device, scale)
            if "generation" in args.only or "train" in args.only:
                pair_rows(report, scale, repeats, goal, texts, args.device, peaks, args.only, args.all_precisions)
            if "stage1" in args.only:
                stage1_rows(report, scale, repeats, goal, texts, args.device, peaks)
    settings = QUICK if args.quick else FULL
    if "cache" in args.only:
        report.add(*cache.run(args.work, world(), make_texts(args.work, world), settings.cache_pairs,
                              settings.cache_epochs))
    if "data" in args.only:
        report.add(*data.media_rows(world(), settings.loader_batches))
        report.add(*data.main_job_rows(args.work, settings.main_job_steps))
    if "startup" in args.only:
        report.add(*startup.run(settings.startup_repeats, REPO))

    info = report.machine
    info["load_average_end"] = list(os.getloadavg())
    info["seconds"] = round(time.perf_counter() - started, 1)
    report.add()  # rewrite the files with the end's figures
    print()
    print(table(report.rows))
    print(f"\nload average {info['load_average'][0]:.1f} at start, {info['load_average_end'][0]:.1f} at the end; "
          f"{info['seconds']:.0f} s. Written to {args.out} and {args.out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        from benchmarks.perf.run import main as package_main  # relative imports need the package

        raise SystemExit(package_main())
    raise SystemExit(main())
