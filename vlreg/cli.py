"""The ``vlreg`` command (also ``python -m vlreg``): list components, run configs.

User mistakes (:class:`vlreg.errors.UserError`) end with status 2 and one line on
stderr; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Callable, Sequence

from .errors import UserError
from .registry import KINDS, list_components, registry


def guarded(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a command's ``main`` so that user errors exit 2 with a one-line message."""

    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as exc:
            message = " ".join(str(exc).split())
            print(f"vlreg: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("vlreg: interrupted", file=sys.stderr)
            return 130

    return wrapper


def _list(args: argparse.Namespace) -> int:
    kind, pattern = args.kind, args.pattern
    if kind is not None and kind not in KINDS and pattern == "*" and any(c in kind for c in "*?["):
        kind, pattern = None, kind  # `vlreg list 'vit_*'` searches every kind
    for k, names in list_components(kind, pattern).items():
        if not names and kind is None and pattern != "*":
            continue  # a search across kinds shows the kinds that match
        print(f"{k}:")
        for name in names:
            summary = f"  {registry(k).summary(name)}" if args.long else ""
            print(f"  {name}{summary}")
        if not names:
            print("  (none)")
    return 0


def _info(args: argparse.Namespace) -> int:
    target = registry(args.kind).get(args.name)
    print(f"{args.kind} {args.name}: {target.__module__}.{target.__qualname__}{inspect.signature(target)}")
    print()
    print(inspect.getdoc(target) or "(no docstring)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .run import main as run_main

    return run_main(args.rest)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlreg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered components: vlreg list [KIND] [PATTERN]")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(KINDS)} (default: all)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'vit_*'")
    p.add_argument("-l", "--long", action="store_true", help="show each component's one-line description")
    p.set_defaults(func=_list)

    p = sub.add_parser("info", help="the constructor arguments and documentation of one component")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("name")
    p.set_defaults(func=_info)

    p = sub.add_parser("run", help="run a config (same as python -m vlreg.run)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run)

    args = parser.parse_args(argv)
    return args.func(args)
