"""A benchmark's results: rows of a table, each with the figures behind it, written as text and JSON.

A :class:`Report` prints every row the moment its benchmark finishes and rewrites the files
after each one, so that a run stopped early (a time limit on a borrowed GPU) keeps what it
measured; the files and the printout name the machine (:mod:`.machine`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from .machine import describe
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


def note(benchmark: str, case: str, why: str) -> Row:
    """A row that says why a benchmark was not run (no figures)."""
    return Row(benchmark, case, "skipped", check=why)


HEADER = ("benchmark", "case", "vlreg", "reference", "speedup", "cpu speedup", "check", "target")


def cells(row: Row) -> tuple[str, ...]:
    """The row's cells, in :data:`HEADER`'s order."""
    target = "" if not row.target else f"{row.target} {'met' if row.met else 'MISSED'}"
    return (row.benchmark, row.case, row.ours, row.reference, "" if row.speedup is None else f"{row.speedup:.2f}x",
            "" if row.cpu_speedup is None else f"{row.cpu_speedup:.2f}x",
            row.check if row.ok else f"FAILED: {row.check}", target)


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    lines = [HEADER, *(cells(row) for row in rows)]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(HEADER))]
    text = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def write(rows: list[Row], machine: dict[str, Any], command: str, path: Path) -> None:
    """The table next to its JSON: ``path`` (.json) and the same name with .txt, the machine's line above the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command, "machine": machine, "rows": [asdict(r) for r in rows]},
                               indent=1))
    path.with_suffix(".txt").write_text(f"{describe(machine)}\n{command}\n\n{table(rows)}\n")


class Report:
    """Rows as they come: each printed as one line (on ``stream``, default stdout) and the files rewritten
    (:func:`write`)."""

    def __init__(self, machine: dict[str, Any], command: str, path: Path, stream: Optional[TextIO] = None):
        self.rows: list[Row] = []
        self.machine, self.command, self.path, self.stream = machine, command, path, stream
        self.say(describe(machine))

    def say(self, text: str) -> None:
        """A line of progress (not a row)."""
        print(f"[perf] {text}", file=self.stream or sys.stdout, flush=True)

    def add(self, *rows: Row) -> None:
        for row in rows:
            self.rows.append(row)
            self.say(" | ".join(cell for cell in cells(row) if cell))
        write(self.rows, self.machine, self.command, self.path)
