"""Small helpers every writer uses: JSON and text files written the same way each time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable


def write_json(path: Path, data: Any) -> None:
    """``json.dump`` with the real datasets' default separators, into a new or existing folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """One line per item, each ending in a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
