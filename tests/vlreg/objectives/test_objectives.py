"""Objectives as registered components: the same numbers as the losses they replaced, the config shape
(a list of objective nodes) checked before anything is built, and what each objective needs."""

import json
import random
import subprocess
import sys

import pytest
import torch

from vlreg.config import load_config, to_plain
from vlreg.errors import ConfigError, InputError, UnknownComponentError
from vlreg.interop.runs import with_objectives, without_prompter
from vlreg.models.assembly import VisionLanguageModel, objectives_from_weights
from vlreg.objectives import Objective, Step
from vlreg.registry import registry

from tests.common import ASSETS, ROOT, corpus

PINNED = json.loads((ASSETS / "objectives_parity.json").read_text())["cases"]
TOKENIZERS = {style: str(ASSETS / "objectives_tokenizers" / style) for style in ("bert", "opt", "t5")}
"""The tokenizers the pinned numbers were computed with (training one again may number its tokens otherwise)."""


def nodes(tokenizer_dirs=TOKENIZERS):
    """Tiny components; the Q-Former with dropout, so that the order of random draws shows."""
    vit = {**to_plain(load_config("encoders/vit_tiny.yaml")), "img_size": 32}
    qformer = {"name": "qformer", "num_queries": 8, "num_layers": 2, "hidden_size": 64, "num_heads": 4,
               "intermediate_size": 128, "cross_attention_every": 1, "tokenizer": tokenizer_dirs["bert"],
               "max_text_length": 16, "embed_dim": 32, "max_position_embeddings": 32, "dropout": 0.1}
    pformer = {"name": "pformer", "num_prompts": 8, "num_layers": 2, "hidden_size": 64, "num_heads": 4,
               "intermediate_size": 128, "tokenizer": tokenizer_dirs["bert"], "max_position_embeddings": 32,
               "embed_dim": 32}
    return dict(vit=vit, video={"name": "video", "num_frames": 2, "frame_encoder": vit}, qformer=qformer,
                pformer=pformer, frozen_pformer={**pformer, "frozen": True},
                opt={**to_plain(load_config("llms/opt_tiny.yaml")), "tokenizer": tokenizer_dirs["opt"]},
                t5={**to_plain(load_config("llms/t5_tiny.yaml")), "tokenizer": tokenizer_dirs["t5"]},
                features={"name": "precomputed", "input_width": 24, "num_tokens": 6, "width": 32})


def batch(media, answers=False, n=4):
    g = torch.Generator().manual_seed(0)
    samples = {"text_input": corpus(n, 0)}
    if media is None:
        return samples
    samples["image_id"] = torch.tensor([0, 1, 2, 2])[:n]
    if media == "image":
        samples["image"] = torch.randn(n, 3, 32, 32, generator=g)
    elif media == "video":
        samples["video"] = torch.randn(n, 2, 3, 32, 32, generator=g)
    else:
        samples["features"] = torch.randn(n, 6, 24, generator=g)
        samples["features_mask"] = torch.arange(6)[None] < torch.tensor([6, 4, 5, 3])[:n, None]
    if answers:
        samples["text_output"] = ["red", "a square", "blue", "on the left"][:n]
    return samples


