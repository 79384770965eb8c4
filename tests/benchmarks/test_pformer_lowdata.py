"""The low-data study's own arithmetic (``benchmarks/pformer_lowdata/run.py``): each arm's steps under the
two budgets, which losses each arm trains with, and the share of the gap that P-Former closes."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.common import ROOT


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("pformer_lowdata_run", ROOT / "benchmarks" / "pformer_lowdata" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paired_stage(name):
    return {"name": name, "run": {"batch_size": 32, "max_steps": 1},
            "data": {"train": {"name": "pairs"}},
            "model": {"prompter": {"name": "pformer"},
                      "losses": [{"name": "blip2_stage1"}, {"name": "pformer_alignment", "weight": 3}]}}


@pytest.fixture
def project():
    return {"name": "study", "stages": [{"name": "lm", "run": {"max_steps": 7}, "model": {}},
                                        paired_stage("stage1"), paired_stage("stage2"),
                                        {"name": "qa", "run": {"max_steps": 5}, "model": {}}]}


EPOCHS = {"stage1": 3, "stage2": 6}
ALIGN = {"stage1": 10, "stage2": 100}


def stages(project):
    return {stage["name"]: stage for stage in project["stages"]}


def test_budget_of_epochs_scales_steps_with_pairs(study, project, tmp_path):
    few = stages(study.arm_project(project, "blip2_N", 300, 0, EPOCHS, ALIGN, tmp_path))
    many = stages(study.arm_project(project, "blip2_10N", 3000, 0, EPOCHS, ALIGN, tmp_path))
    assert few["stage1"]["run"]["max_steps"] == math.ceil(3 * 300 / 32) == 29
    assert many["stage1"]["run"]["max_steps"] == math.ceil(3 * 3000 / 32) == 282
    assert many["stage2"]["run"]["max_steps"] == 563
    assert few["stage1"]["data"]["train"]["max_samples"] == 300
    assert few["lm"]["run"]["max_steps"] == 7  # shared stages are left as they are


def test_equal_steps_gives_n_arms_the_10n_steps(study, project, tmp_path):
    few = stages(study.arm_project(project, "pformer_N", 300, 1, EPOCHS, ALIGN, tmp_path, budget_pairs=3000))
    assert [few[s]["run"]["max_steps"] for s in ("stage1", "stage2")] == [282, 563]
    assert few["stage1"]["data"]["train"]["max_samples"] == 300  # still N pairs, repeated
    assert few["stage2"]["run"]["seed"] == 1 and few["qa"]["run"]["seed"] == 1


def test_arms_differ_in_the_alignment_loss(study, project, tmp_path):
    plain = stages(study.arm_project(project, "blip2_N", 300, 0, EPOCHS, ALIGN, tmp_path))
    aligned = stages(study.arm_project(project, "pformer_N", 300, 0, EPOCHS, ALIGN, tmp_path))
    assert "prompter" not in plain["stage2"]["model"]
    assert [o["name"] for o in plain["stage2"]["model"]["losses"]] == ["blip2_stage1"]
    assert aligned["stage1"]["model"]["losses"][-1] == {"name": "pformer_alignment", "weight": 10}
    assert aligned["stage2"]["model"]["losses"][-1] == {"name": "pformer_alignment", "weight": 100}
    assert len(aligned["stage2"]["model"]["losses"]) == 2  # the project's own weight is replaced, not added


def row(mean, std, seeds=3):
    """An arm's row of the table: every metric with the same mean and standard deviation."""
    metrics = ("R@1", "CIDEr", "ZS VQA", "FT VQA")
    return {**{m: mean for m in metrics}, **{f"{m}_std": std for m in metrics}, "seeds": seeds}


def test_gap_share_and_its_error(study):
    arms = {"blip2_N": row(0.4, 0.03), "pformer_N": row(0.5, 0.06), "blip2_10N": row(0.8, 0.04)}
    share = study.gap_share(arms, "CIDEr")
    assert share["gap"] == pytest.approx(0.4)
    assert share["gap_z"] == pytest.approx(0.4 / 0.05)
    assert share["share"] == pytest.approx(0.25)
    se = {name: r["CIDEr_std"] / math.sqrt(3) for name, r in arms.items()}
    expected = math.sqrt(se["pformer_N"] ** 2 + (0.75 * se["blip2_N"]) ** 2 + (0.25 * se["blip2_10N"]) ** 2) / 0.4
    assert share["share_se"] == pytest.approx(expected)
    assert study.has_gap(share)


def test_no_share_without_a_gap(study):
    arms = {"blip2_N": row(0.8, 0.1), "pformer_N": row(0.7, 0.1), "blip2_10N": row(0.85, 0.1)}
    share = study.gap_share(arms, "CIDEr")
    assert share["gap_z"] < 2 and not study.has_gap(share)
    assert "no gap" in study.markdown({"video": arms}, {"video": 300}, {})
    assert study.gap_share({"blip2_N": row(0.8, 0.1)}, "CIDEr") is None
