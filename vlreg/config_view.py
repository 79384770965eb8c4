"""``vlreg config FILE [key=value ...] [--where] [--stage NAME]``: the config each stage gets.

Prints a project's own keys, then the config of each of its stages as the stage's run writes
it to ``config.yaml``: includes merged, YAML anchors and interpolations resolved, overrides
applied (``${oc.env:VAR}`` stays as written, as in ``config.yaml``). ``--where`` ends each
line with the file and line that set its key, or the override that did. A mistake (a file
that is missing, an include, an override or an interpolation that leads nowhere) is one
line and exit status 2. Nothing is built or validated beyond that: ``--dry-run`` does that.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from .cli import Parser, add_config_arguments, add_debug_flag, config_arguments, guarded
from .config import Key, Origins, to_plain, trace_config, without_env

COMMENT_COLUMN = 64
"""Where ``--where`` comments start (later on longer lines)."""


def _scalar(value: Any) -> str:
    """A value (or an empty mapping or list) as one line of YAML."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text


def _lines(node: Any, key: Key, indent: str = "") -> Iterator[tuple[str, Key]]:
    """``(text, key path)`` for each line of ``node`` as block YAML; the key path is what the line sets."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for name, value in items:
        label = f"{indent}{_scalar(name)}:" if isinstance(node, dict) else f"{indent}-"
        inner = (*key, name)
        if isinstance(value, (dict, list)) and value:
            yield label, inner
            yield from _lines(value, inner, indent + "  ")
        else:
            yield f"{label} {_scalar(value)}", inner


def _shorter(origin: str) -> str:
    """An origin with the current directory, or the packaged recipes' directory (as ``vlreg:``), left out."""
    from .recipes import root

    for base, shown in ((Path.cwd(), ""), (root(), "vlreg:")):
        prefix = f"{base}{os.sep}"
        if origin.startswith(prefix):
            return shown + origin[len(prefix):]
    return origin


def render(node: dict[str, Any], key: Key, origins: Optional[Origins]) -> str:
    """``node`` (found at ``key`` in the config) as block YAML; with ``origins``, each line says where it was set."""
    lines = list(_lines(node, key))
    if origins is None:
        return "\n".join(text for text, _ in lines)
    return "\n".join(f"{text:<{COMMENT_COLUMN}}  # {_shorter(origins.get(inner, '?'))}" for text, inner in lines)


def sections(cfg: dict[str, Any], chosen: Sequence[str]) -> list[tuple[str, Key, dict[str, Any]]]:
    """``(title, key, node)``: a project's own keys and each (chosen) stage; a stage config as itself."""
    stages = cfg.get("stages")
    if not isinstance(stages, list):
        return [(f"stage {cfg.get('name', '')}".rstrip(), (), cfg)]
    own = {k: v for k, v in cfg.items() if k != "stages"}
    found = [(f"stage {stage.get('name')}", ("stages", i), stage) for i, stage in enumerate(stages)
             if isinstance(stage, dict) and (not chosen or stage.get("name") in chosen)]
    return [(f"project {cfg.get('name', '')}".rstrip(), (), own), *found]


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = Parser(prog="vlreg config", description="Print the resolved config of each stage of a config.")
    add_config_arguments(parser)
    parser.add_argument("--where", action="store_true", help="end each line with the file and line that set it")
    add_debug_flag(parser)
    return config_arguments(parser, argv)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raw, origins = trace_config(args.cfg, args.overrides, stages=args.stage or (), track=args.where)
    cfg = to_plain(without_env(raw))
    blocks = [f"# {title}\n{render(node, key, origins if args.where else None)}"
              for title, key, node in sections(cfg, args.stage or ())]
    print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
