"""What the device computes natively, and the precision ``auto`` becomes there.

``auto`` is the default of ``run.precision`` and of every frozen component's ``precision``.
It resolves by the device's capability, never by the machine a recipe was written on:

- **CUDA**: ``bf16`` where the GPU computes it (``torch.cuda.is_bf16_supported()``: compute
  capability 8.0 and newer), else ``fp16`` (training then scales the loss with a GradScaler);
- **CPU**: ``bf16`` where the CPU computes it natively *and* that pays for autocast's casts:
  where a short timed probe (256-square matmuls in both dtypes, a few milliseconds on one
  thread) finds bf16 at least :data:`AUTO_BF16_SPEEDUP` times as fast as fp32, which AMX CPUs
  are (about 9 times at large sizes); else ``fp32``. Never ``fp16`` on a CPU.

The probe runs only where the CPU's flags claim native bf16 (AMX or AVX-512 BF16 on x86, the
BF16 extension on Arm); it also catches kernels capped below the CPU's ISA
(``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``) and hypervisors that report features they do
not provide. Without native instructions a CPU emulates bf16, and a bf16 matmul there runs tens
of times *slower* than fp32 (about 55 times on a Zen 2/3 EPYC with AVX2 only). With AVX-512 BF16
but no AMX (AMD Zen 4) it runs about twice as fast at 256-square and above, and only about 1.2
times at 128-square, the width of the models a CPU trains; there the main job took 3 min 35 s
in bf16 and 3 min 25 s in fp32, with worse retrieval (benchmarks/README.md), so ``auto`` keeps
fp32. An explicit ``bf16`` is honoured everywhere, with a one-line warning where the CPU
emulates it.

``VLREG_CPU_BF16=0`` (or ``1``) overrides what the CPU is taken to compute natively, for example
to time a recipe as it runs on a CPU without bf16.

Inside :func:`frozen_precision`, a frozen component's ``auto`` follows the run's precision
instead (so that ``run.precision=fp32`` makes the whole run fp32); outside, it resolves by
the device like ``run.precision``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional

PRECISIONS = ("fp32", "bf16", "fp16")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
CPU_BF16_ENV = "VLREG_CPU_BF16"


AUTO_BF16_SPEEDUP = 3.0
"""How many times faster than fp32 a CPU's bf16 matmuls must be for ``auto`` to choose bf16."""


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU computes bf16 natively, whether ``auto`` takes it (``pays``), and why."""

    native: bool
    pays: bool
    reason: str


@dataclass(frozen=True)
class PrecisionChoice:
    """A precision as asked for (``requested``), as resolved for a device (``precision``), and why."""

    requested: str
    precision: str
    reason: str
    device: str

    def describe(self) -> str:
        """One line: ``bf16 (auto on cpu: AMD EPYC has AVX-512 BF16)``."""
        how = "auto" if self.requested == "auto" else "as set"
        return f"{self.precision} ({how} on {self.device}: {self.reason})"

    def as_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "precision": self.precision, "device": self.device,
                "reason": self.reason}


def cpu_name() -> str:
    """The CPU's model name, as ``lscpu`` shows it (``platform.processor()`` where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith(("flags", "features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _torch_capabilities() -> dict[str, Any]:
    import torch

    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    try:
        return dict(get()) if get is not None else {}
    except Exception:  # an old torch, or a CPU its probe does not know
        return {}


def bf16_speed_ratio(size: int = 256, repeats: int = 5) -> float:
    """How fast a bf16 matmul runs against an fp32 one on this CPU: fp32 time over bf16 time.

    Best of ``repeats`` ``size``-square products each, on one thread (two threads on a busy machine
    wait for each other longer than they compute). About 2 (AVX-512 BF16) to 9 (AMX) where the CPU
    computes bf16 natively, about 0.02 where it emulates it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = _best_matmul_seconds(torch.float32, size, repeats)
        bf16 = _best_matmul_seconds(torch.bfloat16, size, repeats, give_up_above=20 * fp32)
    finally:
        torch.set_num_threads(threads)
    return fp32 / bf16


def _best_matmul_seconds(dtype: Any, size: int, repeats: int, give_up_above: float = float("inf")) -> float:
    """The fastest of ``repeats`` timed ``size``-square matmuls in ``dtype`` (fewer once one exceeds ``give_up_above``)."""
    import time

    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
        if best > give_up_above:
            break
    return best


@functools.lru_cache(maxsize=None)
def _detected_cpu_bf16() -> CpuBf16:
    name = cpu_name()
    capabilities = _torch_capabilities()
    flags = cpu_flags()
    if capabilities.get("amx_bf16") or "amx_bf16" in flags:
        claimed = f"{name} has AMX (bf16)"
    elif capabilities.get("avx512_bf16") or "avx512_bf16" in flags:
        claimed = f"{name} has AVX-512 BF16"
    elif platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags:
        claimed = f"{name} has the Arm BF16 extension"
    else:
        best = "AVX-512" if capabilities.get("avx512_f") or "avx512f" in flags else \
            "AVX2" if capabilities.get("avx2") or "avx2" in flags else "no AVX2"
        return CpuBf16(False, False, f"{name} has {best} but no native bf16 (no AVX-512 BF16 or AMX)")
    speed = bf16_speed_ratio()
    if speed < 0.5:
        return CpuBf16(False, False, f"{claimed}, but torch's bf16 matmul measured {1 / speed:.0f}x slower than "
                                     "fp32 here (kernels capped below it?)")
    if speed < AUTO_BF16_SPEEDUP:
        return CpuBf16(True, False, f"{claimed}, measured {speed:.1f}x fp32's matmul speed: too little to pay "
                                    "for autocast's casts")
    return CpuBf16(True, True, f"{claimed}, measured {speed:.1f}x fp32's matmul speed")


def cpu_bf16() -> CpuBf16:
    """Whether this CPU computes bf16 natively and ``auto`` takes it; ``VLREG_CPU_BF16=0|1`` overrides both."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return CpuBf16(forced == "1", forced == "1", f"{CPU_BF16_ENV}={forced}")
    if forced:
        from .errors import ConfigError

        raise ConfigError(f"{CPU_BF16_ENV} must be 0 or 1, got {forced!r}")
    return _detected_cpu_bf16()