ALIGN_10 = [{"name": "blip2_stage1"}, {"name": "pformer_alignment", "weight": 10}]
# name -> (model node without losses, losses, batch); PINNED holds what the mapping of loss weights gave
CASES = {
    "stage1": (lambda n: {"encoder": n["vit"], "bridge": n["qformer"]}, [{"name": "blip2_stage1"}], ("image",)),
    "stage1_weights": (lambda n: {"encoder": n["vit"], "bridge": n["qformer"]},
                       [{"name": "blip2_stage1", "itm": 0, "itg": 0.5}], ("image",)),
    "stage1_video_itm": (lambda n: {"encoder": n["video"], "bridge": n["qformer"]},
                         [{"name": "blip2_stage1", "itc": 0, "itm": 2, "itg": 0}], ("video",)),
    "stage1_align": (lambda n: {"encoder": n["vit"], "bridge": n["qformer"],
                                "prompter": {**n["frozen_pformer"], "llm_width": 64}}, ALIGN_10, ("image",)),
    "stage2_opt_align": (lambda n: {"encoder": n["vit"], "bridge": {**n["qformer"], "text_branch": False},
                                    "llm": n["opt"], "prompter": n["frozen_pformer"]},
                         [{"name": "lm"}, {"name": "pformer_alignment", "weight": 100}], ("image",)),
    "stage2_t5_video": (lambda n: {"encoder": n["video"], "bridge": {**n["qformer"], "text_branch": False},
                                   "llm": n["t5"]}, [{"name": "lm"}], ("video",)),
    "lm_answers_linear": (lambda n: {"encoder": n["vit"], "bridge": {"name": "linear", "num_queries": 8},
                                     "llm": n["opt"]}, [{"name": "lm"}], ("image", True)),
    "perceiver_features_align": (lambda n: {"encoder": n["features"], "llm": n["t5"], "prompter": n["frozen_pformer"],
                                            "bridge": {"name": "perceiver", "num_queries": 8, "num_layers": 1,
                                                       "width": 32, "num_heads": 2, "ffn_mult": 2}},
                                 [{"name": "lm"}, {"name": "pformer_alignment", "weight": 100}], ("features",)),
    "stage0": (lambda n: {"prompter": n["pformer"], "llm": n["opt"]}, [{"name": "pformer_stage0"}], (None,)),
    "stage0_two_masks_t5": (lambda n: {"prompter": {**n["pformer"], "contrastive_views": "two_masks"}, "llm": n["t5"]},
                            [{"name": "pformer_stage0", "contrastive": 0.5, "vocabulary": 0}], (None,)),
    "stage0_single_vocab": (lambda n: {"prompter": {**n["pformer"], "contrastive_views": "single"}, "llm": n["opt"]},
                            [{"name": "pformer_stage0", "reconstruction": 0, "vocabulary": 2}], (None,)),
}


def two_steps(node, losses, batch_args):
    """Each of two AdamW steps' losses and its gradient fingerprint (sum of squared gradients), seeded as pinned."""
    torch.manual_seed(0)
    random.seed(0)
    model = VisionLanguageModel.from_config({**node, "losses": losses}).train()
    samples = batch(*batch_args)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    torch.manual_seed(1)
    random.seed(1)
    record = []
    for _ in range(2):
        out = model(samples)
        optimizer.zero_grad()
        out["loss"].backward()
        grad = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None)
        optimizer.step()
        record.append({**{k: float(v.detach()) for k, v in out.items()}, "grad_sq": grad})
    return record


def assert_pinned(record, pinned):
    for ours, theirs in zip(record, pinned, strict=True):
        assert list(ours) == list(theirs)  # the same losses, logged in the same order
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-9), (key, ours[key], value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_objectives_give_the_numbers_of_the_losses_they_replaced(case):
    node, losses, batch_args = CASES[case]
    assert_pinned(two_steps(node(nodes()), losses, batch_args), PINNED[case])


def test_the_objective_that_makes_the_prompts_runs_first_whatever_the_order():
    """Alignment listed before blip2_stage1 still reuses stage 1's query pass: the same numbers."""
    node, losses, batch_args = CASES["stage1_align"]
    assert_pinned(two_steps(node(nodes()), losses[::-1], batch_args), PINNED["stage1_align"])


# -- the config shape -----------------------------------------------------------------------
def test_unknown_objective_lists_the_known_ones(tiny_nodes):
    node = {"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"], "losses": [{"name": "blip2_stage_1"}]}
    with pytest.raises(UnknownComponentError, match=r"unknown objective 'blip2_stage_1' \(did you mean 'blip2_stage1'\?\)"
                                                    r"\. Known objectives: blip2_stage1, lm, pformer_alignment"):
        VisionLanguageModel.check_node(node)


