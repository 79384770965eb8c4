"""Interop parity for the layouts real checkpoints have: FlanT5 (T5 v1.1, untied), OPT with projected
embeddings (OPT-350m) and a Q-Former with cross-attention in every layer.

Each model is tiny and random, saved with ``save_pretrained`` and read back by vlreg; greedy tokens must be
identical to transformers' and logits agree within 1e-4. The reference is always transformers' own reading
of the same files.
"""

from __future__ import annotations

import json

import pytest
import torch

import vlreg
from tests.vlreg.interop.test_interop import (IMAGE_TOKEN, TEXTS, VOCAB, assert_same_decoder_only_logits, assert_same_encoder_decoder_logits,
                          assert_same_greedy_tokens, perturb, pixels)
from vlreg.errors import ConfigError


def blip2(text_config, queries: int = 4, image_size: int = 28, patch_size: int = 14, cross_every: int = 2):
    """A random transformers BLIP-2 (eval mode) around ``text_config``, weights moved off their initialisation."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2VisionConfig

    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=image_size, patch_size=patch_size)
    qformer = Blip2QFormerConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                                 cross_attention_frequency=cross_every)
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text_config,
                                                      num_query_tokens=queries, image_token_index=IMAGE_TOKEN))
    perturb(model)
    return model.eval()


def save(model, directory, tokenizer_dir: str):
    """``model.save_pretrained(directory)`` with the tokenizer beside it; returns the directory."""
    from transformers import AutoTokenizer

    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    return directory


def as_on_the_hub(directory) -> None:
    """Make a saved FlanT5 BLIP-2 look like the hub's (``Salesforce/blip2-flan-t5-xl``): a text config that
    says ``tie_word_embeddings: false`` and nothing about output scaling, with the keys of older releases
    that T5's config class no longer defines, and an output head of its own."""
    from safetensors.torch import load_file, save_file

    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    config["text_config"].pop("scale_decoder_outputs", None)
    config["text_config"].update(tie_word_embeddings=False, n_positions=512, output_past=True,
                                 _name_or_path="google/flan-t5-xl", architectures=["T5ForConditionalGeneration"])
    config_file.write_text(json.dumps(config))
    weights = directory / "model.safetensors"
    state = load_file(weights)
    shared = state["language_model.shared.weight"]
    state["language_model.lm_head.weight"] = torch.randn(shared.shape, generator=torch.Generator().manual_seed(9))
    save_file(state, weights, metadata={"format": "pt"})


def head_tied(language_model) -> bool:
    return language_model.get_output_embeddings().weight is language_model.get_input_embeddings().weight


# -- FlanT5: T5 v1.1's gated-gelu, tie_word_embeddings=False ----------------------------------------------------
@pytest.mark.parametrize("layout", ["saved", "hub"])
def test_flant5_layout_loads_generates_and_exports_as_transformers(tokenizer_dirs, tmp_path, layout):
    """``saved``: as this transformers saves a FlanT5-style BLIP-2 built from its config (no output scaling;
    transformers 5 ties the head to the embeddings on build); ``hub``: as the hub's checkpoints are (see
    :func:`as_on_the_hub`), with a head of its own."""
    from transformers import Blip2ForConditionalGeneration, T5Config

    text = T5Config(vocab_size=VOCAB, d_model=24, d_kv=8, d_ff=48, num_heads=3, num_layers=2, num_decoder_layers=2,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0)
    directory = save(blip2(text), tmp_path / "blip2", tokenizer_dirs["t5"])
    if layout == "hub":
        as_on_the_hub(directory)
    hf = Blip2ForConditionalGeneration.from_pretrained(directory).eval()
    assert hf.config.text_config.scale_decoder_outputs is False  # transformers reads it as FlanT5: no rescaling
    assert layout == "saved" or not head_tied(hf.language_model)  # the hub's head is its own

    model = vlreg.load_model(directory)
    assert model.llm.model.config.scale_decoder_outputs is False
    assert head_tied(model.llm.model) is head_tied(hf.language_model)
    images = pixels()
    tokens = assert_same_greedy_tokens(hf, model, images)
    assert_same_encoder_decoder_logits(hf, model, images)

    exported = vlreg.interop.to_transformers(model)
    assert exported.config.text_config.scale_decoder_outputs is False
    assert head_tied(exported.language_model) is head_tied(hf.language_model)
    assert torch.equal(assert_same_greedy_tokens(exported, model, images), tokens)
    vlreg.interop.save_transformers(model, tmp_path / "out")
    again = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    assert torch.equal(assert_same_greedy_tokens(again, vlreg.load_model(tmp_path / "out"), images), tokens)


