"""A benchmark's results: rows of a table, each with the figures behind it, written as text and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .timing import Samples, cpu_ratio, ratio


@dataclass
class Row:
    """One line of the table.

    ``ours`` and ``reference`` are what was measured (e.g. ``"1.23 s"``); ``speedup`` is
    reference time over our time (wall clock), ``cpu_speedup`` the same in CPU seconds;
    ``check`` says whether the two computed the same thing (``ok`` False: the timing does
    not count); ``target`` and ``met`` the goal, where there is one.
    """

    benchmark: str
    case: str
    ours: str
    reference: str = ""
    speedup: Optional[float] = None
    cpu_speedup: Optional[float] = None
    check: str = ""
    ok: bool = True
    target: str = ""
    met: Optional[bool] = None
    details: dict[str, Any] = field(default_factory=dict)


def seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def compared(benchmark: str, case: str, ours: Samples, reference: Samples, check: str, ok: bool,
             target: float | None = None, **details: Any) -> Row:
    """A row for two contenders timed by :func:`~benchmarks.perf.timing.alternate`; ``target``: the speedup to reach."""
    speedup = ratio(reference, ours)
    return Row(benchmark, case, seconds(ours.median), seconds(reference.median), round(speedup, 3),
               round(cpu_ratio(reference, ours), 3), check, ok,
               f">= {target:g}x" if target is not None else "",
               None if target is None else bool(ok and speedup >= target),
               {"ours": ours.summary(), "reference": reference.summary(), **details})


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = ("benchmark", "case", "vlreg", "reference", "speedup", "cpu speedup", "check", "target")
    lines = [header]
    for row in rows:
        target = "" if not row.target else f"{row.target} {'met' if row.met else 'MISSED'}"
        lines.append((row.benchmark, row.case, row.ours, row.reference,
                      "" if row.speedup is None else f"{row.speedup:.2f}x",
                      "" if row.cpu_speedup is None else f"{row.cpu_speedup:.2f}x",
                      row.check if row.ok else f"FAILED: {row.check}", target))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def write(rows: list[Row], machine: dict[str, Any], command: str, path: Path) -> None:
    """The table next to its JSON: ``path`` (.json) and the same name with .txt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command, "machine": machine, "rows": [asdict(r) for r in rows]},
                               indent=1))
    path.with_suffix(".txt").write_text(table(rows) + "\n")
