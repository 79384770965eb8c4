"""``python -m vlreg.bench --suite NAME --model SOURCE [--model SOURCE ...]``: run benchmark suites.

See :mod:`vlreg.bench` for suites, model sources and what is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..cli import add_debug_flag, guarded
from ..errors import ConfigError
from .suite import Options, find_suites


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vlreg.bench",
        description="Evaluate models on benchmark suites; write a markdown table, JSON and a PNG chart.",
        epilog="Example: python -m vlreg.bench --suite coco --model outputs/blip2_tiny --model hf_dir --quick "
               "--set data.root=/data",
    )
    parser.add_argument("--suite", action="append", required=True,
                        help="a registered suite (coco, vqav2, msrvtt, ...), all, or a suite YAML file (repeatable)")
    parser.add_argument("--model", action="append", required=True,
                        help="a vlreg run or project output directory, or a transformers BLIP-2 directory or hub "
                             "name (repeatable: models side by side)")
    parser.add_argument("--name", action="append", default=None, help="a label per --model, in the same order")
    parser.add_argument("--out", default=None, help="output directory (default: outputs/bench/<suite>)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: each suite's quick settings (fewer samples, 1 beam)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="suite overrides, e.g. data.root=/data world.size=small "
                             "evaluations.caption.task.num_beams=3")
    parser.add_argument("--batch-size", type=int, default=Options.batch_size,
                        help="evaluation samples per batch and process")
    parser.add_argument("--num-workers", type=int, default=Options.num_workers, help="data loader workers per process")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                        help="frozen weights' dtype and autocast (default: as each model was configured, fp32 math)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def model_names(models: list[str], names: list[str] | None) -> list[str]:
    """The ``--name`` labels, or each source's last path component, made unique."""
    if names is not None:
        if len(names) != len(models):
            raise ConfigError(f"give one --name per --model: {len(models)} models, {len(names)} names")
        if len(set(names)) != len(names):
            raise ConfigError(f"--name labels must differ, got {names}")
        return names
    labels: list[str] = []
    for model in models:
        base = Path(model.rstrip("/")).name or model
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    from .. import distributed
    from .report import markdown, write_reports
    from .runner import run_bench
    from .sources import open_source

    args = parse_args(argv)
    files = {}
    for spec in args.suite:
        for suite_file in find_suites(spec):
            files.setdefault(suite_file.name, suite_file)
    suites = [suite_file(args.set) for suite_file in files.values()]
    unused = [item for item in args.set if not any(item in suite.overrides for suite in suites)]
    if unused:
        raise ConfigError(f"--set {' '.join(unused)}: no such setting in suite(s) {', '.join(files)}")
    names = model_names(args.model, args.name)
    sources = [open_source(model, name, args.precision) for model, name in zip(args.model, names)]
    options = Options(args.batch_size, args.num_workers, args.precision or "fp32")
    out = Path(args.out or Path("outputs") / "bench" / "+".join(Path(s).stem for s in args.suite))
    record = run_bench(suites, sources, out, quick=args.quick, options=options)
    if distributed.is_main():
        paths = write_reports(record, out)
        print(markdown(record).split("![results]")[0].rstrip())
        print(f"\n[bench] written: {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