def test_misspelt_objective_key_is_named(tiny_nodes):
    node = {"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"],
            "losses": [{"name": "blip2_stage1", "itx": 1}]}
    with pytest.raises(ConfigError, match=r"model.losses\[0\]: unknown key 'itx' for objective 'blip2_stage1' "
                                          r"\(did you mean 'it[cm]'\?\); valid keys: itc, itg, itm"):
        VisionLanguageModel.check_node(node)
    with pytest.raises(ConfigError, match=r"model.losses\[1\]: unknown key 'weigth' for objective 'pformer_alignment'"):
        VisionLanguageModel.check_node({**node, "losses": [{"name": "lm"}, {"name": "pformer_alignment", "weigth": 2}]})


def test_a_missing_part_is_one_line_before_anything_is_built(tiny_nodes, monkeypatch):
    from vlreg.models import assembly

    def only_objectives(kind, *args, **kwargs):
        assert kind == "objective", f"a component was built: {kind}"
        return build(kind, *args, **kwargs)

    build = assembly.build
    monkeypatch.setattr(assembly, "build", only_objectives)
    node = {"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"],
            "losses": [{"name": "blip2_stage1"}, {"name": "lm"}, {"name": "pformer_alignment"}]}
    with pytest.raises(ConfigError, match=r"^model.losses\[1\]: objective 'lm' needs a model llm$"):
        VisionLanguageModel.from_config(node)
    with pytest.raises(ConfigError, match=r"^model.losses\[0\]: objective 'pformer_stage0' needs a model prompter and llm$"):
        VisionLanguageModel.from_config({"losses": ["pformer_stage0"]})


def test_a_mapping_of_loss_weights_is_refused_with_the_list_it_means(tiny_nodes):
    node = {"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"], "losses": {"itc": 1, "itm": 1, "align": 10}}
    with pytest.raises(ConfigError, match=r"model.losses: a list of objective nodes, not a mapping of loss weights; for "
                                          r"these weights: losses: \[\{name: blip2_stage1, itc: 1, itm: 1, itg: 0\}, "
                                          r"\{name: pformer_alignment, weight: 10\}\]"):
        VisionLanguageModel.check_node(node)


def test_the_parts_must_fit_the_objective(tiny_nodes):
    linear = {"encoder": tiny_nodes["image"], "bridge": {"name": "linear", "llm_width": 64}}
    with pytest.raises(ConfigError, match="objective blip2_stage1 .* needs a Q-Former bridge with its text branch; "
                                          "LinearProjector has none"):
        VisionLanguageModel.from_config({**linear, "losses": [{"name": "blip2_stage1"}]})
    with pytest.raises(ConfigError, match="both compute a loss 'lm'"):
        VisionLanguageModel.from_config({**linear, "llm": tiny_nodes["opt"], "losses": ["lm", {"name": "lm", "weight": 2}]})
    with pytest.raises(ConfigError, match="every weight of every objective is 0"):
        VisionLanguageModel.from_config({**linear, "llm": tiny_nodes["opt"], "losses": [{"name": "lm", "weight": 0}]})


def test_a_batch_without_a_key_an_objective_reads_is_an_input_error(tiny_nodes):
    model = VisionLanguageModel.from_config({"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"],
                                             "losses": ["blip2_stage1"]})
    with pytest.raises(InputError, match=r"objective 'blip2_stage1' reads batch key 'text_input'; the batch holds "
                                         r"\['image'\]"):
        model({"image": torch.zeros(2, 3, 32, 32)})
    with pytest.raises(InputError, match=r"objective 'blip2_stage1' reads the batch's media \(image, video, features\)"):
        model({"text_input": ["a", "b"]})
    with pytest.raises(ConfigError, match="the model trains no objective"):
        VisionLanguageModel.from_config({"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"]})(
            {"image": torch.zeros(2, 3, 32, 32), "text_input": ["a", "b"]})


