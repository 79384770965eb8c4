import math

import pytest
import torch
from torch import nn

from vlreg.runner.optim import WarmupCosine, build_optimizer, layer_id, layer_index, parameter_groups


class Vit(nn.Module):
    """Names in the styles the rules must handle: timm (blocks.N, pos_embed, cls_token, patch_embed.proj),
    transformers (encoder.layer.N, embeddings, LayerNorm), a Q-Former's query_tokens."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 4, 2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)) for _ in range(3))
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.qformer = nn.Module()
        self.qformer.query_tokens = nn.Parameter(torch.zeros(1, 2, 4))
        self.qformer.embeddings = nn.Embedding(10, 4)
        self.qformer.encoder = nn.Module()
        self.qformer.encoder.layer = nn.ModuleList([nn.Linear(4, 4)])


def by_name(groups):
    return {name: group for group in groups for name in group["names"]}


def test_weight_decay_only_for_matrices_of_linear_and_conv_layers():
    groups = by_name(parameter_groups(Vit(), weight_decay=0.05))
    decayed = sorted(n for n, g in groups.items() if g["weight_decay"] > 0)
    assert decayed == ["blocks.0.1.weight", "blocks.1.1.weight", "blocks.2.1.weight", "head.weight",
                       "patch_embed.proj.weight", "qformer.encoder.layer.0.weight"]
    for name in ("cls_token", "pos_embed", "qformer.query_tokens", "qformer.embeddings.weight", "norm.weight",
                 "blocks.0.0.weight", "head.bias"):
        assert groups[name]["weight_decay"] == 0.0
    assert not any(n.startswith("frozen") for n in groups)  # frozen parameters are left out


def test_layer_ids_from_names():
    assert layer_index("qformer.encoder.layer.3.attention.query.weight") == 3
    assert layer_index("blocks.11.attn.qkv.weight") == 11
    assert layer_index("model.decoder.layers.0.fc1.weight") == 0
    assert layer_index("player.2.weight") is None and layer_index("layers_norm.weight") is None
    assert layer_id("pos_embed", 12) == 0 and layer_id("embeddings.word_embeddings.weight", 12) == 0
    assert layer_id("query_tokens", 12) == 0 and layer_id("blocks.4.mlp.fc1.weight", 12) == 5
    assert layer_id("head.weight", 12) == 13 and layer_id("norm.bias", 12) == 13


def test_layer_decay_scales_group_learning_rates_and_the_updates():
    torch.manual_seed(0)
    model = Vit()
    groups = parameter_groups(model, weight_decay=0.0, layer_decay=0.5)
    names = by_name(groups)
    # 3 blocks (the Q-Former's layer 0 shares the numbering): L = 3
    assert names["pos_embed"]["lr_scale"] == 0.5 ** 4
    assert names["blocks.0.1.weight"]["lr_scale"] == 0.5 ** 3
    assert names["blocks.2.1.weight"]["lr_scale"] == 0.5 ** 1
    assert names["head.weight"]["lr_scale"] == 1.0
    optimizer = build_optimizer(groups, lr=0.1, betas=(0.9, 0.999), eps=1e-12)
    WarmupCosine(optimizer, lr=0.1, total_steps=10)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups}["layer1_decay"] == pytest.approx(0.1 * 0.5 ** 3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model.head(model.norm(model.blocks[2](model.blocks[0](torch.randn(3, 4)) + model.pos_embed[0, 0]))).sum()
    loss.backward()
    optimizer.step()
    # Adam's first update is lr * sign(grad): its size is exactly the group's learning rate
    for name, scale in (("blocks.0.1.bias", 0.5 ** 3), ("blocks.2.1.bias", 0.5), ("head.bias", 1.0)):
        step = (dict(model.named_parameters())[name] - before[name]).abs()
        assert torch.allclose(step, torch.full_like(step, 0.1 * scale), rtol=1e-5)


def test_warmup_then_cosine_to_min_lr():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
    optimizer.param_groups[0]["lr_scale"] = 0.5
    schedule = WarmupCosine(optimizer, lr=1.0, total_steps=10, warmup_steps=4, warmup_start_lr=0.2, min_lr=0.1)
    lrs = [schedule.lr_at(s) for s in range(11)]
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert lrs[10] == pytest.approx(0.1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # step 0, times the group's scale
    for _ in range(4):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    other = WarmupCosine(optimizer, lr=1.0, total_steps=10, warmup_steps=4, warmup_start_lr=0.2, min_lr=0.1)
    other.load_state_dict(schedule.state_dict())
    assert other.steps == 4 and optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
