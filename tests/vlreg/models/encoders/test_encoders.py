"""Encoders: timm ViTs and BLIP-2's presets, the video wrapper, pre-extracted features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlreg  # noqa: F401  (installs the torchvision guard before timm)
from vlreg.build import build
from vlreg.config import load_config
from vlreg.errors import ConfigError, InputError
from vlreg.io.fingerprints import sha256_file
from vlreg.models.base import Features, dry_build

TINY = {"name": "timm_vit", "model": "vit_tiny_patch16_224", "img_size": 32, "model_kwargs": {"depth": 2}}


def tiny(**overrides) -> nn.Module:
    return build("encoder", {**TINY, **overrides})


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def timm_tiny(**kwargs) -> nn.Module:
    import timm

    torch.manual_seed(1)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0, **kwargs).eval()


# -- timm_vit ---------------------------------------------------------------------------
def test_timm_vit_gives_all_tokens_and_matches_timm_on_the_same_weights():
    enc = tiny()
    assert (enc.width, enc.num_tokens, enc.image_size, enc.modality) == (192, 5, (32, 32), "image")
    reference = timm_tiny()
    enc.vit.load_state_dict(reference.state_dict())
    x = images()
    out = enc(x)
    assert out.tokens.shape == (2, 5, 192) and out.tokens.dtype == torch.float32 and out.mask is None
    torch.testing.assert_close(out.tokens, reference.forward_features(x), rtol=0, atol=0)
    media, mask = enc.example_input(3)
    assert media.shape == (3, 3, 32, 32) and not media.any() and mask is None
    assert enc(media).tokens.shape == (3, 5, 192)


FAMILIES = {  # a tiny member of each timm family the presets use: ViT (CLIP ViT-L) and EVA (ViT-g)
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "depth": 2}, 192),
    "eva": ("eva_giant_patch14_clip_224", {"img_size": 28, "depth": 2, "embed_dim": 64, "num_heads": 4}, 64),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_last_blocks_and_final_norm_take_the_second_last_block(tmp_path, family):
    """BLIP-2's recipe: raw output of the second-last block, then a LayerNorm (no timm final norm)."""
    import timm
    from safetensors.torch import save_file

    model, kwargs, width = FAMILIES[family]
    torch.manual_seed(1)
    reference = timm.create_model(model, num_classes=0, **kwargs).eval()
    path = tmp_path / "timm_full.safetensors"  # a bare timm checkpoint: it still has block 1 and the final norm
    save_file(reference.state_dict(), str(path))
    size = kwargs.pop("img_size")
    enc = build("encoder", {"name": "timm_vit", "model": model, "img_size": size, "model_kwargs": kwargs,
                            "drop_last_blocks": 1, "final_norm": True, "checkpoint": str(path)})
    assert len(enc.vit.blocks) == 1 and isinstance(enc.vit.norm, nn.Identity) and enc.width == width
    x = images(size=size)
    with torch.no_grad():
        enc.post_norm.weight.uniform_(0.5, 1.5)
        enc.post_norm.bias.uniform_(-1, 1)
        [(patches, prefix)] = reference.forward_intermediates(
            x, indices=[0], norm=False, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True)
        hidden = torch.cat([prefix, patches], dim=1)
        expected = F.layer_norm(hidden, (width,), enc.post_norm.weight, enc.post_norm.bias)
    out = enc(x).tokens
    assert out.shape == (2, enc.num_tokens, width)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"drop_last_blocks must be in \[0, 1\]"):
        build("encoder", {"name": "timm_vit", "model": model, "model_kwargs": kwargs, "drop_last_blocks": 2})


def test_frozen_encoder_has_no_gradients_stays_in_eval_and_builds_no_graph():
    enc = tiny()
    assert enc.frozen and enc.num_parameters(trainable_only=True) == 0
    parent = nn.ModuleDict({"encoder": enc, "head": nn.Linear(192, 1)})
    parent.train()
    assert parent["head"].training and not any(m.training for m in enc.modules())
    with torch.enable_grad():
        assert not enc(images()).tokens.requires_grad
    trainable = tiny(frozen=False)
    trainable.train()
    assert trainable.training and trainable(images()).tokens.requires_grad
    assert trainable.num_parameters(trainable_only=True) == trainable.num_parameters() > 0


