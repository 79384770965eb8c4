"""Errors that describe a mistake of the user, not a bug of vlreg.

The command line catches :class:`UserError` and prints its one-line message with
exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Iterable


class UserError(Exception):
    """A mistake in a config, a name, a path or an input file."""


class ConfigError(UserError):
    """A config key, value or file is wrong."""


class UnknownComponentError(UserError, KeyError):
    """A registered name was looked up that nobody registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(UserError):
    """The same name was registered twice for one kind."""


class DataError(UserError):
    """An annotation file is malformed, or too many media files are bad."""


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind an exception: itself, the one a RuntimeError wraps (``torch.save`` on a full
    disk), or the one a safetensors error names (``... (os error 28)``); None when there is none."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found and type(exc).__name__ == "SafetensorError":
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        if not isinstance(exc, RuntimeError):
            return None
        exc = exc.__cause__ or exc.__context__
    return None


def unpickling_failure(exc: BaseException, path: object = None) -> str:
    """One line for a weights pickle that cannot be read: refused by ``torch.load(weights_only=True)``
    (which global it needed, and what to do instead, never torch's advice to load it unsafely) or damaged."""
    where = f"{path} " if path is not None else "a weights file "
    if "Weights only load failed" not in str(exc):
        return f"{where}cannot be unpickled ({' '.join(str(exc).split())[:200]}): it is damaged or not a weights file"
    found = re.search(r"Unsupported (?:global|operand)[^.]*", str(exc))
    what = f" ({found.group(0).replace('GLOBAL ', '')})" if found else ""
    return (f"{where}is a pickle that needs code to load{what}, and vlreg never runs code from a weights file: "
            "use its safetensors version, or convert it in a Python session you trust (torch.load, then "
            "safetensors.torch.save_file)")


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``word``, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""
