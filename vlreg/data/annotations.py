"""Reading annotation files strictly: a malformed file fails at load time, naming file and entry.

Every reader goes through these helpers, so that a missing file, invalid JSON, a
missing key or a value of the wrong type is a :class:`~vlreg.errors.DataError` such as::

    /data/coco/annotations/coco_karpathy_train.json entry 17: missing key 'caption'
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import DataError

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a mapping", float: "a number"}


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} not found")
    return path


def load_json(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """Parse a JSON file; a missing or unparsable file is a DataError naming it."""
    path = _existing(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def load_jsonl(path: str | os.PathLike, what: str = "annotation file") -> list[Any]:
    """Parse a file of one JSON value per line (blank lines are skipped)."""
    path = _existing(path, what)
    values = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    values.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {number}: not valid JSON ({exc})") from None
    return values


def load_lines(path: str | os.PathLike, what: str = "split file") -> list[str]:
    """The non-blank lines of a text file, stripped (a list of ids, one per line)."""
    path = _existing(path, what)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain values only (containers, numbers, strings, numpy scalars): no code runs."""

    ALLOWED = {("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"holds a {module}.{name} object; only plain values are read")


def load_pickle(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """A pickled annotation file of plain values; any other object is a DataError (it is not unpickled)."""
    path = _existing(path, what)
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable pickle of plain values ({exc})") from None


def load_csv(path: str | os.PathLike, columns: Sequence[str], what: str = "annotation file") -> list[dict[str, str]]:
    """Rows of a CSV file with a header; the header must contain ``columns``."""
    path = _existing(path, what)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r} (header: {', '.join(reader.fieldnames or [])})")
        rows = list(reader)
    for number, row in enumerate(rows):
        empty = [c for c in columns if not row.get(c)]
        if empty:
            raise DataError(f"{path} row {number}: empty value in column {empty[0]!r}")
    return rows


def entry_list(data: Any, path: str | os.PathLike, key: Optional[str] = None) -> list[Any]:
    """The list of entries of a file: ``data`` itself, or ``data[key]``."""
    if key is not None:
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object with key {key!r}, got {type(data).__name__}")
        if key not in data:
            raise DataError(f"{path}: missing key {key!r}")
        data = data[key]
    if not isinstance(data, list):
        where = f"{path} key {key!r}" if key else str(path)
        raise DataError(f"{where}: expected a list of entries, got {type(data).__name__}")
    return data


def field(entry: Any, key: str, kind: type | tuple[type, ...], path: str | os.PathLike, index: int,
          section: Optional[str] = None) -> Any:
    """``entry[key]``, checked to be of ``kind``; otherwise a DataError naming file, entry and key.

    ``section`` names the list the entry belongs to in files that hold several
    (``"videos"``, ``"sentences"``).
    """
    where = f"{path} {section + ' ' if section else ''}entry {index}"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{where}: missing key {key!r}")
    value = entry[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise DataError(f"{where}: {key!r} must be {expected}, got {type(value).__name__} {value!r:.60}")
    return value


def string_list(entry: Any, key: str, path: str | os.PathLike, index: int) -> list[str]:
    """``entry[key]`` as a list of strings (a single string becomes a one-item list)."""
    value = field(entry, key, (str, list), path, index)
    values = [value] if isinstance(value, str) else value
    if not values or not all(isinstance(v, str) for v in values):
        raise DataError(f"{path} entry {index}: {key!r} must be a non-empty list of strings")
    return values
