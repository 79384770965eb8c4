"""The assembled model: shape contracts, modality checks, and both stages training."""

import pytest
import torch

from vlreg.errors import ConfigError, InputError
from vlreg.models.assembly import VisionLanguageModel

from tests.common import corpus


def make_batch(kind: str, n: int = 4, seed: int = 0) -> dict:
    """Random media paired with captions; the same batch every step, so losses must fall."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 32, 32) if kind == "image" else (n, 2, 3, 32, 32)
    return {kind: torch.randn(shape, generator=g), "text_input": corpus(n, seed), "image_id": torch.arange(n)}


def train(model, samples, steps=25, lr=2e-3):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    history = []
    model.train()
    for _ in range(steps):
        out = model(samples)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in out.items()})
    return history


def build(tiny_nodes, media="image", llm=None, losses=None, **bridge):
    node = {"encoder": tiny_nodes[media], "bridge": {**tiny_nodes["qformer"], **bridge}, "losses": losses}
    if llm:
        node["llm"] = tiny_nodes[llm]
    return VisionLanguageModel.from_config(node)


@pytest.mark.parametrize("media", ["image", "video"])
def test_stage1_losses_fall(tiny_nodes, media):
    torch.manual_seed(0)
    model = build(tiny_nodes, media, losses=[{"name": "blip2_stage1"}])
    history = train(model, make_batch(media), steps=40, lr=1e-3)
    assert set(history[0]) == {"itc", "itm", "itg", "loss"}
    for name in ("itc", "itg", "loss"):
        assert history[-1][name] < 0.75 * history[0][name], (name, history[0][name], history[-1][name])


@pytest.mark.parametrize("media,llm", [("image", "opt"), ("image", "t5"), ("video", "opt"), ("video", "t5")])
def test_stage2_lm_loss_falls_through_the_frozen_llm(tiny_nodes, media, llm):
    torch.manual_seed(0)
    model = build(tiny_nodes, media, llm=llm, losses=[{"name": "lm"}], text_branch=False)
    frozen_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    history = train(model, make_batch(media), steps=40)
    assert set(history[0]) == {"lm", "loss"}
    assert history[-1]["lm"] < 0.75 * history[0]["lm"]
    for k, v in model.llm.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    frozen = [m for m in model.modules() if getattr(m, "frozen", False)]
    assert frozen and all(not sub.training for m in frozen for sub in m.modules())
    assert model.bridge.training


def test_generate_and_answers_after_training(tiny_nodes):
    torch.manual_seed(0)
    model = build(tiny_nodes, llm="opt", losses=["lm"], text_branch=False)
    samples = make_batch("image", n=2)
    train(model, samples, steps=60, lr=3e-3)
    model.eval()
    captions = model.generate(samples, max_new_tokens=12, num_beams=1)
    assert captions == samples["text_input"]
    answers = model.predict_answers({"image": samples["image"], "text_input": ["what?", "what?"]},
                                    method="rank", answer_list=["blue", "red"])
    assert all(a in ("blue", "red") for a in answers)


def test_width_mismatch_names_both_components(tiny_nodes):
    with pytest.raises(ConfigError, match=r"width mismatch: encoder TimmViT \(width\) gives 192 but bridge QFormer "
                                          r"\(vision_width\) expects 100"):
        build(tiny_nodes, vision_width=100, losses=["blip2_stage1"])
    with pytest.raises(ConfigError, match=r"bridge QFormer \(llm_width\) gives 32 but llm CausalLM \(width\) expects 64"):
        build(tiny_nodes, llm="opt", llm_width=32, text_branch=False, losses=["lm"])


def test_video_to_image_model_and_image_to_video_model_are_clear_errors(tiny_nodes):
    image_model = build(tiny_nodes, "image", losses=[{"name": "blip2_stage1", "itm": 0, "itg": 0}])
    with pytest.raises(InputError, match=r"TimmViT is an image encoder but the batch holds 'video' of shape \(4, 2, 3, 32, 32\)"):
        image_model(make_batch("video"))
    video_model = build(tiny_nodes, "video", losses=[{"name": "blip2_stage1", "itm": 0, "itg": 0}])
    with pytest.raises(InputError, match=r"VideoEncoder is a video encoder but the batch holds 'image'"):
        video_model(make_batch("image"))


def test_objectives_need_their_components(tiny_nodes):
    with pytest.raises(ConfigError, match=r"model.losses\[0\]: objective 'lm' needs a model llm"):
        build(tiny_nodes, losses=[{"name": "lm"}])
    with pytest.raises(ConfigError, match="objective blip2_stage1 .* needs a Q-Former bridge"):
        VisionLanguageModel.from_config({"encoder": tiny_nodes["image"], "bridge": {"name": "linear", "llm_width": 64},
                                         "losses": [{"name": "blip2_stage1"}]})
    with pytest.raises(ConfigError, match="unknown key 'itx' for objective 'blip2_stage1'"):
        build(tiny_nodes, losses=[{"name": "blip2_stage1", "itx": 1}])


def test_a_loss_with_weight_zero_is_not_computed(tiny_nodes):
    model = build(tiny_nodes, losses=[{"name": "blip2_stage1", "itc": 1, "itm": 0, "itg": 0.5}])
    out = model(make_batch("image"))
    assert set(out) == {"itc", "itg", "loss"}
    assert torch.allclose(out["loss"], out["itc"] + 0.5 * out["itg"])
