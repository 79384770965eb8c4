"""Errors that describe a mistake of the user, not a bug of vlreg.

The command line catches :class:`UserError` and prints its one-line message with
exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
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


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``word``, or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""
