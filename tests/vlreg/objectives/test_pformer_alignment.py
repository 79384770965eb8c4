"""P-Former alignment in stages 1 and 2: every bridge, every modality, a frozen target, and checkpoints without it."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlreg.errors import ConfigError
from vlreg.models.assembly import VisionLanguageModel
from vlreg.io.checkpoints import CheckpointError, load_weights
from vlreg.runner.checkpoint import Checkpointer
from vlreg.runner.optim import parameter_groups

from tests.common import corpus
from tests.vlreg.models.prompters.test_pformer import tiny_pformer

NUM_PROMPTS = 8  # the tiny Q-Former's num_queries in conftest.tiny_nodes
BRIDGES = {
    "qformer": None,  # conftest's tiny Q-Former (text_branch: false in stage 2)
    "linear": {"name": "linear", "num_queries": NUM_PROMPTS},
    "mlp": {"name": "mlp", "num_queries": NUM_PROMPTS, "hidden_width": 48},
    "perceiver": {"name": "perceiver", "num_queries": NUM_PROMPTS, "num_layers": 1, "width": 32, "num_heads": 2,
                  "ffn_mult": 2},
}
FEATURES = {"name": "precomputed", "input_width": 24, "num_tokens": 6, "width": 32}


@pytest.fixture(scope="module")
def pformer_file(tmp_path_factory, tokenizer_dirs):
    """A stage-0 result: the weights of a tiny P-Former (64-wide prompts for the tiny LLMs) in a safetensors file."""
    torch.manual_seed(1)
    prompter = VisionLanguageModel.from_config({"prompter": tiny_pformer(tokenizer_dirs, llm_width=64)}).prompter
    path = tmp_path_factory.mktemp("pformer") / "pformer.safetensors"
    save_file(prompter.state_dict(), str(path))
    return str(path)


def model_node(tiny_nodes, tokenizer_dirs, pformer_file, media="image", bridge="qformer", stage=2, align=None):
    """A stage-1 or stage-2 model with a frozen P-Former loaded from its stage-0 file; ``align`` defaults to the
    paper's weights (stage 1: 10, stage 2: 100)."""
    encoder = FEATURES if media == "features" else tiny_nodes[media]
    if BRIDGES[bridge] is None:
        bridge_node = {**tiny_nodes["qformer"], "text_branch": stage == 1}
    else:
        bridge_node = BRIDGES[bridge]
    prompter = tiny_pformer(tokenizer_dirs, num_prompts=NUM_PROMPTS, checkpoint=pformer_file, frozen=True)
    node = {"encoder": encoder, "bridge": bridge_node, "prompter": prompter}
    if stage == 1:
        node["prompter"]["llm_width"] = 64  # no LLM in stage 1 to take it from
        node["losses"] = [{"name": "blip2_stage1"}, {"name": "pformer_alignment", "weight": 10.0 if align is None else align}]
    else:
        node["llm"] = tiny_nodes["opt"]
        node["losses"] = [{"name": "lm"}, {"name": "pformer_alignment", "weight": 100.0 if align is None else align}]
    return node


def make_batch(media: str, n: int = 4, seed: int = 0) -> dict:
    """Media paired with captions; the same batch every step, so the losses must fall."""
    g = torch.Generator().manual_seed(seed)
    batch = {"text_input": corpus(n, seed), "image_id": torch.arange(n)}
    if media == "image":
        batch["image"] = torch.randn(n, 3, 32, 32, generator=g)
    elif media == "video":
        batch["video"] = torch.randn(n, 2, 3, 32, 32, generator=g)
    else:
        batch["features"] = torch.randn(n, FEATURES["num_tokens"], FEATURES["input_width"], generator=g)
        batch["features_mask"] = torch.arange(FEATURES["num_tokens"])[None] < torch.tensor([6, 4, 5, 3])[:n, None]
    return batch


def train(model, samples, steps, lr=2e-3):
    """AdamW over the runner's parameter groups (trainable parameters only); returns each step's losses."""
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay=0.05), lr=lr)
    history = []
    model.train()
    for _ in range(steps):
        out = model(samples)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    return history


def check_alignment_training(model, media, steps, expected_keys):
    prompter = model.prompter
    before = {k: v.clone() for k, v in prompter.state_dict().items()}
    groups = parameter_groups(model, weight_decay=0.05)
    optimised = {id(p) for group in groups for p in group["params"]}
    assert not any(p.requires_grad for p in prompter.parameters())
    assert not optimised & {id(p) for p in prompter.parameters()}
    history = train(model, make_batch(media), steps)
    assert set(history[0]) == expected_keys
    assert history[-1]["align"] < 0.6 * history[0]["align"], (history[0]["align"], history[-1]["align"])
    assert all(torch.equal(v, before[k]) for k, v in prompter.state_dict().items())
    assert not any(m.training for m in prompter.modules())
    assert model.bridge.training


@pytest.mark.parametrize("bridge", list(BRIDGES))
@pytest.mark.parametrize("media", ["image", "video", "features"])
def test_stage2_alignment_trains_every_bridge_on_every_modality(tiny_nodes, tokenizer_dirs, pformer_file, media, bridge):
    torch.manual_seed(0)
    model = VisionLanguageModel.from_config(model_node(tiny_nodes, tokenizer_dirs, pformer_file, media, bridge))
    check_alignment_training(model, media, steps=15, expected_keys={"lm", "align", "loss"})


