"""Interop: transformers BLIP-2 and LAVIS checkpoints in and out, vlreg runs as models, frozen-weight sources."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import vlreg
from vlreg.errors import ConfigError, UserError
from vlreg.interop import transformers_blip2 as tb
from vlreg.interop.materialize import assign_weights, parameters_on_meta
from vlreg.models.assembly import VisionLanguageModel
from vlreg.models.llms.common import untie_output_embeddings

VOCAB = 410  # the LLMs' vocabulary: the tests' 400-token tokenizers, and the image token last
IMAGE_TOKEN = VOCAB - 1
QUERIES = 4
WIDTH = 32  # vision and Q-Former width
TEXTS = ["a red circle", "a small blue square on the left"]


# -- tiny transformers BLIP-2 models, weights moved away from their initialisation ------------------
def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Add noise to every parameter: LayerNorms stop being identities, qkv key biases stop being zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=g))


def blip2_config(llm: str, retrieval: bool = False, qformer_vocab: int = 30522):
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig, T5Config

    vision = Blip2VisionConfig(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=28, patch_size=14)
    qformer = Blip2QFormerConfig(hidden_size=WIDTH, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                                 cross_attention_frequency=2, max_position_embeddings=32, vocab_size=qformer_vocab,
                                 use_qformer_text_input=retrieval)
    if llm == "opt":
        text = OPTConfig(vocab_size=VOCAB, hidden_size=24, word_embed_proj_dim=24, ffn_dim=48, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, dropout=0.0)
    else:
        text = T5Config(vocab_size=VOCAB, d_model=24, d_kv=8, d_ff=48, num_heads=3, num_layers=2, num_decoder_layers=2,
                        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                        decoder_start_token_id=0)
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=QUERIES,
                       image_token_index=None if retrieval else IMAGE_TOKEN, image_text_hidden_size=16)


def tiny_blip2(llm: str):
    from transformers import Blip2ForConditionalGeneration

    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(blip2_config(llm))
    if llm == "t5":  # FlanT5 has an output head of its own (transformers ties it when building from a config)
        untie_output_embeddings(model.language_model)
    perturb(model)
    return model.eval()


@pytest.fixture(scope="module")
def saved_blip2(tokenizer_dirs, tmp_path_factory):
    """``{llm: (transformers model, its saved directory with the tokenizer)}``."""
    from transformers import AutoTokenizer

    out = {}
    for llm in ("opt", "t5"):
        model = tiny_blip2(llm)
        directory = tmp_path_factory.mktemp(f"blip2_{llm}")
        model.save_pretrained(directory)
        AutoTokenizer.from_pretrained(tokenizer_dirs[llm]).save_pretrained(directory)
        out[llm] = (model, directory)
    return out


def pixels(batch: int = 2, seed: int = 3, size: int = 28) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def transformers_inputs(tokenizer, texts: list[str], left: bool, queries: int = QUERIES,
                        image_token: int = IMAGE_TOKEN) -> tuple[torch.Tensor, torch.Tensor]:
    """What transformers' Blip2Processor gives: ``queries`` image tokens, then the padded text (left or right);
    ids and mask ``[B, queries + T]``."""
    rows = [tokenizer(text)["input_ids"] for text in texts]
    length = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        pad = [tokenizer.pad_token_id] * (length - len(row))
        ids.append([image_token] * queries + (pad + row if left else row + pad))
        mask.append([1] * queries + ([0] * len(pad) + [1] * len(row) if left else [1] * len(row) + [0] * len(pad)))
    return torch.tensor(ids), torch.tensor(mask)


# -- parity checks, shared with test_interop_layouts.py ----------------------------------------------
def placeholders(hf) -> dict[str, int]:
    """How many image tokens transformers' BLIP-2 ``hf`` expects before the text, and their id."""
    return {"queries": hf.config.num_query_tokens, "image_token": hf.config.image_token_index}


