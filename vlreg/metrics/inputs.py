"""Evaluation inputs: official JSON files given as objects or paths, and id-set checks."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Collection, Hashable

from ..errors import DataError


def load_json(source: Any, what: str) -> Any:
    """``source`` itself, or the JSON document at ``source`` when it is a path.

    ``what`` names the input in error messages ("VQA annotations", ...).
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    try:
        with open(source, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} file {os.fspath(source)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} file {os.fspath(source)!r} is not valid JSON: {exc}") from None


def _listed(ids: Collection[Hashable], limit: int = 10) -> str:
    try:
        ordered = sorted(ids)
    except TypeError:  # ids of mixed types
        ordered = sorted(ids, key=repr)
    shown = ordered[:limit]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(repr(i) for i in shown) + more


def check_same_ids(expected: Collection[Hashable], given: Collection[Hashable], what: str, where: str) -> None:
    """Raise DataError naming the ids of ``expected`` missing from ``given`` and the extra ones.

    ``what`` names the ids ("image ids"), ``where`` the input that should hold them ("results").
    """
    missing = set(expected) - set(given)
    extra = set(given) - set(expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} {what} missing from {where}: {_listed(missing)}")
    if extra:
        problems.append(f"{len(extra)} {what} in {where} but not in the ground truth: {_listed(extra)}")
    if problems:
        raise DataError("; ".join(problems))


def check_unique(ids: list[Hashable], what: str, where: str) -> None:
    """Raise DataError naming the ids that occur more than once in ``ids``."""
    repeated = {i for i, count in Counter(ids).items() if count > 1}
    if repeated:
        raise DataError(f"{where} holds {len(repeated)} {what} more than once: {_listed(repeated)}")


def records(document: Any, key: str | None, fields: tuple[str, ...], what: str) -> list[dict]:
    """The list of records ``document[key]`` (or ``document`` when ``key`` is None), each with ``fields``."""
    items = document
    if key is not None:
        if not isinstance(document, dict) or key not in document:
            raise DataError(f"{what}: expected a JSON object with a {key!r} list")
        items = document[key]
    if not isinstance(items, list):
        raise DataError(f"{what}: expected a list of records, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{what}: record {i} is {type(item).__name__}, not an object")
        absent = [f for f in fields if f not in item]
        if absent:
            raise DataError(f"{what}: record {i} lacks {', '.join(repr(f) for f in absent)}")
    return items