def default_device_type() -> str:
    """``cuda`` where a GPU is visible (where a run trains by default), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: Any = None) -> PrecisionChoice:
    """What ``requested`` (``auto``, ``fp32``, ``bf16``, ``fp16``) means on ``device`` (default: :func:`default_device_type`).

    ``auto`` resolves as the module docstring says; an explicit precision is kept. A bf16 request
    on a CPU without native bf16 is kept too, and warned about once (see :func:`warn_if_slow`).
    """
    device_type = getattr(device, "type", None) or (str(device).split(":")[0] if device else default_device_type())
    if requested not in ("auto", *PRECISIONS):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    if device_type == "cuda":
        import torch

        name = torch.cuda.get_device_name(getattr(device, "index", None) or 0)
        if requested != "auto":
            return PrecisionChoice(requested, requested, name, "cuda")
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(requested, "bf16", f"{name} computes bf16", "cuda")
        return PrecisionChoice(requested, "fp16", f"{name} has no bf16; fp16 with loss scaling", "cuda")
    if device_type != "cpu":
        return PrecisionChoice(requested, "fp32" if requested == "auto" else requested,
                               "no rule for this device: fp32", device_type)
    if requested == "fp16":
        from .errors import ConfigError

        raise ConfigError("fp16 needs a CUDA GPU (training scales the loss with a GradScaler); "
                          "use auto or bf16 on a CPU")
    capability = cpu_bf16()
    if requested == "auto":
        return PrecisionChoice(requested, "bf16" if capability.pays else "fp32", capability.reason, "cpu")
    warn_if_slow(requested, capability)
    return PrecisionChoice(requested, requested, capability.reason, "cpu")


_warned: set[str] = set()


def warn_if_slow(precision: str, capability: Optional[CpuBf16] = None) -> None:
    """One line on stderr, once per process, when ``precision`` is bf16 on a CPU that emulates it."""
    capability = capability or cpu_bf16()
    if precision != "bf16" or capability.native or "bf16" in _warned:
        return
    _warned.add("bf16")
    print(f"[vlreg] warning: precision bf16 on a CPU without native bf16 ({capability.reason}): bf16 matrix "
          "products run tens of times slower than fp32 here (about 55x on AVX2-only CPUs); "
          "use precision: auto or fp32", file=sys.stderr, flush=True)


def busy_cores(seconds: float = 0.25) -> float:
    """How many of this machine's cores other processes keep busy, from ``/proc`` over ``seconds``.

    The machine's busy time (``/proc/stat``: user to steal) less this process's own (every thread,
    ``/proc/self/stat``), so threads of this process still winding down do not count. 0 where
    ``/proc`` cannot be read.
    """
    import time

    def machine() -> Optional[tuple[int, int]]:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(x) for x in stat.readline().split()[1:9]]  # guest time is inside user time
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    def own() -> int:
        try:
            with open("/proc/self/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime, all threads
        except (OSError, ValueError, IndexError):
            return 0

    first, first_own = machine(), own()
    time.sleep(seconds)
    second, second_own = machine(), own()
    if first is None or second is None or second[0] == first[0]:
        return 0.0
    total = second[0] - first[0]
    others = total - (second[1] - first[1]) - (second_own - first_own)
    return max(0.0, others / total * (os.cpu_count() or 1))


def cpu_threads(requested: Any = "auto") -> tuple[int, str]:
    """The torch threads a CPU run uses, and why: ``requested`` (a number), or ``auto``.

    ``auto``: ``OMP_NUM_THREADS`` where it is set (torchrun sets it per process); else the cores
    this process may use that other work leaves idle, at least one. Two threads that share a
    core with another busy process wait for each other at every operation: on a 2-core machine
    with one other busy process, a world stage-2 step took 0.23 s on two threads and 0.10 s on
    one, while on an idle machine two threads took 0.06 s (benchmarks/README.md).
    """
    if requested != "auto":
        return int(requested), "as set"
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    threads = max(1, min(usable, round(usable - busy)))
    return threads, f"{usable} cores, {busy:.1f} busy with other work"


_run_precision: list[str] = []


@contextlib.contextmanager
def frozen_precision(precision: str) -> Iterator[None]:
    """Within, a frozen component's ``precision: auto`` means ``precision`` (a run's resolved precision)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    _run_precision.append(precision)
    try:
        yield
    finally:
        _run_precision.pop()


def frozen_weights_precision(requested: str) -> str:
    """The dtype name a frozen component keeps its weights in, for its ``precision`` setting."""
    if requested != "auto":
        if requested == "bf16":
            resolve_precision(requested)  # warns where the CPU emulates bf16
        return requested
    if _run_precision:
        return _run_precision[-1]
    return resolve_precision("auto").precision
