"""``precision: auto`` by the device's capability, and the packing decision per device (capabilities mocked)."""

from __future__ import annotations

import json
import os
import types

import pytest
import torch

from vlreg import device
from vlreg.build import build

AMX = {"amx_bf16": True, "avx512_bf16": True, "avx512_f": True, "avx2": True}
ZEN4 = {"amx_bf16": False, "avx512_bf16": True, "avx512_f": True, "avx2": True}
AVX2 = {"amx_bf16": False, "avx512_bf16": False, "avx512_f": False, "avx2": True}


SPEED = {"amx": 8.0, "zen4": 2.0, "avx2": 1 / 55}  # bf16 matmul speed / fp32's, as the probe measures it


@pytest.fixture
def cpu_with(monkeypatch):
    """``cpu_with(capabilities, speed)``: torch reports these CPU capabilities, /proc/cpuinfo no flags,
    and the probe measures bf16 ``speed`` times as fast as fp32."""

    def install(capabilities, speed=None):
        if speed is None:
            speed = SPEED["amx" if capabilities.get("amx_bf16") else "zen4" if capabilities.get("avx512_bf16")
                          else "avx2"]
        monkeypatch.delenv(device.CPU_BF16_ENV, raising=False)
        monkeypatch.setattr(device, "_torch_capabilities", lambda: dict(capabilities))
        monkeypatch.setattr(device, "cpu_flags", lambda: set())
        monkeypatch.setattr(device, "cpu_name", lambda: "Test CPU")
        monkeypatch.setattr(device, "bf16_speed_ratio", lambda: speed)
        device._detected_cpu_bf16.cache_clear()
        device._warned.clear()

    yield install
    device._detected_cpu_bf16.cache_clear()


@pytest.mark.parametrize("capabilities, expected, why", [
    (AMX, "bf16", "AMX"),  # native and about 8x fp32: worth autocast's casts
    (ZEN4, "fp32", "AVX-512 BF16, measured 2.0x fp32's matmul speed: too little"),  # native, but only 2x
    (AVX2, "fp32", "no native bf16")])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it_fast(cpu_with, capabilities, expected, why):
    cpu_with(capabilities)
    choice = device.resolve_precision("auto", torch.device("cpu"))
    assert (choice.precision, choice.device) == (expected, "cpu")
    assert why in choice.reason and "Test CPU" in choice.reason
    assert choice.describe().startswith(f"{expected} (auto on cpu: ")


def test_a_timed_probe_overrules_flags_that_torch_does_not_use(cpu_with, monkeypatch):
    cpu_with(AMX, speed=1 / 55)
    choice = device.resolve_precision("auto", "cpu")
    assert choice.precision == "fp32" and "55x slower than fp32" in choice.reason
    assert not device.cpu_bf16().native  # an explicit bf16 is warned about there


