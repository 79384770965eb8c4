"""Benchmark 6: utilisation. The FLOP/s a timed step achieved, as a fraction of the matmul peak (MFU).

A step's FLOPs are counted analytically (:mod:`.flops`) for what each contender really runs
(vlreg's packed or padded LLM rows, transformers' head over every position), divided by the
step's median time. The peak is measured in the same run, on the same device and threads: the
best of several square matmuls (2048 on a CPU, 8192 on a GPU) in the precision the step's
frozen parts and autocast compute in (fp32 for the CPU's fp32 rows, bf16 at paper scale).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .flops import StepFlops
from .results import Row
from .timing import repeat

PEAK_SIZE = {"cpu": 2048, "cuda": 8192}


def matmul_peak(dtype: torch.dtype, device: str = "cpu", size: Optional[int] = None, repeats: int = 5) -> float:
    """The best FLOP/s of ``size`` x ``size`` matmuls in ``dtype`` on ``device`` (after warm-up)."""
    size = size or PEAK_SIZE[device.split(":")[0]]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    samples = repeat(lambda: a @ b, repeats, warmup=2, device=device)
    return 2 * size ** 3 / min(samples.wall)


class Peaks:
    """The matmul peak of each precision on a device, measured the first time it is asked for."""

    def __init__(self, device: str):
        self.device, self.measured = device, {}

    def __call__(self, precision: str) -> float:
        from vlreg.models.base import DTYPES

        if precision not in self.measured:
            self.measured[precision] = matmul_peak(DTYPES[precision], self.device)
        return self.measured[precision]


def rate(flops_per_second: float) -> str:
    """``87 GFLOP/s``, ``392 TFLOP/s``."""
    if flops_per_second >= 1e12:
        return f"{flops_per_second / 1e12:.3g} TFLOP/s"
    return f"{flops_per_second / 1e9:.3g} GFLOP/s"


def mfu_row(case: str, flops: StepFlops, seconds: float, precision: str, peaks: Peaks,
            target: Optional[float] = None, counter: Optional[tuple[float, float]] = None) -> Row:
    """A row of achieved FLOP/s and MFU for a step of ``flops`` taking ``seconds``, against the ``precision`` peak.

    ``target``: the MFU to reach (a fraction); ``counter``: (the analytic FLOPs without attention products,
    torch's ``FlopCounterMode`` count of one step), shown side by side.
    """
    peak = peaks(precision)
    achieved = flops.total / seconds
    mfu = achieved / peak
    parts = ", ".join(f"{name} {value / 1e9:.4g}" for name, value in flops.as_dict().items()
                      if value and name != "total")
    check = f"{mfu:.1%} MFU; {flops.total / 1e9:.4g} GFLOP/step ({parts})"
    details: dict[str, Any] = {"gflop": {k: v / 1e9 for k, v in flops.as_dict().items()}, "step_s": seconds,
                               "peak_gflops": {k: v / 1e9 for k, v in peaks.measured.items()}, "mfu": mfu,
                               "peak_precision": precision}
    if counter is not None:
        check += f"; without attention {counter[0] / 1e9:.4g}, torch's counter {counter[1] / 1e9:.4g}"
        details.update(analytic_without_attention_gflop=counter[0] / 1e9, counted_gflop=counter[1] / 1e9)
    return Row("utilisation", case, rate(achieved), f"{precision} matmul peak {rate(peak)}", check=check,
               target="" if target is None else f">= {target:.0%} MFU",
               met=None if target is None else mfu >= target, details=details)
