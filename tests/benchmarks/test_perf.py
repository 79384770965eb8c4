"""The performance benchmarks' own code (``benchmarks/perf``): the paper-scale models on the meta device, the
analytic FLOP counts against torch's counter, GPU-synchronised timing, rows printed as they come, precisions
skipped where the CPU emulates them, and the tiny scale run end to end through the functions a GPU run uses."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import vlreg  # noqa: F401  (installs the torchvision guard before timm and transformers)
from vlreg.models.assembly import VisionLanguageModel
from vlreg.models.base import dry_build

from tests.common import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.perf import flops, pairs, run, stage1, timing, train_step  # noqa: E402
from benchmarks.perf.machine import describe, machine  # noqa: E402
from benchmarks.perf.results import Report, Row  # noqa: E402
from benchmarks.perf.texts import Texts  # noqa: E402


def counts(model: torch.nn.Module) -> tuple[int, int]:
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


@pytest.mark.parametrize("node,expected", [
    (lambda: pairs.model_node("paper", "no-tokenizer", "bf16"), (3_744_679_936, 107_130_880)),
    (lambda: pairs.stage1_node("paper", "no-tokenizer", "bf16"), (1_172_654_910, 186_702_654)),
], ids=["stage2", "stage1"])
def test_paper_scale_nodes_build_blip2_opt_2_7b_on_meta(node, expected):
    with dry_build():
        model = VisionLanguageModel.from_config(node())
    assert all(p.is_meta for p in model.parameters())
    assert counts(model) == expected
    assert model.encoder.num_tokens == 257 and model.bridge.num_queries == 32 and len(model.bridge.layers) == 12
    assert model.encoder.precision == "bf16" and model.bridge.layers[0].self_attn.dropout == (0.0 if model.llm else 0.1)


@pytest.fixture(scope="module")
def texts(tokenizer_dirs):
    from tests.common import corpus

    lines = corpus(400)  # captions of 1 to 4 sentences: a batch with padding that packing removes
    return Texts([" and ".join(lines[i:i + 1 + i % 4]) for i in range(200)], tokenizer_dirs["opt"],
                 tokenizer_dirs["bert"])


@pytest.fixture(scope="module")
def tiny_pair(texts):
    return pairs.build_pair("tiny", texts)


def test_the_pair_is_two_models_with_equal_weights_and_no_shared_tensor(tiny_pair):
    ours = {p.data_ptr() for p in tiny_pair.vlreg.parameters()}
    assert not any(p.data_ptr() in ours for p in tiny_pair.transformers.parameters())
    assert tiny_pair.precision == "fp32" and tiny_pair.images.shape == (8, 3, 64, 64)
    assert torch.equal(tiny_pair.transformers.query_tokens, tiny_pair.vlreg.bridge.query_tokens)
    assert counts(tiny_pair.transformers)[1] == counts(tiny_pair.vlreg)[1]  # the same parts train


def test_a_batch_has_a_distinct_caption_per_picture(texts):
    assert pairs.captions("tiny", texts) == texts.captions[:40:5]
    assert len(set(pairs.captions("paper", texts))) == 64


@pytest.mark.parametrize("mode", ["device", "padded", "dense"])
def test_the_stage2_count_without_attention_is_what_torch_counts(tiny_pair, mode):
    rows, positions, scored = train_step.llm_shapes(tiny_pair)[mode]
    model = pairs.twin(tiny_pair.vlreg)
    batch = {"image": tiny_pair.images, "text_input": tiny_pair.texts}
    counted = flops.counted_flops(train_step.vlreg_step(model, batch, mode=mode))
    analytic = flops.stage2_flops(model, len(tiny_pair.texts), rows, positions, scored, attention=False)
    assert counted == analytic.total
    assert flops.stage2_flops(model, len(tiny_pair.texts), rows, positions, scored).total > analytic.total


def test_packing_modes_give_the_rows_they_name_and_restore_the_decision(tiny_pair):
    from vlreg.models.llms import causal

    original = causal.packed_plan
    shapes = train_step.llm_shapes(tiny_pair)
    assert shapes["padded"][0] == len(tiny_pair.texts)
    assert shapes["dense"] == shapes["device"]  # on a CPU, vlreg's decision is the dense-mask rows
    with train_step.packing("padded"):
        assert causal.packed_plan is not original
    assert causal.packed_plan is original


def test_the_stage1_count_without_attention_is_what_torch_counts(texts):
    from vlreg.models.bridges.qformer_layers import Attention

    model = stage1.build("tiny", texts)
    for attention in model.model.bridge.modules():
        if isinstance(attention, Attention):
            attention.dropout = 0.0  # dropout sends CPU attention to a kernel whose products torch counts
    assert flops.counted_flops(model.step()) == model.flops(attention=False).total


def test_cuda_timing_synchronises_before_and_after_each_call(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append("sync"))
    assert timing.synchronizer("cpu") is None and timing.synchronizer("cuda:0") is torch.cuda.synchronize
    samples = timing.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, warmup=1,
                                device="cuda")
    assert calls == ["a", "b", "sync", "b", "sync", "sync", "a", "sync"]  # warm-up untimed, then each call synced
    assert [len(s.wall) for s in samples.values()] == [1, 1]
    assert timing.repeat(lambda: calls.append("c"), 1, warmup=0, device="cuda").wall and calls[-3:] == [
        "sync", "c", "sync"]


def test_rows_are_printed_as_they_come_and_the_files_name_the_machine(tmp_path, capsys):
    info = machine()
    report = Report(info, "python -m benchmarks.perf", tmp_path / "r.json")
    report.add(Row("train step", "tiny", "1.0 ms", "2.0 ms", 2.0))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"[perf] {describe(info)}" and "train step | tiny | 1.0 ms" in printed[1]
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["machine"]["cpu_bf16_native"] in (True, False) and len(written["rows"]) == 1
    assert (tmp_path / "r.txt").read_text().startswith(describe(info))
    gpu = {**info, "gpu": "NVIDIA H200", "gpu_capability": "sm_90", "gpu_memory_gib": 139.8, "gpu_bf16": True,
           "cuda": "13.0"}
    assert describe(gpu).startswith("NVIDIA H200 (sm_90, 139.8 GiB, bf16: yes), CUDA 13.0; host ")


@pytest.mark.parametrize("native,asked,expected", [("0", False, None), ("0", True, "bf16"), ("1", False, "bf16")])
def test_a_precision_the_cpu_emulates_is_skipped_unless_asked_for(monkeypatch, native, asked, expected):
    monkeypatch.setenv("VLREG_CPU_BF16", native)
    fast, why = train_step.fast_precision("cpu", asked)
    assert fast == expected and (fast is not None or "--all-precisions" in why)


@pytest.mark.slow
def test_the_tiny_scale_runs_every_benchmark_path_of_a_gpu_run(texts, tmp_path, capsys, monkeypatch):
    """pair_rows and stage1_rows, as ``--device cuda --scale paper`` calls them, here on the CPU at tiny scale."""
    from benchmarks.perf.utilisation import Peaks

    monkeypatch.setenv("VLREG_CPU_BF16", "0")  # the precision row then becomes a note
    report = Report(machine(), "test", tmp_path / "r.json")
    repeats, goal = run.Repeats(train=1, generation=1, new_tokens=3), run.targets("cuda", "paper")
    peaks = Peaks("cpu")
    run.pair_rows(report, "tiny", repeats, goal, texts, "cpu", peaks, ["generation", "train"], False)
    run.stage1_rows(report, "tiny", repeats, goal, texts, "cpu", peaks)
    rows = report.rows
    assert [r.benchmark for r in rows[:2]] == ["generation", "generation"] and all(r.ok for r in rows)
    train = [r for r in rows if r.benchmark == "train step"]
    assert len(train) == 2 and {"vlreg's choice", "forced"} == {r.case.split(": ")[0].split(", ")[-1] for r in train}
    assert next(r for r in rows if r.benchmark == "precision").ours == "skipped"
    utilisation = [r for r in rows if r.benchmark == "utilisation"]
    assert len(utilisation) == 4 and all("MFU" in r.check for r in utilisation)
    assert utilisation[0].target == ">= 55% MFU" and utilisation[-1].target == ">= 40% MFU"
    assert rows[-2].benchmark == "stage-1 step"
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[perf] ")]
    assert len(printed) == 1 + 1 + len(rows)  # the machine, the build, then one line per row