@pytest.mark.parametrize("media", ["image", "video", "features"])
def test_stage1_alignment_trains_the_qformer_on_every_modality(tiny_nodes, tokenizer_dirs, pformer_file, media):
    torch.manual_seed(0)
    model = VisionLanguageModel.from_config(model_node(tiny_nodes, tokenizer_dirs, pformer_file, media, stage=1))
    check_alignment_training(model, media, steps=15, expected_keys={"itc", "itm", "itg", "align", "loss"})


def test_the_loss_is_the_weighted_sum_and_the_target_is_the_pformer_prompts_of_the_caption(
        tiny_nodes, tokenizer_dirs, pformer_file):
    torch.manual_seed(0)
    model = VisionLanguageModel.from_config(model_node(tiny_nodes, tokenizer_dirs, pformer_file, align=30.0))
    samples = make_batch("image")
    out = model(samples)
    assert torch.allclose(out["loss"], out["lm"] + 30.0 * out["align"])
    with torch.no_grad():
        prompts = model.prompts(model.visual_tokens(samples)).embeds
        targets = model.prompter(samples["text_input"]).embeds
    assert torch.allclose(out["align"], ((prompts - targets) ** 2).mean())


def test_alignment_off_is_one_key_and_the_same_config_runs_as_plain_blip2(tiny_nodes, tokenizer_dirs, pformer_file):
    node = model_node(tiny_nodes, tokenizer_dirs, pformer_file, bridge="linear", align=0.0)
    torch.manual_seed(0)
    with_prompter = VisionLanguageModel.from_config(node)
    calls = []
    with_prompter.prompter.register_forward_hook(lambda *args: calls.append(1))
    plain = VisionLanguageModel.from_config({k: v for k, v in node.items() if k != "prompter"})
    plain.load_state_dict({k: v for k, v in with_prompter.state_dict().items() if not k.startswith("prompter.")})
    samples = make_batch("image")
    out, reference = with_prompter(samples), plain(samples)
    assert set(out) == set(reference) == {"lm", "loss"}
    assert torch.allclose(out["loss"], reference["loss"])
    assert calls == []


def test_alignment_needs_a_frozen_pformer_and_matching_prompt_counts(tiny_nodes, tokenizer_dirs, pformer_file):
    node = model_node(tiny_nodes, tokenizer_dirs, pformer_file)
    node["prompter"] = {**node["prompter"], "frozen": False}
    with pytest.raises(ConfigError, match="must be frozen"):
        VisionLanguageModel.from_config(node)
    node = model_node(tiny_nodes, tokenizer_dirs, pformer_file, bridge="perceiver")
    node["bridge"] = {**node["bridge"], "num_queries": 4}
    with pytest.raises(ConfigError, match="compares 4 bridge prompts with 8 P-Former prompts"):
        VisionLanguageModel.from_config(node)


def test_a_trained_model_checkpoint_references_the_pformer_and_holds_none_of_its_weights(
        tmp_path, tiny_nodes, tokenizer_dirs, pformer_file):
    """Stage 2 with alignment, saved by the runner's Checkpointer: the P-Former is a source, not weights.

    Inference needs no P-Former: a model built from the same config without ``prompter``
    finds every one of its weights in the checkpoint (the runner's ``load_weights``).
    Resuming with the P-Former verifies that it is the one the run was trained with.
    """
    node = model_node(tiny_nodes, tokenizer_dirs, pformer_file, bridge="mlp")
    torch.manual_seed(0)
    model = VisionLanguageModel.from_config(node)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=2e-3)
    train(model, make_batch("image"), steps=3)
    checkpoints = Checkpointer(tmp_path / "checkpoints")
    path = checkpoints.save(3, model, optimizer, {})

    manifest = json.loads((path / "manifest.json").read_text())
    digest = model.prompter.weight_source()["sha256"]
    assert manifest["sources"] == {"prompter": {"source": pformer_file, "sha256": digest}}
    saved = {**load_file(path / "trainable.safetensors"), **load_file(path / "frozen.safetensors")}
    assert not [k for k in saved if k.startswith("prompter.")]
    assert not [k for k in manifest["trainable"] + manifest["frozen"] if k.startswith("prompter.")]

    # inference: the same config without the P-Former loads every one of its weights from the checkpoint
    torch.manual_seed(1)
    inference = VisionLanguageModel.from_config({k: v for k, v in node.items() if k != "prompter"} | {"losses": []})
    assert set(inference.state_dict()) == set(saved)
    assert load_weights(inference, tmp_path) == []  # strict: nothing the model needs is missing
    model.eval()
    samples = make_batch("image", n=2)
    assert inference.generate(samples, max_new_tokens=6) == model.generate(samples, max_new_tokens=6)

    # resuming with the P-Former: loads, and checks that it is the same P-Former
    torch.manual_seed(2)
    resumed = VisionLanguageModel.from_config(node)
    Checkpointer(tmp_path / "checkpoints").load(path, resumed)
    assert all(torch.equal(a, b) for a, b in zip(resumed.bridge.state_dict().values(), model.bridge.state_dict().values()))
    other = dict(load_file(pformer_file))
    other["expand.bias"] = other["expand.bias"] + 1
    other_file = tmp_path / "other_pformer.safetensors"
    save_file(other, str(other_file))
    changed = VisionLanguageModel.from_config({**node, "prompter": {**node["prompter"], "checkpoint": str(other_file)}})
    with pytest.raises(CheckpointError, match="frozen weights of 'prompter' differ"):
        Checkpointer(tmp_path / "checkpoints").load(path, changed)
