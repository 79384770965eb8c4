"""``python -m vlreg.run [--cfg] FILE [key=value ...]``: run a stage or a whole project.

A config either describes one stage (``model``, ``task``, ``data``, ``run``) or a
project: ``stages:``, a list of stages run in order, each initialised from earlier
ones (see :mod:`vlreg.pipeline`). FILE is a path or a recipe that comes with vlreg
(``pformer/video``; ``vlreg ls`` lists them). Overrides are described in
:func:`vlreg.config.apply_overrides`.

``--dry-run`` resolves and validates the config, builds every model on the meta
device (no weights, no memory) and prints, per component, its registered name,
output shape and total and trainable parameters; then it exits. A real run starts
with the same validation, so a mistake in any stage stops it before any work.

Plugin modules listed under ``plugins:`` must be installed packages; ``--allow-local-plugins``
also imports modules from the current directory and the config's (code that came with
the config). ``--debug`` shows the traceback of any error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .cli import Parser, add_config_arguments, add_debug_flag, config_arguments, guarded
from .config import find_config, load_config, to_plain, without_env
from .registry import import_plugin_modules


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="python -m vlreg.run",
        description="Run a vlreg config: one stage, or a project's stages in order.",
        epilog="Overrides use dotted keys, e.g.  run.max_steps=100 model.bridge.num_queries=16; in a project, "
               "STAGE.key=value sets one stage's (stage2.run.max_steps=50), all.key=value every stage's",
    )
    add_config_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, build on the meta device, print a summary per component, and exit")
    parser.add_argument("--force", action="store_true", help="re-run stages that already completed")
    parser.add_argument("--allow-local-plugins", action="store_true",
                        help="let plugins: import modules from the current directory and the config's "
                             "(code that came with the config); by default only installed packages")
    add_debug_flag(parser)
    return config_arguments(parser, argv)


def dry_run(stages: dict[str, dict[str, Any]]) -> int:
    """Validate and build each stage's model on the meta device, and print its summary."""
    from .device import frozen_precision, resolve_precision
    from .models.base import dry_build
    from .models.summary import format_rows, objectives_line, summarise
    from .pipeline import build_model, component_names

    for name, stage in stages.items():
        precision = resolve_precision((stage.get("run") or {}).get("precision", "auto"))
        with dry_build(), frozen_precision(precision.precision):
            model = build_model(stage)
            rows = summarise(model, component_names(stage))
        print(f"stage {name}: task {stage['task']['name'] if stage.get('task') else '-'}")
        print(f"precision {precision.describe()}")
        if objectives_line(model):
            print(objectives_line(model))
        print(format_rows(rows))
        print()
    return 0


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raw = load_config(args.cfg, args.overrides, stages=args.stage or ())
    cfg = to_plain(raw, complete=True)
    import_plugin_modules(cfg.get("plugins") or [], allow_local=args.allow_local_plugins,
                          config_dir=find_config(args.cfg).parent)
    from .pipeline import Project

    project = Project.from_config(cfg, source=args.cfg, saved=to_plain(without_env(raw)))
    stages = project.select(args.stage)
    if args.dry_run:
        for stage in (s for s in stages if s.prepares):
            task = stage.config["task"]
            print(f"stage {stage.name}: task {task if isinstance(task, str) else task['name']}\nprepares files: no model\n")
        return dry_run({s.name: s.config for s in stages if not s.prepares})
    return project.run(stages, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
