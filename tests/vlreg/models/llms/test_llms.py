"""The frozen LLM adapters: text layout, loss, prefix-LM splits, generation, scoring, loading, dry builds."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import vlreg  # noqa: F401  (installs the torchvision guard before transformers loads)
from vlreg.build import build
from vlreg.config import load_config, to_plain
from vlreg.errors import ConfigError, InputError
from vlreg.models.base import Prompts, dry_build
from vlreg.models.llms.common import IGNORE
from vlreg.models.llms.seq2seq import split_at_word
from vlreg.models.tokenizers import save_tokenizer, train_tokenizer
from vlreg.registry import registry

WIDTH = 64  # hidden size of configs/llms/*_tiny.yaml
CONFIGS = {"opt": "llms/opt_tiny.yaml", "t5": "llms/t5_tiny.yaml"}
ENGLISH = ("a the photo of red blue green yellow white black dog cat bird car horse man woman on in at with "
           "grass road table bed small big running sitting near what colour is it question answer short").split()


def corpus(n: int = 3000) -> list[str]:
    """English words among made-up ones, enough text for 1000-token vocabularies."""
    rng = random.Random(0)
    syllables = "ka lo mi ne su ta ri po ve zu da fi go hu je ba co pe wa xo yi".split()
    made = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(1500)]
    lines = []
    for _ in range(n):
        words = [rng.choice(ENGLISH if rng.random() < 0.6 else made) for _ in range(rng.randint(4, 12))]
        lines.append(" ".join(words) + rng.choice([".", "?", ""]))
    return lines




@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    lines = corpus()
    return {style: str(save_tokenizer(train_tokenizer(lines, style, vocab_size=1000), root / style)) for style in CONFIGS}


@pytest.fixture
def tiny(tokenizer_dirs):
    """``tiny(style, **overrides)``: the tiny config of ``style`` with the test tokenizer, seeded weights."""
    def make(style: str, **overrides):
        cfg = load_config(CONFIGS[style], [f"tokenizer={tokenizer_dirs[style]}"])
        torch.manual_seed(0)
        return build("llm", {**to_plain(cfg), **overrides})
    return make


def prompts_of(batch: int, count: int = 3, seed: int = 1, mask: torch.Tensor | None = None) -> Prompts:
    gen = torch.Generator().manual_seed(seed)
    return Prompts(torch.randn(batch, count, WIDTH, generator=gen), mask)


def raw_inputs(llm, prompts: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """``[prompts; embedded ids]`` for one sample, built by hand."""
    return torch.cat([prompts, llm.model.get_input_embeddings()(torch.tensor([ids]))], dim=1)


# -- text layout -----------------------------------------------------------------------
def test_decoder_only_targets_are_text_and_eos_only(tiny):
    llm = tiny("opt", prompt="a photo of")
    tok = llm.tokenizer
    assert tok.convert_ids_to_tokens(tok("a photo of").input_ids) == ["</s>", "a", "Ġphoto", "Ġof"]
    ids = tok.convert_tokens_to_ids
    out = llm(prompts_of(3), ["red dog", "a cat on the grass", "what colour is it?"], [None, None, "blue"])
    # 3 prompts, then "</s> a Ġphoto Ġof" (4 tokens); position s is scored against token s+1
    expected = [
        [IGNORE] * 6 + ids(["Ġred", "Ġdog", "</s>"]) + [IGNORE] * 5,
        [IGNORE] * 6 + ids(["Ġa", "Ġcat", "Ġon", "Ġthe", "Ġgrass", "</s>"]) + [IGNORE] * 2,
        # the context "a photo of what colour is it?" is 9 tokens; the answer follows it
        [IGNORE] * 11 + ids(["Ġblue", "</s>"]) + [IGNORE],
    ]
    assert out.targets.tolist() == expected
    assert out.logits.shape == (3, 14, 1000) and out.logits.dtype == torch.float32


def test_targets_are_cut_to_max_text_length_and_end_with_eos(tiny):
    llm = tiny("opt", max_text_length=4)
    out = llm(prompts_of(1), ["red dog on the grass near a car"])
    scored = out.targets[out.targets != IGNORE]
    assert llm.tokenizer.convert_ids_to_tokens(scored) == ["red", "Ġdog", "Ġon", "</s>"]
    t5 = tiny("t5")
    out = t5(prompts_of(1), ["what colour is it?"], ["blue"])
    assert out.targets.tolist() == [t5.tokenizer("blue").input_ids]  # T5's own encoding: pieces then </s>


# -- loss and logits against transformers called by hand ------------------------------------
# A batch with padding and one sequence alone round differently in fp32: the tiny T5's logits (up to
# about 32) differ by up to 1.3e-5 between the two, so logits are compared to 1e-4.
LOGITS_ATOL = 1e-4


def test_decoder_only_logits_and_loss_match_transformers(tiny):
    llm = tiny("opt", prompt="a photo of")
    tok = llm.tokenizer
    mask = torch.tensor([[True, True, True], [False, True, True]])
    prompts = prompts_of(2, mask=mask)
    texts = ["red dog", "a small cat sitting on the big table"]
    out = llm(prompts, texts)
    context = tok("a photo of").input_ids
    losses, count = 0.0, 0
    for i, text in enumerate(texts):
        ids = tok(f"a photo of {text}").input_ids + [tok.eos_token_id]
        attention = torch.cat([mask[i:i + 1].long(), torch.ones(1, len(ids), dtype=torch.long)], dim=1)
        logits = llm.model(inputs_embeds=raw_inputs(llm, prompts.embeds[i:i + 1], ids), attention_mask=attention).logits[0]
        real = attention[0].bool()
        assert torch.allclose(out.logits[i, : len(real)][real], logits[real], atol=LOGITS_ATOL)
        first = 3 + len(context) - 1  # the position that predicts the first text token
        predicted = logits[first: first + len(ids) - len(context)]
        losses = losses + F.cross_entropy(predicted, torch.tensor(ids[len(context):]), reduction="sum")
        count += len(ids) - len(context)
    assert torch.allclose(llm.loss(prompts, texts), losses / count, atol=1e-5)


def test_encoder_decoder_logits_and_loss_match_transformers(tiny):
    llm = tiny("t5", prompt="Question:")
    tok = llm.tokenizer
    prompts = prompts_of(2)
    questions, answers = ["what colour is it?", "what is on the road?"], ["blue", "a big black horse"]
    out = llm(prompts, questions, answers)
    total, count = 0.0, 0
    for i, (question, answer) in enumerate(zip(questions, answers)):
        labels = torch.tensor([tok(answer).input_ids])
        reference = llm.model(inputs_embeds=raw_inputs(llm, prompts.embeds[i:i + 1], tok(f"Question: {question}").input_ids),
                              labels=labels)
        assert torch.allclose(out.logits[i, : labels.shape[1]], reference.logits[0], atol=LOGITS_ATOL)
        total, count = total + reference.loss * labels.shape[1], count + labels.shape[1]
    assert torch.allclose(llm.loss(prompts, questions, answers), total / count, atol=1e-5)


# -- prefix language modelling --------------------------------------------------------------
def test_split_at_word_is_uniform_over_word_boundaries():
    text = "a red dog runs"
    assert split_at_word(text, 0.0) == ("", "a red dog runs")
    assert split_at_word(text, 0.5) == ("a red", "dog runs")
    assert split_at_word(text, 0.999) == ("a red dog", "runs")
    assert split_at_word("  one  ", 0.9) == ("", "one")
    assert split_at_word("", 0.3) == ("", "")
    draws = torch.rand(4000, generator=torch.Generator().manual_seed(0)).tolist()
    counts = [0] * 4
    for draw in draws:
        counts[len(split_at_word(text, draw)[0].split())] += 1
    assert all(850 < c < 1150 for c in counts), counts


def test_prefix_lm_split_is_seeded_and_mixes_with_text_output(tiny):
    llm = tiny("t5")
    tok = llm.tokenizer
    prompts = prompts_of(3)
    texts = ["a red dog sitting on the grass", "what colour is it?", "a big black horse near a car"]
    outputs = [None, "blue", None]
    draws = torch.rand(3, generator=torch.Generator().manual_seed(7)).tolist()
    prefix0, suffix0 = split_at_word(texts[0], draws[0])
    prefix2, suffix2 = split_at_word(texts[2], draws[2])
    out = llm(prompts, texts, outputs, generator=torch.Generator().manual_seed(7))
    decoded = [tok.decode(row[row != IGNORE], skip_special_tokens=True) for row in out.targets]
    assert decoded == [suffix0, "blue", suffix2]
    seeded = llm.loss(prompts, texts, outputs, generator=torch.Generator().manual_seed(7))
    explicit = llm.loss(prompts, [prefix0, texts[1], prefix2], [suffix0, "blue", suffix2])
    assert torch.allclose(seeded, explicit, atol=1e-6)
    torch.manual_seed(3)
    first = llm.loss(prompts, texts)
    torch.manual_seed(3)
    assert torch.equal(first, llm.loss(prompts, texts))  # the global RNG without a generator


# -- frozen, precision -------------------------------------------------------------------
@pytest.mark.parametrize("style", ["opt", "t5"])
def test_gradients_reach_the_prompts_and_no_weight(tiny, style):
    llm = tiny(style)
    llm.train()
    assert not any(module.training for module in llm.modules())
    assert llm.num_parameters(trainable_only=True) == 0 and llm.num_parameters() > 0
    prompts = prompts_of(2)
    prompts.embeds.requires_grad_(True)
    llm.loss(prompts, ["a red dog on the grass", "a cat"], ["blue", None]).backward()
    grad = prompts.embeds.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad.abs().sum(-1) > 0).all()
    assert all(p.grad is None and not p.requires_grad for p in llm.parameters())


@pytest.mark.parametrize("style", ["opt", "t5"])
def test_bf16_weights_stay_close_to_fp32(tiny, style):
    full, half = tiny(style), tiny(style, precision="bf16")
    half.model.load_state_dict(full.model.state_dict())
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    prompts = prompts_of(2)
    texts, answers = ["what colour is it?", "what is on the table?"], ["blue", "a small cat"]
    out = half(prompts, texts, answers)
    assert out.logits.dtype == torch.float32
    reference = full.loss(prompts, texts, answers)
    assert abs(half.loss(prompts, texts, answers) - reference) < 0.02 * reference


def test_grad_checkpointing_recomputes_layers_with_equal_gradients(tiny):
    plain, checkpointed = tiny("opt", frozen=False), tiny("opt", frozen=False, grad_checkpointing=True)
    grads = []
    for llm in (plain, checkpointed):
        llm.train()
        calls = []
        llm.model.model.decoder.layers[0].fc1.register_forward_hook(lambda *args: calls.append(1))
        llm.loss(prompts_of(2), ["a red dog", "a cat on the grass"]).backward()
        grads.append(llm.model.model.decoder.layers[0].fc1.weight.grad)
        assert len(calls) == (2 if llm is checkpointed else 1)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# -- generation ---------------------------------------------------------------------------
def reference_tokens(llm, prompts: Prompts, texts: list[str | None], **options) -> list[torch.Tensor]:
    """transformers' generate() on [prompts; tokens] built by hand, one unpadded sample at a time."""
    tok = llm.tokenizer
    rows = []
    for i, text in enumerate(texts):
        embeds = raw_inputs(llm, prompts.embeds[i:i + 1], tok(text or "").input_ids)
        out = llm.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                 eos_token_id=tok.eos_token_id, pad_token_id=llm.pad_token_id, **options)
        rows.extend(out[:, 1:] if llm.is_encoder_decoder else out)
    return rows