def test_the_probe_tells_emulated_bf16_from_native():
    import subprocess
    import sys

    probe = "from vlreg.device import bf16_speed_ratio; print(bf16_speed_ratio())"
    avx2 = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert float(avx2.stdout) < 0.25  # kernels as on an AVX2-only CPU: emulated bf16, tens of times slower
    capped_here = any(name in os.environ for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"))
    if device._torch_capabilities().get("avx512_bf16") and not capped_here:
        assert device.bf16_speed_ratio() > 1.2  # AVX-512 BF16 or AMX: faster than fp32 at 256-square


def test_cpu_flags_decide_where_torch_reports_no_capabilities(monkeypatch):
    monkeypatch.setattr(device, "bf16_speed_ratio", lambda: 8.0)
    monkeypatch.delenv(device.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(device, "_torch_capabilities", lambda: {})
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    device._detected_cpu_bf16.cache_clear()
    try:
        assert device.resolve_precision("auto", "cpu").precision == "bf16"
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
        device._detected_cpu_bf16.cache_clear()
        assert device.resolve_precision("auto", "cpu").precision == "fp32"
    finally:
        device._detected_cpu_bf16.cache_clear()


def test_the_environment_switch_overrides_the_detection(cpu_with, monkeypatch):
    cpu_with(AMX)
    monkeypatch.setenv(device.CPU_BF16_ENV, "0")
    choice = device.resolve_precision("auto", "cpu")
    assert choice.precision == "fp32" and "VLREG_CPU_BF16=0" in choice.reason
    cpu_with(AVX2)
    monkeypatch.setenv(device.CPU_BF16_ENV, "1")
    assert device.resolve_precision("auto", "cpu").precision == "bf16"
    monkeypatch.setenv(device.CPU_BF16_ENV, "yes")
    with pytest.raises(Exception, match="VLREG_CPU_BF16 must be 0 or 1"):
        device.resolve_precision("auto", "cpu")


def test_explicit_bf16_on_a_cpu_without_it_is_kept_with_one_warning(cpu_with, capsys):
    cpu_with(AVX2)
    assert device.resolve_precision("bf16", "cpu").precision == "bf16"
    assert device.resolve_precision("bf16", "cpu").precision == "bf16"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "slower than fp32" in lines[0] and "precision: auto" in lines[0]
    cpu_with(ZEN4)  # native, though auto keeps fp32: an explicit bf16 is fine
    device.resolve_precision("bf16", "cpu")
    device.resolve_precision("fp32", "cpu")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Test GPU")
    choice = device.resolve_precision("auto", torch.device("cuda", 0))
    assert (choice.precision, choice.device) == (expected, "cuda") and "Test GPU" in choice.reason
    assert device.resolve_precision("fp32", torch.device("cuda", 0)).precision == "fp32"


def test_a_frozen_components_auto_follows_the_run_and_a_trainable_one_stays_fp32(cpu_with, tiny_nodes):
    cpu_with(AMX)
    frozen = {**tiny_nodes["image"], "frozen": True}
    assert build("encoder", frozen).precision == "bf16"  # by the device
    with device.frozen_precision("fp32"):
        assert build("encoder", frozen).precision == "fp32"  # run.precision fp32 makes the run fp32
    cpu_with(AVX2)
    assert build("encoder", frozen).precision == "fp32"
    with device.frozen_precision("bf16"):
        encoder = build("encoder", frozen)
    assert encoder.precision == "bf16" and next(encoder.parameters()).dtype == torch.bfloat16
    trainable = build("encoder", {**tiny_nodes["image"], "frozen": False})
    assert trainable.precision == "fp32" and next(trainable.parameters()).dtype == torch.float32


def test_a_run_records_the_precision_it_chose(cpu_with, tmp_path, monkeypatch):
    from tests.vlreg.runner.toys import train_toy

    cpu_with(AVX2)
    model, results = train_toy(tmp_path, max_steps=2)  # run.precision's default: auto
    assert results["precision"]["requested"] == "auto" and results["precision"]["precision"] == "fp32"
    assert json.loads((tmp_path / "results.json").read_text())["precision"]["device"] == "cpu"


def test_dry_run_shows_the_resolved_precision_of_each_stage(cpu_with, capsys):
    from vlreg.run import main

    cpu_with(AMX)
    assert main(["--cfg", "projects/blip2/stage1.yaml", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("stage ")]
    expected = "precision bf16 (auto on cpu: Test CPU has AMX (bf16), measured 8.0x fp32's matmul speed)"
    assert stages and all(lines[i + 1] in (expected, "prepares files: no model") for i in stages)


def test_a_stage_config_file_names_the_precision_chosen(tmp_path):
    from vlreg.config import load_config, save_config, to_plain

    path = save_config({"run": {"precision": "auto"}}, tmp_path / "config.yaml", comment="precision: fp32 (auto ...)")
    assert path.read_text().startswith("# precision: fp32 (auto ...)\n")
    assert to_plain(load_config(path)) == {"run": {"precision": "auto"}}


# -- sequence packing per device -------------------------------------------------------------------------
def _config(model_type="opt", attention="sdpa", **extra):
    return types.SimpleNamespace(model_type=model_type, _attn_implementation=attention, hidden_size=1024,
                                 ffn_dim=4096, **extra)


@pytest.mark.parametrize("device_type, attention, kernel", [
    ("cpu", "sdpa", "dense"),
    ("cpu", "eager", None),
    ("cuda", "sdpa", None),  # a dense mask would take SDPA off its fused kernels: padded
    ("cuda", "eager", None),
    ("cuda", "flash_attention_2", "varlen"),
    ("cuda", "flash_attention_3", "varlen"),
])
def test_packing_is_decided_by_the_devices_attention_kernel(device_type, attention, kernel):
    from vlreg.models.llms.packing import packing_kernel

    assert packing_kernel(_config(attention=attention), torch.device(device_type)) == kernel
    assert packing_kernel(_config("t5", attention), torch.device(device_type)) is None
    assert packing_kernel(_config(attention=attention, sliding_window=16), torch.device(device_type)) is None


def test_varlen_packing_puts_every_sequence_in_one_row_without_a_mask(monkeypatch):
    from vlreg.models.llms import packing

    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    monkeypatch.setattr(packing, "packing_kernel", lambda config, where: "varlen")
    plan = packing.packed_plan(_config(attention="flash_attention_2"), mask)
    assert plan.rows == [[0, 1, 2]] and not plan.dense_mask
    packed = packing.pack(torch.arange(9.0).view(3, 3, 1), mask, torch.tensor([[0, 1, 0], [0, 1, 2], [0, 0, 0]]),
                          torch.tensor([[5, 6, -100], [7, 8, 9], [4, -100, -100]]), plan)
    assert packed.attention is None
    assert packed.embeds[..., 0].tolist() == [[0, 1, 3, 4, 5, 6]]
    assert packed.positions.tolist() == [[0, 1, 0, 1, 2, 0]]  # boundaries where the positions restart
    assert packed.targets.tolist() == [[5, 6, 7, 8, 9, 4]]
    monkeypatch.setattr(packing, "packing_kernel", lambda config, where: None)
    assert packing.packed_plan(_config(), mask) is None  # the padded batch


def test_one_row_packing_gives_the_padded_loss(tiny_nodes):
    """The varlen layout (one row, positions restarting) computes the padded loss; checked here through
    the dense block mask of the same row, as FlashAttention's variable-length path needs a GPU."""
    from tests.vlreg.test_perf_paths import UNEVEN, prompts, wide_llm

    from vlreg.models.llms.common import IGNORE, position_ids
    from vlreg.models.llms.packing import PackingPlan, pack

    llm = wide_llm(tiny_nodes, "opt", prompt="a photo of")
    first = prompts(4, llm.width)
    reference = llm(first, UNEVEN).cross_entropy()
    embeds, mask, targets = llm.sequences(first, UNEVEN)
    packed = pack(embeds, mask, position_ids(mask), targets, PackingPlan([[0, 1, 2, 3]], dense_mask=True))
    assert packed.embeds.shape[0] == 1 and packed.embeds.shape[1] == int(mask.sum())
    scored = packed.targets != IGNORE
    logits = llm.model(inputs_embeds=packed.embeds, attention_mask=packed.attention, position_ids=packed.positions,
                       logits_to_keep=scored).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), packed.targets[scored])
    torch.testing.assert_close(loss, reference, rtol=0, atol=2e-6)


def test_auto_threads_leave_the_cores_other_work_keeps_busy(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(device, "busy_cores", lambda: 0.1)
    assert device.cpu_threads("auto") == (2, "2 cores, 0.1 busy with other work")
    monkeypatch.setattr(device, "busy_cores", lambda: 1.2)
    assert device.cpu_threads("auto")[0] == 1
    monkeypatch.setattr(device, "busy_cores", lambda: 5.0)
    assert device.cpu_threads("auto")[0] == 1  # at least one
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert device.cpu_threads("auto") == (3, "OMP_NUM_THREADS")
    assert device.cpu_threads(4) == (4, "as set")


def test_busy_cores_sees_a_busy_process():
    import subprocess
    import sys

    quiet = device.busy_cores(0.3)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = device.busy_cores(0.5)
    finally:
        spinner.kill()
    assert 0 <= quiet <= os.cpu_count() and busy >= 0.6 and busy > quiet - 0.5


def test_fp16_on_a_cpu_is_refused_before_any_work(tmp_path, capsys):
    from vlreg.run import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["--cfg", "projects/blip2/stage1.yaml", "--dry-run", "lm.run.precision=fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlreg: error: stages.lm.run.precision: fp16 needs a CUDA GPU") and "\n" not in err
