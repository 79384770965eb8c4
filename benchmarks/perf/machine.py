"""The machine a figure was measured on: CPU model and its bf16 instructions, or the GPU, and the software.

Every printed row and every written result names it (:func:`describe`), because the same
benchmark gives other figures on other machines: bf16 matmuls run 9x faster than fp32 on a CPU
with AMX, 2x on one with AVX-512 BF16, and 55x *slower* on one with AVX2 only.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from typing import Any


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on: CPU (model, cores, bf16 flags and whether vlreg takes bf16 as native),
    the GPU when ``device`` is cuda (name, compute capability, memory, bf16), torch, transformers, threads, load."""
    import torch

    from vlreg.device import cpu_bf16

    info: dict[str, Any] = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", lscpu, flags=re.M))
    info["cpu"] = fields.get("Model name", platform.processor())
    for key in ("Core(s) per socket", "Thread(s) per core", "L2 cache", "L3 cache", "Hypervisor vendor"):
        if key in fields:
            info[key] = fields[key]
    flags = set(fields.get("Flags", "").split())
    info["bf16_isa"] = sorted(f for f in flags if "bf16" in f or f.startswith("amx"))
    native = cpu_bf16()
    info["cpu_bf16_native"], info["cpu_bf16_reason"] = native.native, native.reason
    if device == "cuda":
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability(index))
        info["gpu_memory_gib"] = round(properties.total_memory / 2 ** 30, 1)
        info["gpu_bf16"] = torch.cuda.is_bf16_supported()
        info["cuda"] = torch.version.cuda
    info["load_average"] = list(os.getloadavg())
    try:
        import vlreg  # noqa: F401  (before transformers: the torchvision guard)
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def describe(info: dict[str, Any]) -> str:
    """One line naming the machine of :func:`machine`: the GPU or the CPU with its bf16 flags, and the versions."""
    software = f"torch {info['torch']}, transformers {info.get('transformers', 'missing')}, python {info['python']}"
    flags = ", ".join(info["bf16_isa"]) or "no bf16 flags"
    cpu = f"{info['cpu']} ({flags}; native bf16: {'yes' if info['cpu_bf16_native'] else 'no'})"
    if "gpu" in info:
        gpu = (f"{info['gpu']} ({info['gpu_capability']}, {info['gpu_memory_gib']:g} GiB, "
               f"bf16: {'yes' if info['gpu_bf16'] else 'no'}), CUDA {info['cuda']}")
        return f"{gpu}; host {cpu}; {software}"
    return f"{cpu}, {info['cpus']} cores, {info['threads']} torch thread(s); {software}"
