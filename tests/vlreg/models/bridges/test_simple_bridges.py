"""The simple bridges: linear and MLP projectors (with masked pooling), the Perceiver resampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlreg  # noqa: F401
from vlreg.build import build
from vlreg.config import load_config
from vlreg.errors import ConfigError
from vlreg.models.base import Features, Prompts
from vlreg.models.bridges.projectors import pool_tokens

WIDTHS = {"vision_width": 12, "llm_width": 8}


def bridge(node):
    return build("bridge", node, "bridge", defaults=WIDTHS)


def tokens(batch: int = 3, length: int = 7, width: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, width, generator=torch.Generator().manual_seed(seed))


# -- pooling ----------------------------------------------------------------------------
@pytest.mark.parametrize("length, queries", [(7, 3), (12, 4), (5, 5), (3, 7), (257, 32)])
def test_pooling_without_mask_is_adaptive_average_pooling(length, queries):
    x = tokens(length=length)
    pooled, mask = pool_tokens(x, None, queries)
    expected = F.adaptive_avg_pool1d(x.transpose(1, 2), queries).transpose(1, 2)
    torch.testing.assert_close(pooled, expected)
    assert mask.shape == (3, queries) and mask.all()


def test_pooling_with_a_mask_uses_only_the_real_tokens():
    x = torch.arange(1.0, 7.0).view(1, 6, 1)
    mask = torch.tensor([[True, False, True, True, False, True]])
    pooled, out_mask = pool_tokens(x, mask, 2)
    assert pooled.flatten().tolist() == [2.0, 5.0]  # real tokens 1, 3 | 4, 6
    assert out_mask.tolist() == [[True, True]]
    pooled, _ = pool_tokens(x, mask, 3)  # real tokens 1, 3, 4, 6 in 3 bins: (1, 3), (3, 4), (4, 6)
    assert pooled.flatten().tolist() == [2.0, 3.5, 5.0]
    pooled, _ = pool_tokens(x, mask, 8)  # fewer real tokens than bins: each is repeated
    assert pooled.flatten().tolist() == [1.0, 1.0, 3.0, 3.0, 4.0, 4.0, 6.0, 6.0]


def test_pooling_ignores_the_values_of_masked_tokens_and_matches_pooling_the_kept_ones():
    x = tokens(batch=2, length=9)
    mask = torch.tensor([[True] * 9, [True, True, False, True, False, False, True, True, True]])
    pooled, out_mask = pool_tokens(x, mask, 4)
    noisy = torch.where(mask[..., None], x, torch.full_like(x, 1e6))
    torch.testing.assert_close(pool_tokens(noisy, mask, 4)[0], pooled)
    for b in range(2):
        kept = x[b][mask[b]].T[None]
        torch.testing.assert_close(pooled[b], F.adaptive_avg_pool1d(kept, 4)[0].T)
    assert out_mask.all()
    empty, empty_mask = pool_tokens(x, torch.zeros(2, 9, dtype=torch.bool), 4)
    assert not empty.any() and not empty_mask.any()


# -- projectors -------------------------------------------------------------------------
def test_linear_keeps_every_token_and_its_mask_by_default():
    lin = bridge({"name": "linear", "num_tokens": 7})
    assert (lin.vision_width, lin.llm_width, lin.num_queries) == (12, 8, 7)
    x = tokens()
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    out = lin(Features(x, mask))
    assert isinstance(out, Prompts) and out.embeds.shape == (3, 7, 8) and out.mask is mask
    torch.testing.assert_close(out.embeds, F.linear(x, lin.proj.weight, lin.proj.bias))
    assert bridge({"name": "linear"}).num_queries is None  # unknown until an encoder says how many tokens


def test_projectors_pool_to_num_queries_before_projecting():
    x = tokens()
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [False, True] * 3 + [True]])
    for node in ({"name": "linear", "num_queries": 3}, {"name": "mlp", "num_queries": 3, "hidden_width": 5}):
        proj = bridge(node)
        assert proj.num_queries == 3
        out = proj(Features(x, mask))
        pooled, pooled_mask = pool_tokens(x, mask, 3)
        assert out.embeds.shape == (3, 3, 8) and out.mask.all() and torch.equal(out.mask, pooled_mask)
        torch.testing.assert_close(out.embeds, proj.proj(pooled))


def test_mlp_is_linear_gelu_linear_with_llm_width_hidden_by_default():
    mlp = bridge({"name": "mlp"})
    first, act, second = mlp.proj
    assert (first.in_features, first.out_features, second.in_features, second.out_features) == (12, 8, 8, 8)
    assert isinstance(act, torch.nn.GELU)
    x = tokens()
    expected = second(F.gelu(first(x)))
    torch.testing.assert_close(mlp(Features(x)).embeds, expected)
    assert bridge({"name": "mlp", "hidden_width": 32}).proj[0].out_features == 32


# -- perceiver --------------------------------------------------------------------------
def test_perceiver_gives_num_queries_prompts_and_ignores_masked_tokens():
    resampler = bridge({"name": "perceiver", "num_queries": 4, "num_layers": 2, "width": 16, "num_heads": 4})
    assert (resampler.num_queries, resampler.width, len(resampler.layers)) == (4, 16, 2)
    x = tokens()
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 3:] = False
    out = resampler(Features(x, mask))
    assert out.embeds.shape == (3, 4, 8) and out.full_mask().all()
    changed = x.clone()
    changed[1, 3:] += 100.0  # masked tokens of sample 1
    torch.testing.assert_close(resampler(Features(changed, mask)).embeds, out.embeds)
    changed[1, 0] += 1.0  # a real token
    assert not torch.allclose(resampler(Features(changed, mask)).embeds[1], out.embeds[1])
    # an all-True mask is the same as no mask; a sample's prompts depend on its tokens only
    torch.testing.assert_close(resampler(Features(x)).embeds[0], out.embeds[0])


def test_perceiver_attention_matches_a_hand_computed_single_layer():
    resampler = bridge({"name": "perceiver", "num_queries": 2, "num_layers": 1, "num_heads": 3})
    layer = resampler.layers[0]
    x = tokens(batch=1, length=4)
    latents = resampler.latents[None]
    normed = layer.norm_latents(latents)
    context = torch.cat([layer.norm_tokens(x), normed], dim=1)
    key, value = layer.key_value(context).chunk(2, dim=-1)
    query = layer.query(normed)
    heads = []
    for h in range(3):
        part = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(query[..., part] @ key[..., part].transpose(1, 2) / 2.0, dim=-1)
        heads.append(weights @ value[..., part])
    after_attention = latents + layer.out(torch.cat(heads, dim=-1))
    expected = after_attention + layer.ffn(after_attention)
    expected = resampler.output_proj(resampler.norm(expected))
    torch.testing.assert_close(resampler(Features(x)).embeds, expected)


def test_bridge_configuration_errors():
    with pytest.raises(ConfigError, match="bridge 'linear' needs vision_width"):
        build("bridge", {"name": "linear", "llm_width": 8})
    with pytest.raises(ConfigError, match="bridge 'perceiver' needs llm_width"):
        build("bridge", {"name": "perceiver", "vision_width": 8})
    with pytest.raises(ConfigError, match="num_heads=5 must divide width=12"):
        bridge({"name": "perceiver", "num_heads": 5})
    with pytest.raises(ConfigError, match="num_queries must be positive or null, got 0"):
        bridge({"name": "mlp", "num_queries": 0})
    with pytest.raises(ConfigError, match="unknown key 'hidden_width' for bridge 'linear'"):
        bridge({"name": "linear", "hidden_width": 4})


def test_frozen_bridges_have_no_trainable_parameters():
    for name in ("linear", "mlp", "perceiver"):
        frozen = bridge({"name": name, "frozen": True, **({"num_heads": 4} if name == "perceiver" else {})})
        assert frozen.num_parameters() > 0 and frozen.num_parameters(trainable_only=True) == 0, name


# -- training -----------------------------------------------------------------------------
def regression_target(x: torch.Tensor, mask: torch.Tensor, order_matters: bool) -> torch.Tensor:
    """4 target prompts ``[B, 4, 8]`` that depend on the real tokens of each sample.

    Projectors see token order (their pooling bins follow it), so their target is a fixed
    map of the 4 pooled bins; a resampler is blind to order, so its target is a fixed map
    of the mean real token plus a different offset for each prompt.
    """
    generator = torch.Generator().manual_seed(2)
    target_map = torch.randn(12, 8, generator=generator) / 12**0.5
    if order_matters:
        return torch.tanh(pool_tokens(x, mask, 4)[0] @ target_map)
    offsets = torch.randn(4, 8, generator=generator)
    mean = pool_tokens(x, mask, 1)[0]
    return torch.tanh(mean @ target_map) + offsets


@pytest.mark.parametrize("node, order_matters", [
    ({"name": "linear", "num_queries": 4}, True),
    ({"name": "mlp", "num_queries": 4, "hidden_width": 32}, True),
    ({"name": "perceiver", "num_queries": 4, "num_layers": 2, "width": 16, "num_heads": 4}, False),
])
def test_each_bridge_learns_a_tiny_regression_target(node, order_matters):
    torch.manual_seed(0)
    model = bridge(node)
    x = tokens(batch=16, length=8)
    mask = torch.rand(16, 8, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:, 0] = True
    target = regression_target(x, mask, order_matters)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(model(Features(x, mask)).embeds, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


# -- configs ------------------------------------------------------------------------------
def test_bridge_configs_build_with_widths_from_the_model():
    widths = {"vision_width": 1408, "llm_width": 2560}
    from vlreg.models.base import dry_build

    with dry_build():
        assert build("bridge", load_config("bridges/perceiver.yaml"), "bridge", widths).num_queries == 64
    x = Features(tokens(length=5, width=192))
    for name, queries in (("linear", 5), ("mlp", 5), ("perceiver_tiny", 8)):
        model = build("bridge", load_config(f"bridges/{name}.yaml"), "bridge", {"vision_width": 192, "llm_width": 32})
        assert model(x).embeds.shape == (3, queries, 32), name
