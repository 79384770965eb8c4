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
    """A config key, value or file is wrong (found when a config is checked or built)."""


class InputError(UserError, ValueError):
    """What a model was given at forward, generate or preprocess time does not fit it: a batch without
    a key an objective reads, media of the wrong modality or shape, prompts of the wrong width.

    Mistakes in calling the API (a missing or contradictory argument) are plain TypeError or ValueError.
    """


class UsageError(UserError):
    """A command was given arguments it does not take."""


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


def torch_load_reason(exc: BaseException) -> str:
    """Why ``torch.load`` failed, in one line, without torch's advice to retry with ``weights_only=False``."""
    text = str(exc)
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip()
    reason = re.split(r"\n\s*\n| Please use `torch|Check the documentation", reason)[0]
    return " ".join(reason.split())[:300]


def needs_code(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a pickle because loading it would call code."""
    return "Unsupported global" in str(exc)


def unpickling_failure(exc: BaseException, path: object = None) -> str:
    """One line for a weights pickle that cannot be read: refused because it would call code (what it
    calls, and what to do instead), or damaged; never torch's advice to load it unsafely."""
    where = f"{path} " if path is not None else "a weights file "
    if not needs_code(exc):
        return f"{where}cannot be unpickled ({torch_load_reason(exc)}): it is damaged or not a weights file"
    called = re.search(r"Unsupported global: (?:GLOBAL )?([\w.]+)", str(exc))
    what = f" (it calls {called.group(1)})" if called else ""
    holds = f"{path} holds" if path is not None else "a weights file is"
    return (f"{holds} a pickle that needs code to load{what}, and vlreg never runs code from a weights file: "
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