def test_bf16_weights_return_float32_close_to_fp32():
    fp32, bf16 = tiny(), tiny(precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    x = images()
    reference, low = fp32(x).tokens, bf16(x).tokens
    assert low.dtype == torch.float32 and not torch.equal(low, reference)
    assert (low - reference).abs().max() < 0.1 * reference.abs().max()
    assert F.cosine_similarity(low.flatten(), reference.flatten(), dim=0) > 0.999
    with pytest.raises(ConfigError, match="precision 'bf16' applies to frozen weights only"):
        tiny(precision="bf16", frozen=False)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    trained = tiny(final_norm=True, frozen=False)
    with torch.no_grad():
        trained.post_norm.bias.normal_()  # differs from a fresh LayerNorm
    path = tmp_path / f"encoder{suffix}"
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(4)
    loaded = tiny(final_norm=True, checkpoint=str(path))
    x = images()
    assert torch.equal(loaded(x).tokens, trained.eval()(x).tokens)
    assert not torch.equal(tiny(final_norm=True)(x).tokens, loaded(x).tokens)


def test_checkpoint_errors_name_the_problem(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ConfigError, match="does not exist"):
        tiny(checkpoint=str(tmp_path / "missing.safetensors"))
    other = build("encoder", {**TINY, "model_kwargs": {"depth": 2, "embed_dim": 96}})
    path = tmp_path / "narrow.safetensors"
    save_file(other.state_dict(), str(path))
    with pytest.raises(ConfigError, match="does not fit encoder 'vit_tiny_patch16_224'.*size mismatch"):
        tiny(checkpoint=str(path))
    save_file({"vit.cls_token": torch.zeros(1, 1, 192)}, str(path))
    with pytest.raises(ConfigError, match=r"missing \['vit.blocks.0"):
        tiny(checkpoint=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        tiny(checkpoint=str(tmp_path / "junk.pth"))


def test_grad_checkpointing_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    plain = tiny(frozen=False)
    checkpointed = tiny(frozen=False, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.vit.grad_checkpointing
    x = images()
    for enc in (plain, checkpointed):
        enc.train()
        enc(x).tokens.square().mean().backward()
    torch.testing.assert_close(plain(x).tokens, checkpointed(x).tokens)
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with pytest.raises(ConfigError, match="grad_checkpointing .* set frozen: false"):
        tiny(grad_checkpointing=True)


def test_unknown_or_unsuitable_timm_models_are_config_errors():
    with pytest.raises(ConfigError, match="unknown timm model 'vit_tiny_patch16_22' .*did you mean 'vit_tiny_patch16_224'"):
        tiny(model="vit_tiny_patch16_22")
    with pytest.raises(ConfigError, match="'resnet18' is not a Vision Transformer"):
        build("encoder", {"name": "timm_vit", "model": "resnet18"})
    with pytest.raises(ConfigError, match="unknown key 'img_sise'"):
        build("encoder", {**TINY, "img_sise": 32})


# -- BLIP-2 presets on the meta device ------------------------------------------------------
def test_eva_vit_g_meta_build_matches_blip2_shape_and_parameter_count():
    import timm
    from transformers import Blip2VisionConfig, Blip2VisionModel

    with dry_build():
        enc = build("encoder", {"name": "eva_vit_g", "pretrained": True})  # loads nothing in a dry build
        timm_39 = timm.create_model("eva_giant_patch14_224", depth=39, num_classes=0)
        hf_vision = Blip2VisionModel(Blip2VisionConfig())  # transformers' BLIP-2 ViT-g, post_layernorm included
    assert enc.vit.cls_token.is_meta
    assert (enc.width, len(enc.vit.blocks), enc.num_tokens, enc.image_size) == (1408, 39, 257, (224, 224))
    assert isinstance(enc.vit.norm, nn.Identity) and isinstance(enc.post_norm, nn.LayerNorm)
    assert all(m.eps == 1e-6 for m in enc.modules() if isinstance(m, nn.LayerNorm))  # EVA's and transformers' eps
    # 985,952,256: a timm VisionTransformer whose qkv bias is full, as transformers stores it (one 3 x 1408
    # parameter per layer). EVA itself (timm's Eva: q_bias, v_bias and a zero k_bias buffer) has 39 x 1408
    # fewer parameters: 985,897,344 for its 39 blocks without its final norm, plus BLIP-2's ln_vision.
    hf_count = sum(p.numel() for p in hf_vision.parameters())
    assert enc.num_parameters() == hf_count == 985_952_256 == 3_744_679_936 - 107_130_880 - 2_651_596_800
    eva = sum(p.numel() for n, p in timm_39.named_parameters() if "norm" not in n.split(".")[0]) + 2 * 1408
    assert eva == 985_897_344 == enc.num_parameters() - 39 * 1408
    assert [tuple(v.shape) for k, v in enc.state_dict().items() if k.startswith("vit.blocks.0.attn.qkv")] == \
        [(3 * 1408, 1408), (3 * 1408,)]


def test_eva_weights_load_with_a_zero_key_bias_and_give_evas_output(tmp_path):
    """EVA's layout (q_bias, v_bias; LAVIS's eva_vit_g.pth, timm's Eva) in the ViT-shaped encoder."""
    import timm

    eva_shape = {"img_size": 28, "depth": 3, "embed_dim": 64, "num_heads": 4, "mlp_ratio": 2.0}
    torch.manual_seed(1)
    eva = timm.create_model("eva_giant_patch14_clip_224", num_classes=0, **eva_shape).eval()
    with torch.no_grad():
        for block in eva.blocks:
            block.attn.q_bias.normal_()
            block.attn.v_bias.normal_()
    path = tmp_path / "eva.pth"
    torch.save(eva.state_dict(), path)
    size = eva_shape.pop("img_size")
    enc = build("encoder", {"name": "timm_vit", "model": "vit_giant_patch14_clip_224", "img_size": size,
                            "model_kwargs": {**eva_shape, "pre_norm": False}, "layer_norm_eps": 1e-6,
                            "drop_last_blocks": 1, "final_norm": True, "checkpoint": str(path)})
    bias = enc.vit.blocks[0].attn.qkv.bias
    assert torch.equal(bias, torch.cat([eva.blocks[0].attn.q_bias, torch.zeros(64), eva.blocks[0].attn.v_bias]))
    x = images(size=size)
    with torch.no_grad():
        [(patches, prefix)] = eva.forward_intermediates(x, indices=[1], norm=False, output_fmt="NLC",
                                                       intermediates_only=True, return_prefix_tokens=True)
        expected = F.layer_norm(torch.cat([prefix, patches], dim=1), (64,), eps=1e-6)
    torch.testing.assert_close(enc(x).tokens, expected, rtol=1e-5, atol=1e-5)
    assert enc.weight_source() == {"source": str(path.resolve()), "sha256": sha256_file(path)}
    assert tiny().weight_source() is None


def test_clip_vit_l_meta_build_takes_the_penultimate_block():
    with dry_build():
        enc = build("encoder", "clip_vit_l")
    assert (enc.width, len(enc.vit.blocks), enc.num_tokens) == (1024, 23, 257)
    assert isinstance(enc.vit.norm, nn.Identity) and isinstance(enc.post_norm, nn.LayerNorm)
    assert enc.frozen and enc.num_parameters(trainable_only=True) == 0


# -- video ------------------------------------------------------------------------------
def video(**overrides) -> nn.Module:
    return build("encoder", {"name": "video", "num_frames": 3, "frame_encoder": TINY, **overrides})


def clips(batch: int = 2, frames: int = 3) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def test_video_equals_the_frame_encoder_frame_by_frame_plus_temporal_embedding():
    enc = video()
    assert (enc.modality, enc.width, enc.num_tokens) == ("video", 192, 15)
    with torch.no_grad():
        enc.temporal_embedding.normal_()
    x = clips()
    calls = []
    enc.frame_encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    out = enc(x)
    assert calls == [(6, 3, 32, 32)]  # one batch of B*T frames
    expected = torch.cat([enc.frame_encoder(x[:, t]).tokens + enc.temporal_embedding[t] for t in range(3)], dim=1)
    assert out.tokens.shape == (2, 15, 192) and out.mask is None
    torch.testing.assert_close(out.tokens, expected)
    pooled = video(output="pooled")
    pooled.load_state_dict(enc.state_dict())
    assert pooled.num_tokens == 3
    torch.testing.assert_close(pooled(x).tokens, expected.unflatten(1, (3, 5)).mean(dim=2))


def test_video_temporal_embedding_trains_while_the_frame_encoder_stays_frozen():
    enc = video()
    trainable = [name for name, p in enc.named_parameters() if p.requires_grad]
    assert trainable == ["temporal_embedding"]
    enc.train()
    assert not any(m.training for m in enc.frame_encoder.modules())
    out = enc(clips()).tokens
    assert out.requires_grad
    out.sum().backward()
    assert enc.temporal_embedding.grad.shape == (3, 192)
    torch.testing.assert_close(enc.temporal_embedding.grad, torch.full((3, 192), 2.0 * 5))  # B * N per frame
    frozen = video(frozen=True, frame_encoder={**TINY, "precision": "bf16"})
    assert frozen.num_parameters(trainable_only=True) == 0
    assert all(p.dtype == torch.bfloat16 for p in frozen.parameters())
    assert not frozen(clips()).tokens.requires_grad


def test_video_frame_mask_masks_the_tokens_of_padding_frames():
    enc = video()
    mask = torch.tensor([[True, True, True], [True, False, False]])
    out = enc(clips(), mask)
    assert out.mask.tolist() == [[True] * 15, [True] * 5 + [False] * 10]
    pooled = video(output="pooled")(clips(), mask)
    assert pooled.tokens.shape == (2, 3, 192) and torch.equal(pooled.mask, mask)
    media, frame_mask = enc.example_input(2)
    assert media.shape == (2, 3, 3, 32, 32) and frame_mask is None


def test_wrong_modality_is_a_clear_error_naming_both_shapes():
    with pytest.raises(InputError) as err:
        video()(images())
    assert str(err.value) == ("video encoder expects [B, T=3, C=3, H, W], got shape [2, 3, 32, 32] "
                              "(an image batch?)")
    with pytest.raises(InputError) as err:
        tiny()(clips())
    message = str(err.value)
    assert "image encoder 'vit_tiny_patch16_224'" in message and "wrap it in a 'video' encoder" in message
    assert "expects [B, C=3, H=32, W=32], got shape [2, 3, 3, 32, 32] (a video batch?)" in message
    with pytest.raises(InputError, match=r"expects \[B, T=3, C=3, H, W\], got shape \[2, 4, 3, 32, 32\]"):
        video()(clips(frames=4))
    with pytest.raises(InputError, match=r"expects \[B, C=3, H=32, W=32\], got shape \[6, 3, 64, 64\]"):
        video()(torch.zeros(2, 3, 3, 64, 64))
    with pytest.raises(InputError, match="takes no mask"):
        tiny()(images(), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="frame_encoder must be an image encoder"):
        build("encoder", {"name": "video", "num_frames": 2,
                                "frame_encoder": {"name": "precomputed", "input_width": 4, "num_tokens": 2}})


# -- precomputed ----------------------------------------------------------------------------
def test_precomputed_features_normalise_project_and_keep_the_mask():
    enc = build("encoder", {"name": "precomputed", "input_width": 6, "num_tokens": 4, "width": 8,
                                  "layer_norm": True})
    assert (enc.modality, enc.width, enc.num_tokens, enc.frozen) == ("features", 8, 4, False)
    x = torch.randn(2, 3, 6, dtype=torch.float16)  # stored features may be half precision
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = enc(x, mask)
    expected = enc.proj(F.layer_norm(x.float(), (6,), enc.norm.weight, enc.norm.bias))
    torch.testing.assert_close(out.tokens, expected)
    assert out.tokens.dtype == torch.float32 and out.mask.dtype == torch.bool
    assert out.mask.tolist() == [[True, True, False], [True, True, True]]
    media, full = enc.example_input(2)
    assert media.shape == (2, 4, 6) and full.shape == (2, 4) and full.all()
    plain = build("encoder", {"name": "precomputed", "input_width": 6, "num_tokens": 4})
    assert plain.width == 6 and torch.equal(plain(x.float()).tokens, x.float())


def test_precomputed_rejects_features_that_do_not_fit():
    enc = build("encoder", {"name": "precomputed", "input_width": 6, "num_tokens": 4, "frozen": True})
    assert not enc(torch.randn(1, 4, 6)).tokens.requires_grad
    with pytest.raises(InputError, match=r"expects \[B, N, D=6\], got shape \[1, 4, 5\]"):
        enc(torch.randn(1, 4, 5))
    with pytest.raises(InputError, match="at most num_tokens=4 feature vectors per sample, got 5"):
        enc(torch.randn(1, 5, 6))
    with pytest.raises(InputError, match=r"mask expects \[B=1, N=4\], got shape \[1, 3\]"):
        enc(torch.randn(1, 4, 6), torch.ones(1, 3, dtype=torch.bool))


# -- configs ------------------------------------------------------------------------------
def test_encoder_configs_build():
    for name, tokens in (("vit_tiny", (2, 17, 192)), ("video_tiny", (2, 20, 192))):
        enc = build("encoder", load_config(f"encoders/{name}.yaml"))
        media, mask = enc.example_input(2)
        assert enc(media, mask).tokens.shape == tokens, name
    from vlreg.device import frozen_precision

    with dry_build(), frozen_precision("bf16"):  # precision auto: a bf16 run's frozen encoder is bf16
        for name, width in (("eva_vit_g", 1408), ("clip_vit_l", 1024)):
            enc = build("encoder", load_config(f"encoders/{name}.yaml"))
            assert (enc.width, enc.num_tokens, enc.precision) == (width, 257, "bf16")
            assert isinstance(enc.example_input(1, "meta")[0], torch.Tensor)
            assert isinstance(enc(enc.example_input(1, "meta")[0]), Features)
