"""Where a run reports: ``metrics.jsonl``, TensorBoard (when installed) and the terminal.

``metrics.jsonl`` holds one JSON object per line, each with a ``step``. Training
lines carry ``epoch`` (fractional for map-style data), the mean of every entry the
task's ``train_step`` returned over the last ``log_every`` steps (``loss``, ...),
``lr``, ``grad_norm``, ``samples_per_s``, ``data_wait`` (the share of step time
spent waiting for data) and ``skipped_steps``; evaluation lines carry
``eval/<metric>``. On resume, lines past the resumed step (written by the
interrupted run after its last checkpoint) are dropped first, so the file reads
as one uninterrupted run.

On a terminal, rank 0 shows a tqdm bar with the loss and samples/s; otherwise
(CI, log files) it prints a plain line every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from ..io.run_dir import RunDir


def _truncate_after(path: Path, step: int) -> None:
    """Drop the lines of a metrics file whose step is past ``step``."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:
            continue  # a line cut short by the crash
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _tensorboard_writer(log_dir: Path, purge_step: Optional[int]) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and TensorBoard; does nothing where ``enabled`` is False."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True, resume_step: Optional[int] = None):
        self.enabled = enabled
        self.path = RunDir(output_dir).metrics
        self._file: Optional[TextIO] = None
        self._tensorboard = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _truncate_after(self.path, resume_step)
        else:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        purge = resume_step + 1 if resume_step is not None else None
        self._tensorboard = _tensorboard_writer(RunDir(output_dir).tensorboard, purge)

    def write(self, record: dict[str, Any]) -> None:
        """Log one record; it must hold ``step``. Non-finite numbers are written as null."""
        if not self.enabled:
            return
        clean = {k: (v if _finite(v) or not isinstance(v, float) else None) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and _finite(value):
                    self._tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def format_record(record: dict[str, Any]) -> str:
    """A record as one readable line: ``step 20/100 loss 2.3142 lr 1.00e-04 ...``."""
    parts = []
    for key, value in record.items():
        if key == "total":
            continue
        if key == "step" and "total" in record:
            parts.append(f"step {value}/{record['total']}")
        elif isinstance(value, float):
            if key == "data_wait":
                parts.append(f"{key} {value:.0%}")
            elif key == "lr" or (value != 0 and not 1e-3 <= abs(value) < 1e5):
                parts.append(f"{key} {value:.3e}")
            else:
                parts.append(f"{key} {value:.4f}")
        else:
            parts.append(f"{key} {value}")
    return " ".join(parts)


class Progress:
    """A tqdm bar on a terminal, plain lines otherwise; silent where ``enabled`` is False."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, stream: Optional[TextIO] = None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.total = total
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=self.stream, dynamic_ncols=True, unit="step")

    def advance(self, step: int, loss: Optional[float] = None, samples_per_s: Optional[float] = None) -> None:
        """One optimizer step done (the bar moves; plain output waits for :meth:`report`)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s or 0:.1f}", refresh=False)

    def report(self, record: dict[str, Any]) -> None:
        """A periodic training record: printed as a line when not on a terminal."""
        if self.enabled and self._bar is None:
            print(format_record({"total": self.total, **record}), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line that always shows (evaluation results, checkpoints), above the bar on a terminal."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