@pytest.mark.parametrize("style", ["opt", "t5"])
@pytest.mark.parametrize("options", [{}, {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5}],
                         ids=["greedy", "beam"])
def test_generation_matches_transformers_on_hand_built_inputs(tiny, style, options):
    llm = tiny(style)
    prompts = prompts_of(3)
    for texts in (["what colour is it?", "a", "what is on the big table near the road?"], None):
        tokens = llm.generate_tokens(prompts, texts, max_new_tokens=8, **options)
        expected = reference_tokens(llm, prompts, texts or [None] * 3, max_new_tokens=8, **options)
        assert len(tokens) == len(expected) == 3 * options.get("num_return_sequences", 1)
        assert tokens.shape[1] <= 8
        for row, reference in zip(tokens, expected):
            assert torch.equal(row[: len(reference)], reference)
            assert (row[len(reference):] == llm.pad_token_id).all()
        decoded = [t.strip() for t in llm.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        assert llm.generate(prompts, texts, max_new_tokens=8, **options) == decoded


@pytest.mark.parametrize("style", ["opt", "t5"])
def test_sampling_limits_and_nucleus(tiny, style):
    llm = tiny(style)
    prompts, texts = prompts_of(2), ["what colour is it?", "a photo of"]
    greedy = llm.generate_tokens(prompts, texts, max_new_tokens=6)
    # a nucleus that holds only the most likely token, or a near-zero temperature, is greedy decoding
    assert torch.equal(llm.generate_tokens(prompts, texts, max_new_tokens=6, do_sample=True, top_p=1e-6), greedy)
    assert torch.equal(llm.generate_tokens(prompts, texts, max_new_tokens=6, do_sample=True, temperature=1e-4), greedy)
    torch.manual_seed(0)
    sampled = llm.generate_tokens(prompts, texts, max_new_tokens=6, do_sample=True, top_p=0.9, num_return_sequences=3)
    torch.manual_seed(0)
    assert torch.equal(sampled, llm.generate_tokens(prompts, texts, max_new_tokens=6, do_sample=True, top_p=0.9,
                                                    num_return_sequences=3))
    assert sampled.shape[0] == 6 and sampled.shape[1] <= 6
    exact = llm.generate_tokens(prompts, texts, max_new_tokens=5, min_new_tokens=5)
    assert exact.shape == (2, 5) and not (exact == llm.tokenizer.eos_token_id).any()
    with pytest.raises(ValueError, match="num_return_sequences"):
        llm.generate(prompts, texts, num_return_sequences=2)


# -- scoring ------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["opt", "t5"])
def test_score_is_the_log_likelihood_of_each_candidate(tiny, style):
    llm = tiny(style, prompt="Question:")
    prompts = prompts_of(2, mask=torch.tensor([[True, True, True], [False, True, True]]))
    questions, candidates = ["what colour is it?", "what is on the road"], ["blue", "a big black horse", "red"]
    scores = llm.score(prompts, questions, candidates)
    repeated = Prompts(prompts.embeds.repeat_interleave(3, 0), prompts.mask.repeat_interleave(3, 0))
    expected = llm(repeated, [q for q in questions for _ in candidates], candidates * 2).log_likelihood().view(2, 3)
    assert scores.shape == (2, 3)
    assert torch.allclose(scores, expected, atol=1e-4)


@pytest.mark.parametrize("style", ["opt", "t5"])
def test_prompts_trained_through_the_frozen_llm_make_it_answer(tiny, style):
    llm = tiny(style)
    prompts = torch.nn.Parameter(torch.randn(1, 4, WIDTH, generator=torch.Generator().manual_seed(2)))
    optimizer = torch.optim.Adam([prompts], lr=0.1)
    question, candidates = ["what colour is it?"], ["red", "blue", "green"]
    losses = []
    for _ in range(50):
        loss = llm.loss(Prompts(prompts), question, ["blue"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        assert llm.score(Prompts(prompts), question, candidates).argmax().item() == 1
        assert llm.generate(Prompts(prompts), question, max_new_tokens=5) == ["blue"]


# -- loading ------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["opt", "t5"])
def test_save_pretrained_directory_loads_by_path(tiny, style, tmp_path):
    llm = tiny(style)
    llm.model.save_pretrained(tmp_path)
    llm.tokenizer.save_pretrained(tmp_path)
    name = "causal_lm" if style == "opt" else "seq2seq_lm"
    loaded = build("llm", {"name": name, "path": str(tmp_path)})
    assert loaded.num_parameters() == llm.num_parameters() and loaded.frozen
    prompts, texts = prompts_of(2), ["a red dog", "a cat on the grass"]
    assert torch.allclose(loaded(prompts, texts, ["blue", "red"]).logits, llm(prompts, texts, ["blue", "red"]).logits,
                          atol=1e-6)
    config = to_plain(load_config(CONFIGS[style]).config)
    assert build("llm", {"name": name, "path": str(tmp_path), "config": config}).width == WIDTH
    wrong = {**config, "vocab_size": 2000}
    with pytest.raises(ConfigError, match="disagrees.*vocab_size: config 2000, checkpoint 1000"):
        build("llm", {"name": name, "path": str(tmp_path), "config": wrong})
    with pytest.raises(ConfigError, match="cannot load"):
        build("llm", {"name": name, "path": str(tmp_path / "missing")})


def opt_parameters(c: dict) -> int:
    """OPT with a tied head: embeddings, learned positions (2 offset), pre-LN layers, final LN."""
    d, f = c["hidden_size"], c["ffn_dim"]
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    return c["vocab_size"] * d + (c["max_position_embeddings"] + 2) * d + c["num_hidden_layers"] * layer + 2 * d


def t5_parameters(c: dict) -> int:
    """T5 v1.1 with an untied head: no biases, gated FFN, RMS norms, relative bias in the first layer of each stack."""
    d, f, inner = c["d_model"], c["d_ff"], c["num_heads"] * c["d_kv"]
    attention, ffn, bias = 4 * d * inner, 3 * d * f, c["relative_attention_num_buckets"] * c["num_heads"]
    encoder = c["num_layers"] * (attention + ffn + 2 * d) + bias + d
    decoder = c["num_decoder_layers"] * (2 * attention + ffn + 3 * d) + bias + d
    return 2 * c["vocab_size"] * d + encoder + decoder


@pytest.mark.parametrize("file, count, width, dtype", [
    ("opt-2.7b", 2_651_596_800, 2560, torch.float16),  # auto: the run's precision (here an fp16 GPU run's)
    ("opt-6.7b", 6_658_473_984, 4096, torch.float16),
    ("flant5-xl", 2_849_757_184, 2048, torch.bfloat16),  # bf16 always: T5 overflows in fp16
    ("flant5-xxl", 11_135_332_352, 4096, torch.bfloat16),
])
def test_paper_scale_configs_dry_build_with_exact_sizes(file, count, width, dtype):
    from vlreg.device import frozen_precision

    cfg = load_config(f"llms/{file}.yaml")
    with dry_build(), frozen_precision("fp16"):
        llm = build("llm", cfg)
    formula = opt_parameters if cfg.config.model_type == "opt" else t5_parameters
    assert llm.num_parameters() == count == formula(cfg.config)
    assert llm.width == width and llm.token_embeddings().shape == (cfg.config.vocab_size, width)
    assert {p.device.type for p in llm.parameters()} == {"meta"} and {p.dtype for p in llm.parameters()} == {dtype}
    assert llm._tokenizer is None  # nothing was read from the hub


def test_mistakes_are_clear_config_errors(tiny):
    opt = to_plain(load_config(CONFIGS["opt"]).config)
    cases = [
        ({"name": "causal_lm"}, "set path: or config:"),
        ({"name": "causal_lm", "config": {"vocab_size": 10}}, "config needs model_type"),
        ({"name": "causal_lm", "config": {"model_type": "t5"}}, "cannot build model_type 't5' with AutoModelForCausalLM"),
        ({"name": "causal_lm", "config": opt, "frozen": False, "precision": "bf16"}, "frozen weights only"),
        ({"name": "causal_lm", "config": opt, "grad_checkpointing": True}, "trainable LLM"),
        ({"name": "causal_lm", "config": opt, "max_text_length": 1}, "at least 2"),
    ]
    for node, message in cases:
        with pytest.raises(ConfigError, match=message):
            build("llm", node)
    with dry_build(), pytest.raises(ConfigError, match="dry build builds the architecture from config"):
        build("llm", {"name": "seq2seq_lm", "path": "google/flan-t5-xl"})
    unset = build("llm", load_config(CONFIGS["opt"]))  # tokenizer: ??? left for the caller
    with pytest.raises(ConfigError, match="no tokenizer"):
        unset.generate(prompts_of(1))
    with pytest.raises(InputError, match="set the bridge's llm_width to 64"):  # prompts that do not fit
        tiny("t5").loss(Prompts(torch.randn(1, 2, 32)), ["a cat"])


def test_registered_and_import_light():
    from vlreg.models.llms.causal import CausalLM
    from vlreg.models.llms.seq2seq import Seq2SeqLM

    assert registry("llm").get("causal_lm") is CausalLM and registry("llm").get("seq2seq_lm") is Seq2SeqLM
    assert registry("llm").summary("causal_lm").startswith("A frozen decoder-only LLM")
    assert "max_text_length:" in CausalLM.__doc__ and "max_text_length:" in Seq2SeqLM.__doc__
    code = ("import sys, vlreg.models.llms.causal, vlreg.models.llms.seq2seq\n"
            "print('transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