def assert_same_greedy_tokens(hf, model, images: torch.Tensor, texts: list[str] = TEXTS) -> torch.Tensor:
    """vlreg's greedy tokens after ``[prompts; text]`` equal those of transformers' BLIP-2 ``hf`` (its
    ``generate()`` on the processor's inputs); returns them, ``[B, <= 8]``."""
    tokenizer = model.llm.tokenizer
    decoder_only = not hf.config.is_encoder_decoder
    ids, mask = transformers_inputs(tokenizer, texts, left=decoder_only, **placeholders(hf))
    options = dict(max_new_tokens=8, num_beams=1, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=model.llm.pad_token_id)
    with torch.no_grad():
        theirs = hf.generate(pixel_values=images, input_ids=ids, attention_mask=mask, **options)
        ours = model.llm.generate_tokens(model.prompts(model.visual_tokens({"image": images})), texts, max_new_tokens=8)
    # decoder-only: transformers returns the image tokens and the prompt first; encoder-decoder: the decoder start
    new = theirs[:, ids.shape[1]:] if decoder_only else theirs[:, 1:]
    assert torch.equal(ours, new)
    assert new.shape[1] >= 3 and not torch.equal(new[0], new[1])  # real continuations, different per image
    return ours


def assert_same_decoder_only_logits(hf, model, images: torch.Tensor, texts: list[str] = TEXTS) -> None:
    """vlreg's logits over ``[prompts; bos + text]`` (captioning) equal transformers' within 1e-4."""
    ids, mask = transformers_inputs(model.llm.tokenizer, texts, left=False, **placeholders(hf))
    with torch.no_grad():
        theirs = hf(pixel_values=images, input_ids=ids, attention_mask=mask).logits
        ours = model.llm(model.prompts(model.visual_tokens({"image": images})), texts).logits
    for row in range(len(texts)):
        real = int(mask[row].sum())  # queries + </s> + text: vlreg then has eos, and padding
        torch.testing.assert_close(ours[row, :real], theirs[row, :real], rtol=0, atol=1e-4)


def assert_same_encoder_decoder_logits(hf, model, images: torch.Tensor) -> None:
    """vlreg's decoder logits for answers after ``[prompts; question]`` equal transformers' within 1e-4."""
    tokenizer = model.llm.tokenizer
    questions, answers = ["what is on the left", "colour?"], ["a small red circle", "blue"]
    ids, mask = transformers_inputs(tokenizer, questions, left=False, **placeholders(hf))
    labels = tokenizer(answers, padding=True, return_tensors="pt")
    labels = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    with torch.no_grad():
        theirs = hf(pixel_values=images, input_ids=ids, attention_mask=mask, labels=labels).logits
        out = model.llm(model.prompts(model.visual_tokens({"image": images})), questions, answers)
    assert torch.equal(out.targets, labels)
    scored = labels != -100
    torch.testing.assert_close(out.logits[scored], theirs[scored], rtol=0, atol=1e-4)


# -- 1. greedy generation is token-identical ----------------------------------------------------------
@pytest.mark.parametrize("llm", ["opt", "t5"])
def test_greedy_generation_equals_transformers(saved_blip2, llm):
    hf, directory = saved_blip2[llm]
    model = vlreg.load_model(directory)
    images = pixels()
    assert_same_greedy_tokens(hf, model, images)
    captions = model.generate({"image": images}, max_new_tokens=8)  # no text: the prompt alone
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


# -- 2. logits agree ------------------------------------------------------------------------------------
def test_decoder_only_logits_equal_transformers(saved_blip2):
    hf, directory = saved_blip2["opt"]
    assert_same_decoder_only_logits(hf, vlreg.load_model(directory), pixels())


def test_encoder_decoder_logits_equal_transformers(saved_blip2):
    hf, directory = saved_blip2["t5"]
    assert_same_encoder_decoder_logits(hf, vlreg.load_model(directory), pixels())


# -- 3. transformers -> vlreg -> transformers ----------------------------------------------------------
@pytest.mark.parametrize("llm", ["opt", "t5"])
def test_transformers_round_trip_keeps_every_key_and_value(saved_blip2, llm):
    hf, directory = saved_blip2[llm]
    model = vlreg.load_model(directory)
    assert model.encoder.vit.blocks[0].attn.qkv.bias.requires_grad is False and not model.training
    back = vlreg.interop.to_transformers(model).state_dict()
    original = hf.state_dict()
    assert set(back) == set(original)
    different = [k for k in original if not torch.equal(back[k], original[k])]
    assert not different, different[:5]
    bias = original["vision_model.encoder.layers.0.self_attn.qkv.bias"]
    assert bias[WIDTH:2 * WIDTH].abs().sum() > 0  # the key part was not zero: it survived
    if llm == "t5":
        assert not torch.equal(original["language_model.lm_head.weight"], original["language_model.shared.weight"])