def test_a_run_written_before_objectives_loads_with_the_objectives_it_meant():
    config = {"task": {"name": "pretrain_stage1"},
              "model": {"bridge": {"name": "qformer"}, "losses": {"itc": 1, "itm": 1, "itg": 1, "align": 10}}}
    upgraded = with_objectives(config)["model"]["losses"]
    assert upgraded == [{"name": "blip2_stage1", "itc": 1.0, "itm": 1.0, "itg": 1.0},
                        {"name": "pformer_alignment", "weight": 10.0}]
    assert without_prompter({"bridge": {}, "prompter": {}, "losses": upgraded})["losses"] == upgraded[:1]
    assert objectives_from_weights({"lm": 1, "align": 0}) == [{"name": "lm", "weight": 1.0}]
    assert objectives_from_weights({"reconstruction": 1, "vocabulary": 1}) == [
        {"name": "pformer_stage0", "reconstruction": 1.0, "contrastive": 0.0, "vocabulary": 1.0}]


# -- tasks defined by their objectives ---------------------------------------------------------
def test_pretraining_tasks_are_defined_by_their_objectives(tiny_nodes):
    from vlreg.build import build

    node = {"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"]}
    stage1 = build("task", {"name": "pretrain_stage1"})
    model = stage1.build_model(node)
    assert [registry("objective").name_of(type(o)) for o in model.objectives] == ["blip2_stage1"]
    assert model.objectives[0].weights() == {"itc": 1.0, "itm": 1.0, "itg": 1.0}
    with pytest.raises(ConfigError, match=r"model.losses: task 'pretrain_stage1' trains the objective 'blip2_stage1'; "
                                          "list it among the losses"):
        type(stage1).validate_model({**node, "llm": tiny_nodes["opt"], "losses": ["lm"]}, "model")
    stage2 = build("task", {"name": "pretrain_stage2"})
    assert type(stage2).model_node({"losses": None})["losses"] == [{"name": "lm"}]
    caption = build("task", {"name": "caption"})  # a fine-tuning task trains what the model lists
    assert "losses" not in type(caption).model_node({})


# -- a plugin objective ------------------------------------------------------------------------
def test_an_objective_registered_elsewhere_trains_alongside(tiny_nodes):
    class PromptNorm(Objective):
        """Keeps the prompts small (a test objective)."""

        needs = ("encoder", "bridge")
        batch_keys = ("media",)
        loss_names = ("prompt_norm",)

        def forward(self, step: Step):
            return {"prompt_norm": step.prompts().embeds.pow(2).mean()}

    registry("objective").register("test_prompt_norm", PromptNorm)
    try:
        model = VisionLanguageModel.from_config({
            "encoder": tiny_nodes["image"], "bridge": {**tiny_nodes["qformer"], "text_branch": False},
            "llm": tiny_nodes["opt"], "losses": [{"name": "lm"}, {"name": "test_prompt_norm", "weight": 0.5}]})
        out = model(batch("image"))
        assert list(out) == ["lm", "prompt_norm", "loss"]
        assert torch.allclose(out["loss"], out["lm"] + 0.5 * out["prompt_norm"])
    finally:
        registry("objective")._entries.pop("test_prompt_norm")


@pytest.mark.slow
def test_objectives_are_listed_with_what_they_need():
    out = subprocess.run([sys.executable, "-m", "vlreg", "list", "-l", "objective"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name in ("blip2_stage1", "lm", "pformer_alignment", "pformer_stage0"):
        assert name in out.stdout
    out = subprocess.run([sys.executable, "-m", "vlreg", "info", "objective", "lm"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.stdout.strip().endswith("needs: encoder, bridge, llm; batch keys: media, text_input; losses: lm")
