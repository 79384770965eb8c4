"""The ``vlreg`` command (also ``python -m vlreg``): list components and recipes, show and run configs.

::

    vlreg list [KIND] [PATTERN]      registered components (-l: with descriptions)
    vlreg info KIND NAME             a component's arguments and documentation
    vlreg ls                         the recipes that come with vlreg, with their descriptions
    vlreg cp RECIPE [DEST]           copy a recipe to edit it
    vlreg config FILE [key=value]    the resolved config of each stage (--where: the file and line of each key)
    vlreg run FILE [key=value]       run a config (python -m vlreg.run)

Every command is :func:`guarded`: a mistake of the user (a wrong argument included), or a
fault of the machine the user can fix (a full disk, a directory without write permission,
a damaged file), ends with status 2 and one line on stderr that says what to do; anything
else is a bug and keeps its traceback. ``--debug`` shows the traceback of any error.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import sys
from typing import Callable, Optional, Sequence

from .errors import UsageError, UserError, os_error_in, unpickling_failure
from .registry import KINDS, list_components, registry

DEBUG_FLAG = "--debug"


class Parser(argparse.ArgumentParser):
    """An argument parser whose complaints are :class:`UsageError`: one line and exit status 2 under :func:`guarded`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` (read by :func:`guarded`)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of any error")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """A config (a file or a recipe name), as the first argument or with ``--cfg``, then overrides."""
    parser.add_argument("--cfg", help="the config: a YAML file or a recipe that comes with vlreg (pformer/video); "
                                      "may also be given as the first argument")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="overrides, applied last; in a project STAGE.key=value or all.key=value")
    parser.add_argument("--stage", action="append", default=None,
                        help="only this stage of a project (repeatable); a project's bare overrides set it")


def config_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (options and overrides in any order); ``cfg`` is the first argument when ``--cfg`` is not given."""
    args = parser.parse_intermixed_args(argv)
    if args.cfg is None:
        if not args.overrides or "=" in args.overrides[0]:
            parser.error("name the config: a YAML file or a recipe (vlreg ls lists them), first or with --cfg")
        args.cfg, args.overrides = args.overrides[0], args.overrides[1:]
    return args


def _os_message(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}: free space (or choose another output_dir) and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{reason}{where}: choose a path you can write to (output_dir) or fix its permissions"
    return f"{reason}{where}: check that path (the output_dir, or a file or directory the config names)"


def user_message(exc: BaseException) -> Optional[str]:
    """The one-line message of an exception caused by the user's input or machine; None for a bug."""
    if isinstance(exc, UserError):
        return str(exc)
    omegaconf = sys.modules.get("omegaconf.errors")
    if omegaconf is not None and isinstance(exc, omegaconf.OmegaConfBaseException):
        from .config import one_line

        return f"config: {one_line(exc)}"
    if type(exc).__name__ == "UnpicklingError":
        return unpickling_failure(exc)
    os_error = os_error_in(exc)
    if os_error is not None:
        return _os_message(os_error)
    if type(exc).__name__ == "SafetensorError":
        return f"a safetensors file is damaged or is not one ({exc}): replace the file"
    return None


def guarded(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a command's ``main``: user errors exit 2 with a one-line message (tracebacks with ``--debug``)."""

    def wrapper(argv: Sequence[str] | None = None) -> int:
        debug = DEBUG_FLAG in (sys.argv[1:] if argv is None else argv)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("vlreg: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            message = None if debug else user_message(exc)
            if message is None:
                raise
            print(f"vlreg: error: {' '.join(message.split())}", file=sys.stderr)
            return 2

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
    if args.kind == "objective":  # what it declares: the parts and batch keys it reads, the losses it computes
        print(f"\nneeds: {', '.join(target.needs)}; batch keys: {', '.join(target.batch_keys)}; "
              f"losses: {', '.join(target.loss_names)}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from .recipes import describe, projects

    found = projects()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        print(f"{name:<{width}}  {describe(path)}")
    return 0


def _cp(args: argparse.Namespace) -> int:
    from .recipes import copy_project

    print(copy_project(args.recipe, args.destination))
    return 0


COMMANDS = {"run": "vlreg.run", "config": "vlreg.config_view"}
"""Commands with a parser of their own: the rest of the command line is their module's ``main``'s."""


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    command = [a for a in argv if a != DEBUG_FLAG][:1]
    if command and command[0] in COMMANDS:  # options included
        at = argv.index(command[0])
        return importlib.import_module(COMMANDS[command[0]]).main(argv[:at] + argv[at + 1:])
    parser = Parser(prog="vlreg", description=__doc__.splitlines()[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered components: vlreg list [KIND] [PATTERN]")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(KINDS)} (default: all)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'vit_*'")
    p.add_argument("-l", "--long", action="store_true", help="show each component's one-line description")
    add_debug_flag(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("info", help="the constructor arguments and documentation of one component")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("name")
    add_debug_flag(p)
    p.set_defaults(func=_info)

    p = sub.add_parser("ls", help="the recipes that come with vlreg, with their one-line descriptions")
    add_debug_flag(p)
    p.set_defaults(func=_ls)

    p = sub.add_parser("cp", help="copy a recipe to edit it: vlreg cp pformer/video my.yaml")
    p.add_argument("recipe", help="a recipe, as vlreg ls names it")
    p.add_argument("destination", nargs="?", default=".", help="a file, or a directory (default: here)")
    add_debug_flag(p)
    p.set_defaults(func=_cp)

    sub.add_parser("config", help="the resolved config of each stage: vlreg config FILE [key=value ...] [--where]")
    sub.add_parser("run", help="run a config: vlreg run FILE [key=value ...] (same as python -m vlreg.run)")

    args = parser.parse_args(argv)
    return args.func(args)