def test_save_transformers_writes_a_directory_transformers_loads(saved_blip2, tmp_path):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    hf, directory = saved_blip2["opt"]
    model = vlreg.load_model(directory)
    assert model.eval_processor["image_size"] == 28  # no image processor saved: the vision config's size
    model.eval_processor = {"name": "image_eval", "image_size": 28, "mean": [0.5] * 3, "std": [0.25] * 3}
    vlreg.interop.save_transformers(model, tmp_path / "out")
    reloaded = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "out")
    original = hf.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in reloaded.state_dict().items())
    processor = Blip2Processor.from_pretrained(tmp_path / "out")
    assert processor.num_query_tokens == QUERIES
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert reloaded.config.image_token_index == image_id < VOCAB
    batch = processor(images=[torch.zeros(3, 40, 30).numpy().transpose(1, 2, 0).astype("uint8")], text=["a red"],
                      return_tensors="pt")
    assert batch["input_ids"][0, :QUERIES].tolist() == [image_id] * QUERIES
    assert tuple(batch["pixel_values"].shape) == (1, 3, 28, 28)
    again = vlreg.load_model(tmp_path / "out")
    assert again.eval_processor == {"name": "image_eval", "image_size": 28, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert len(again.llm.tokenizer) == len(model.llm.tokenizer) + 1  # plus <image>, never produced from text


@pytest.mark.slow
def test_exporting_what_transformers_cannot_hold_is_a_clear_error(tiny_nodes):
    from vlreg.config import load_config, to_plain

    clip = VisionLanguageModel.from_config({"encoder": {**to_plain(load_config("encoders/clip_vit_l.yaml")),
                                                        "pretrained": False, "img_size": 28, "precision": "fp32"}})
    with pytest.raises(ConfigError, match="cannot become transformers' Blip2VisionModel: it has a LayerNorm before "
                                          r"its blocks \(CLIP's ln_pre\)"):
        tb.vision_config(clip.encoder)
    stage1 = VisionLanguageModel.from_config({"encoder": tiny_nodes["image"], "bridge": tiny_nodes["qformer"]})
    with pytest.raises(ConfigError, match="needs an encoder, a bridge and an llm; this model has no llm"):
        vlreg.interop.to_transformers(stage1)


def test_vit_g_configs_become_the_eva_preset():
    from transformers import Blip2Config, OPTConfig

    from vlreg.models.base import dry_build

    opt_2_7b = OPTConfig(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                         word_embed_proj_dim=2560)
    node = tb.model_node(Blip2Config(text_config=opt_2_7b, image_token_index=50265), tied=True, precision="fp16")
    assert node["encoder"] == {"name": "eva_vit_g", "img_size": 224, "precision": "fp16"}
    assert node["bridge"]["num_queries"] == 32 and node["llm"]["name"] == "causal_lm"
    with dry_build():
        model = VisionLanguageModel.from_config(node)
    assert model.bridge.num_parameters() == 107_130_880  # the OPT-2.7B BLIP-2 (Salesforce/blip2-opt-2.7b)
    assert sum(p.numel() for p in model.parameters()) == 3_744_679_936


# -- 4. LAVIS layout -> vlreg: ITC and ITM equal transformers' retrieval model -------------------------------
def lavis_state(retrieval) -> dict[str, torch.Tensor]:
    """A LAVIS Blip2Qformer state dict written from a transformers retrieval model's weights, by hand."""
    from vlreg.models.bridges.qformer_keys import from_transformers, to_lavis

    hf = retrieval.state_dict()
    out = {"visual_encoder.cls_token": hf["vision_model.embeddings.class_embedding"],
           "visual_encoder.pos_embed": hf["vision_model.embeddings.position_embedding"],
           "ln_vision.weight": hf["vision_model.post_layernorm.weight"],
           "ln_vision.bias": hf["vision_model.post_layernorm.bias"]}
    for kind in ("weight", "bias"):
        out[f"visual_encoder.patch_embed.proj.{kind}"] = hf[f"vision_model.embeddings.patch_embedding.{kind}"]
    for i in range(2):
        theirs, ours = f"vision_model.encoder.layers.{i}", f"visual_encoder.blocks.{i}"
        for lavis, name in (("norm1", "layer_norm1"), ("attn.proj", "self_attn.projection"), ("norm2", "layer_norm2"),
                            ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                out[f"{ours}.{lavis}.{kind}"] = hf[f"{theirs}.{name}.{kind}"]
        out[f"{ours}.attn.qkv.weight"] = hf[f"{theirs}.self_attn.qkv.weight"]
        q_bias, k_bias, v_bias = hf[f"{theirs}.self_attn.qkv.bias"].chunk(3)
        assert not k_bias.any()  # EVA has no key bias; LAVIS stores q and v only
        out[f"{ours}.attn.q_bias"], out[f"{ours}.attn.v_bias"] = q_bias, v_bias
    # the Q-Former in LAVIS's names (qformer_keys, checked against BERT's naming in test_qformer.py), plus
    # what transformers has no place for: the temperature and the ITG head (decoder tied to the word embeddings)
    out.update(to_lavis(from_transformers(hf)))
    g = torch.Generator().manual_seed(7)
    out["temp"] = torch.tensor(0.05)
    for name, shape in (("transform.dense.weight", (WIDTH, WIDTH)), ("transform.dense.bias", (WIDTH,)),
                        ("transform.LayerNorm.weight", (WIDTH,)), ("transform.LayerNorm.bias", (WIDTH,))):
        out[f"Qformer.cls.predictions.{name}"] = torch.randn(shape, generator=g)
    words = out["Qformer.bert.embeddings.word_embeddings.weight"]
    out["Qformer.cls.predictions.bias"] = out["Qformer.cls.predictions.decoder.bias"] = torch.randn(len(words), generator=g)
    out["Qformer.cls.predictions.decoder.weight"] = words
    out["Qformer.bert.embeddings.position_ids"] = torch.arange(32)[None]  # a buffer LAVIS saves
    return out


def stage1_node(tokenizer_dir: str) -> dict:
    """The vlreg model node that the tiny retrieval model's weights belong to."""
    return {
        "encoder": {"name": "timm_vit", "model": "vit_giant_patch14_clip_224", "img_size": 28,
                    "model_kwargs": {"embed_dim": WIDTH, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0,
                                     "patch_size": 14, "pre_norm": False, "final_norm": False},
                    "layer_norm_eps": 1e-6, "final_norm": True},
        "bridge": {"name": "qformer", "num_queries": QUERIES, "num_layers": 3, "hidden_size": WIDTH, "num_heads": 4,
                   "intermediate_size": 64, "cross_attention_every": 2, "max_position_embeddings": 32,
                   "max_text_length": 16, "embed_dim": 16, "dropout": 0.0, "tokenizer": tokenizer_dir},
        "losses": [{"name": "blip2_stage1"}],
    }


def test_lavis_checkpoint_gives_transformers_retrieval_scores(tokenizer_dirs, tmp_path):
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    bert = AutoTokenizer.from_pretrained(tokenizer_dirs["bert"])
    torch.manual_seed(1)
    hf = Blip2ForImageTextRetrieval(blip2_config("opt", retrieval=True, qformer_vocab=len(bert))).eval()
    perturb(hf)
    with torch.no_grad():  # EVA (and so LAVIS) has no key bias
        for layer in hf.vision_model.encoder.layers:
            layer.self_attn.qkv.bias[WIDTH:2 * WIDTH] = 0
    path = tmp_path / "blip2_stage1.pth"
    lavis = lavis_state(hf)
    torch.save({"model": lavis, "epoch": 3}, path)
    model = vlreg.load_model(path, config=stage1_node(tokenizer_dirs["bert"]))
    assert not model.training and model.eval_processor["image_size"] == 28

    texts = ["a red circle on the left", "a blue square", "two green triangles at the top"]
    ids, mask = model.bridge.tokenize(texts)
    images = pixels(3)
    with torch.no_grad():
        itc = hf(images, ids, mask.long(), use_image_text_matching_head=False).logits_per_image
        itm = hf(images, ids, mask.long(), use_image_text_matching_head=True).logits_per_image
        features = model.visual_tokens({"image": images})
        similarity = model.bridge.similarity(model.bridge.image_embeds(features), model.bridge.text_embeds(texts))
        logits = model.bridge.itm_logits(features, texts)
    torch.testing.assert_close(similarity, itc, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, itm, rtol=0, atol=1e-5)
    assert model.bridge.temp.item() == pytest.approx(0.05)  # what transformers has no place for loads too
    assert torch.equal(model.bridge.lm_head.bias, lavis["Qformer.cls.predictions.bias"])

    # a stage-2 model takes the stage-1 checkpoint's shared part; its projection is not in the file
    stage2 = {**stage1_node(tokenizer_dirs["bert"]), "losses": []}
    stage2["bridge"] = {**stage2["bridge"], "text_branch": False, "llm_width": 24}
    with pytest.raises(ConfigError, match=r"lacks weights the model needs, .*bridge\.llm_proj\.weight"):
        vlreg.load_model(path, config=stage2)
    partial = vlreg.load_model(path, config=stage2, strict=False)
    torch.testing.assert_close(partial.bridge.query_states(features), model.bridge.query_states(features))


def test_lavis_keys_nothing_maps_and_missing_configs_are_errors(tokenizer_dirs, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": {"visual_encoder.cls_token": torch.zeros(1, 1, WIDTH), "mystery.weight": torch.zeros(2)}}, path)
    with pytest.raises(ConfigError, match="holds keys vlreg does not know: mystery.weight"):
        vlreg.load_model(path, config=stage1_node(tokenizer_dirs["bert"]))
    with pytest.raises(ConfigError, match="does not say which model it belongs to: pass config="):
        vlreg.load_model(path)


def test_a_pickle_that_would_run_code_is_refused(tokenizer_dirs, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    path = tmp_path / "malicious.pth"
    torch.save({"model": {"query_tokens": torch.zeros(1, QUERIES, WIDTH), "extra": Payload()}}, path)
    with pytest.raises(UserError, match="malicious.pth' holds a pickle that needs code to load") as refused:
        vlreg.load_model(path, config=stage1_node(tokenizer_dirs["bert"]))
    assert not marker.exists() and "weights_only" not in str(refused.value)


def test_lavis_clip_vit_l_layout_equals_transformers_clip(tmp_path):
    """LAVIS's ViT-L is OpenAI CLIP's visual tower (ln_pre, in_proj, QuickGELU) cut short, then ln_vision."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(2)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=28, patch_size=14,
                                            hidden_act="quick_gelu")).eval()
    perturb(clip)
    hf = {k.removeprefix("vision_model."): v for k, v in clip.state_dict().items() if "position_ids" not in k}
    state = {"visual_encoder.class_embedding": hf["embeddings.class_embedding"],
             "visual_encoder.positional_embedding": hf["embeddings.position_embedding.weight"],
             "visual_encoder.conv1.weight": hf["embeddings.patch_embedding.weight"],
             "ln_vision.weight": torch.rand(WIDTH) + 0.5, "ln_vision.bias": torch.randn(WIDTH)}
    for kind in ("weight", "bias"):
        state[f"visual_encoder.ln_pre.{kind}"] = hf[f"pre_layrnorm.{kind}"]
    for i in range(2):
        theirs, ours = f"encoder.layers.{i}", f"visual_encoder.transformer.resblocks.{i}"
        for kind in ("weight", "bias"):
            state[f"{ours}.attn.in_proj_{kind}"] = torch.cat([hf[f"{theirs}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for lavis, name in (("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"), ("ln_2", "layer_norm2"),
                                ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                state[f"{ours}.{lavis}.{kind}"] = hf[f"{theirs}.{name}.{kind}"]
    path = tmp_path / "clip_vit_l.pth"
    torch.save(state, path)
    node = {"encoder": {"name": "timm_vit", "model": "vit_large_patch14_clip_quickgelu_224", "img_size": 28,
                        "model_kwargs": {"embed_dim": WIDTH, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0,
                                         "final_norm": False},
                        "final_norm": True}}
    model = vlreg.load_model(path, config=node)
    images = pixels()
    with torch.no_grad():
        hidden = clip(pixel_values=images).last_hidden_state
        expected = torch.nn.functional.layer_norm(hidden, (WIDTH,), state["ln_vision.weight"], state["ln_vision.bias"])
        ours = model.visual_tokens({"image": images}).tokens
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


# -- skeletons and weights ----------------------------------------------------------------------------------
def test_assign_weights_keeps_ties_dtypes_and_reports_what_is_missing():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight
            self.norm = torch.nn.LayerNorm(3)
            self.register_buffer("steps", torch.zeros(()))

    with parameters_on_meta():
        model = Tied().to(torch.bfloat16)
    assert model.embed.weight.is_meta and not model.steps.is_meta
    state = {"head.weight": torch.randn(5, 3), "norm.weight": torch.ones(3), "steps": torch.tensor(4.0)}
    with pytest.raises(ConfigError, match="lacks weights the model needs: norm.bias"):
        assign_weights(model, state, "test state")
    state["norm.bias"] = torch.zeros(3)
    assert assign_weights(model, state, "test state") == []
    assert model.head.weight is model.embed.weight and model.embed.weight.dtype == torch.bfloat16
    assert model.steps.item() == 4 and torch.equal(model.embed.weight, state["head.weight"].bfloat16())
    with pytest.raises(ConfigError, match=r"test state: norm.bias is \(4,\) but the model's is \(3,\)"):
        assign_weights(model, {**state, "norm.bias": torch.zeros(4)}, "test state")
    with pytest.raises(ConfigError, match="holds weights the model does not have: other"):
        assign_weights(model, {**state, "other": torch.zeros(1)}, "test state")


# -- vlreg runs as models ---------------------------------------------------------------------------------------
def checkpoint_model(tiny_nodes, tokenizer_dirs, with_prompter: bool):
    node = {"encoder": tiny_nodes["image"], "bridge": {**tiny_nodes["qformer"], "text_branch": False},
            "llm": tiny_nodes["opt"], "losses": [{"name": "lm"}]}
    if with_prompter:
        node["prompter"] = {"name": "pformer", "num_prompts": 8, "num_layers": 1, "hidden_size": 32, "num_heads": 4,
                            "intermediate_size": 64, "max_position_embeddings": 32, "embed_dim": 16,
                            "tokenizer": tokenizer_dirs["bert"], "frozen": True}
        node["losses"].append({"name": "pformer_alignment", "weight": 10.0})
    torch.manual_seed(4)
    model = VisionLanguageModel.from_config(node)
    perturb(model.bridge, seed=5)
    return node, model


def save_run(directory, node, model, step: int = 3):
    from vlreg.config import save_config
    from vlreg.runner.checkpoint import Checkpointer

    save_config({"name": "stage2", "task": {"name": "caption"}, "model": node}, directory / "config.yaml")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return Checkpointer(directory / "checkpoints").save(step, model, optimizer, {})


def test_a_run_loads_as_a_model_without_the_pformer_it_trained_with(tiny_nodes, tokenizer_dirs, tmp_path):
    node, trained = checkpoint_model(tiny_nodes, tokenizer_dirs, with_prompter=True)
    saved = save_run(tmp_path / "run", node, trained)
    images = pixels(2, seed=9, size=32)
    trained.eval()
    expected = trained.generate({"image": images}, max_new_tokens=6)
    for source in (tmp_path / "run", saved, tmp_path / "run" / "checkpoints"):
        model = vlreg.load_model(source)
        assert model.prompter is None and not model.training
        assert model.generate({"image": images}, max_new_tokens=6) == expected
    assert torch.equal(model.bridge.llm_proj.weight, trained.bridge.llm_proj.weight)
    assert model.eval_processor["image_size"] == 32
    kept = vlreg.load_model(tmp_path / "run", prompter=True)
    assert all(torch.equal(a, b) for a, b in zip(kept.prompter.state_dict().values(), trained.prompter.state_dict().values()))
    assert [o.weights() for o in kept.objectives] == [{"lm": 1.0}, {"align": 10.0}]
    # a run written before objectives, whose config has a mapping of loss weights, loads with the objectives it meant
    save_run(tmp_path / "old_run", {**node, "losses": {"lm": 1.0, "align": 10.0}}, trained)
    old = vlreg.load_model(tmp_path / "old_run", prompter=True)
    assert [o.weights() for o in old.objectives] == [{"lm": 1.0}, {"align": 10.0}]
    assert vlreg.load_model(tmp_path / "old_run").generate({"image": images}, max_new_tokens=6) == expected


def test_frozen_encoder_and_llm_files_are_referenced_not_copied_and_checked_on_resume(tiny_nodes, tokenizer_dirs,
                                                                                       tmp_path):
    from safetensors.torch import load_file, save_file

    from vlreg.build import build
    from vlreg.runner.checkpoint import CheckpointError, Checkpointer

    torch.manual_seed(6)
    encoder_file = tmp_path / "encoder.safetensors"
    save_file(build("encoder", tiny_nodes["image"]).state_dict(), str(encoder_file))
    llm_dir = tmp_path / "opt"
    build("llm", tiny_nodes["opt"]).model.save_pretrained(llm_dir)
    node = {"encoder": {**tiny_nodes["image"], "checkpoint": str(encoder_file)},
            "bridge": {**tiny_nodes["qformer"], "text_branch": False},
            "llm": {**tiny_nodes["opt"], "path": str(llm_dir), "config": None}, "losses": [{"name": "lm"}]}
    model = VisionLanguageModel.from_config(node)
    encoder_sha = hashlib.sha256(encoder_file.read_bytes()).hexdigest()
    assert model.encoder.weight_source() == {"source": str(encoder_file.resolve()), "sha256": encoder_sha}
    llm_files = sorted(llm_dir.glob("*.safetensors"))
    listing = "".join(f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in llm_files)
    assert model.llm.weight_source() == {"source": str(llm_dir), "sha256": hashlib.sha256(listing.encode()).hexdigest()}

    saved = save_run(tmp_path / "run", node, model)
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["sources"] == {"encoder": model.encoder.weight_source(), "llm": model.llm.weight_source()}
    assert manifest["frozen"] == [] and not (saved / "frozen.safetensors").exists()
    assert all(k.startswith("bridge.") for k in load_file(saved / "trainable.safetensors"))
    assert vlreg.load_model(tmp_path / "run").generate({"image": torch.zeros(1, 3, 32, 32)}, max_new_tokens=3)

    # resume: the same files load; a changed encoder file or LLM file is refused before any weight loads
    Checkpointer(tmp_path / "run" / "checkpoints").load(saved, VisionLanguageModel.from_config(node))
    save_file({k: v + 1 for k, v in load_file(encoder_file).items()}, str(encoder_file))
    with pytest.raises(CheckpointError, match=r"frozen weights of 'encoder' differ: the checkpoint was trained on .*"
                                              r"encoder.safetensors \(sha256 " + encoder_sha[:12]):
        Checkpointer(tmp_path / "run" / "checkpoints").load(saved, VisionLanguageModel.from_config(node))
    weights = llm_files[0]
    tensors = load_file(weights)
    save_file({k: v * 2 for k, v in tensors.items()}, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="frozen weights of 'llm' differ"):
        Checkpointer(tmp_path / "run" / "checkpoints").load(saved, VisionLanguageModel.from_config(node))


def test_incomplete_or_missing_sources_are_clear_errors(tmp_path):
    from transformers import Blip2ForImageTextRetrieval

    Blip2ForImageTextRetrieval(blip2_config("opt", retrieval=True)).save_pretrained(tmp_path / "retrieval")
    with pytest.raises(UserError, match="is not a complete Blip2ForConditionalGeneration checkpoint: it lacks "
                                        "language_model"):
        vlreg.load_model(tmp_path / "retrieval")  # transformers would fill the LLM with random weights
    with pytest.raises(ConfigError, match="nope.pth does not exist"):
        vlreg.load_model(tmp_path / "nope.pth")