# -- OPT with word_embed_proj_dim != hidden_size (OPT-350m: project_in, project_out) ---------------------------
def test_opt_with_projected_embeddings_equals_transformers(tokenizer_dirs, tiny_nodes, tmp_path):
    """OPT-350m's layout: 16-wide embeddings, projected in to the 32-wide decoder and out again, LayerNorm after
    each block. The bridge writes prompts 16 wide. Transformers' BLIP-2 projects the queries to ``hidden_size``
    and so cannot hold this LLM: exporting is a clear error."""
    from transformers import OPTConfig, OPTForCausalLM

    from vlreg.models.assembly import VisionLanguageModel

    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(vocab_size=VOCAB, hidden_size=32, word_embed_proj_dim=16, ffn_dim=64,
                                   num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                                   do_layer_norm_before=False, dropout=0.0))
    perturb(opt)
    opt.save_pretrained(tmp_path / "opt")
    opt = OPTForCausalLM.from_pretrained(tmp_path / "opt").eval()
    assert opt.model.decoder.project_in is not None and opt.model.decoder.project_out is not None
    node = {"encoder": tiny_nodes["image"], "bridge": {**tiny_nodes["qformer"], "text_branch": False},
            "llm": {"name": "causal_lm", "path": str(tmp_path / "opt"), "tokenizer": tokenizer_dirs["opt"]}}
    model = VisionLanguageModel.from_config(node).eval()
    assert model.llm.width == 16 and model.bridge.llm_proj.out_features == 16
    perturb(model.bridge, seed=5)

    llm, tokenizer = model.llm, model.llm.tokenizer
    with torch.no_grad():
        prompts = model.prompts(model.visual_tokens({"image": pixels(size=32)}))
        ours = llm.generate_tokens(prompts, TEXTS, max_new_tokens=8)
        out = llm(prompts, TEXTS)
    for row, text in enumerate(TEXTS):
        context = torch.tensor([tokenizer(text)["input_ids"]])
        embeds = torch.cat([prompts.embeds[row:row + 1], opt.get_input_embeddings()(context)], dim=1)
        with torch.no_grad():
            theirs = opt.generate(inputs_embeds=embeds, max_new_tokens=8, do_sample=False, num_beams=1,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=llm.pad_token_id)[0]
            sequence = torch.tensor([tokenizer("")["input_ids"] + tokenizer(text, add_special_tokens=False)["input_ids"]
                                     + [tokenizer.eos_token_id]])
            captioned = torch.cat([prompts.embeds[row:row + 1], opt.get_input_embeddings()(sequence)], dim=1)
            logits = opt(inputs_embeds=captioned).logits[0]
        assert theirs.shape[0] >= 3 and torch.equal(ours[row, :len(theirs)], theirs)
        assert (ours[row, len(theirs):] == llm.pad_token_id).all()
        torch.testing.assert_close(out.logits[row, :len(logits)], logits, rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match=r"projects the queries to the text config's hidden_size \(32\), but this "
                                          r"LLM's input embeddings are 16 wide"):
        vlreg.interop.to_transformers(model)


# -- a Q-Former with cross-attention in every layer, 8 queries, 48-px images --------------------------------------
def test_qformer_with_cross_attention_in_every_layer_equals_transformers(tokenizer_dirs, tmp_path):
    from transformers import Blip2ForConditionalGeneration, OPTConfig

    text = OPTConfig(vocab_size=VOCAB, hidden_size=24, word_embed_proj_dim=24, ffn_dim=48, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=64, dropout=0.0)
    directory = save(blip2(text, queries=8, image_size=48, patch_size=16, cross_every=1), tmp_path / "blip2",
                     tokenizer_dirs["opt"])
    hf = Blip2ForConditionalGeneration.from_pretrained(directory).eval()
    model = vlreg.load_model(directory)
    assert model.bridge.num_queries == 8 and all(layer.cross_attn is not None for layer in model.bridge.layers)
    images = pixels(size=48)
    tokens = assert_same_greedy_tokens(hf, model, images)
    assert_same_decoder_only_logits(hf, model, images)

    exported = vlreg.interop.to_transformers(model)
    assert exported.config.qformer_config.cross_attention_frequency == 1
    original = hf.state_dict()
    assert set(exported.state_dict()) == set(original)
    assert all(torch.equal(value, original[key]) for key, value in exported.state_dict().items())
    vlreg.interop.save_transformers(model, tmp_path / "out")
    again = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    assert torch.equal(assert_same_greedy_tokens(again, vlreg.load_model(tmp_path / "out"), images), tokens)
