"""Benchmark 5: start-up. ``import vlreg`` and ``python -m vlreg list`` as fresh processes, wall time.

Each command runs ``repeats`` times in a new interpreter; the figure is the median. The bare
interpreter (``python -c pass``) is measured the same way and shown beside them, since it is
part of every figure.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from .results import Row, seconds

IMPORT_TARGET = 0.3
COMMANDS = {"python -c pass": ["-c", "pass"], "import vlreg": ["-c", "import vlreg"],
            "python -m vlreg list": ["-m", "vlreg", "list"]}


def wall_times(args: list[str], repeats: int, cwd: Path) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def run(repeats: int, cwd: Path) -> list[Row]:
    measured = {name: wall_times(args, repeats, cwd) for name, args in COMMANDS.items()}
    bare = statistics.median(measured.pop("python -c pass"))
    rows = []
    for name, times in measured.items():
        median = statistics.median(times)
        target = name == "import vlreg"
        rows.append(Row("start-up", name, seconds(median), check=f"bare interpreter {seconds(bare)}; "
                        f"{repeats} runs, {seconds(min(times))}..{seconds(max(times))}",
                        target=f"< {IMPORT_TARGET} s" if target else "",
                        met=median < IMPORT_TARGET if target else None, details={"wall_s": times, "bare_s": bare}))
    return rows
