"""The Q-Former bridge: parity with transformers' BLIP-2, masks, stage-1 training, sizes, checkpoints."""

import pytest
import torch

import vlreg  # noqa: F401  (installs the torchvision guard before transformers is imported)
from vlreg.build import build, validate
from vlreg.config import load_config, to_plain
from vlreg.errors import ConfigError
from vlreg.models.bridges.qformer_keys import from_lavis, from_transformers, to_lavis, to_transformers
from vlreg.models.base import Features, dry_build
from vlreg.models.bridges.qformer import QFormer
from vlreg.models.bridges.qformer_layers import joint_attention_mask
from vlreg.models.tokenizers import save_tokenizer, train_tokenizer
from vlreg.objectives.blip2_stage1 import Blip2Stage1

CAPTIONS = [
    "a red circle on the left",
    "a blue square at the top",
    "two green triangles in the corner",
    "a yellow star near the bottom",
    "one small black dot in the middle",
    "three white lines across the picture",
]
TINY = dict(num_queries=4, num_layers=3, hidden_size=32, num_heads=4, intermediate_size=64,
            cross_attention_every=2, vision_width=16, max_position_embeddings=40, embed_dim=16)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    lines = [f"{c} {w}" for c in CAPTIONS for w in ("today", "again", "here", "")]
    return str(save_tokenizer(train_tokenizer(lines, "bert", vocab_size=120), tmp_path_factory.mktemp("bert_tok")))


def tiny_qformer(tokenizer_dir=None, **overrides):
    torch.manual_seed(0)
    node = {"name": "qformer", **TINY, "dropout": 0.0, **overrides}
    if tokenizer_dir is not None:
        node["tokenizer"] = tokenizer_dir
    return build("bridge", node).eval()


def transformers_blip2(retrieval: bool, vocab_size: int = 120):
    """A tiny transformers BLIP-2 with TINY's Q-Former, built from configs (random weights)."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval,
                              Blip2QFormerConfig, Blip2VisionConfig, OPTConfig)

    torch.manual_seed(1)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=28, patch_size=14,
                                        initializer_range=0.02),  # its default, 1e-10, makes every token alike
        qformer_config=Blip2QFormerConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                          intermediate_size=64, cross_attention_frequency=2,
                                          max_position_embeddings=40, vocab_size=vocab_size,
                                          use_qformer_text_input=retrieval),
        text_config=OPTConfig(vocab_size=60, hidden_size=24, num_hidden_layers=1, ffn_dim=48,
                              num_attention_heads=2, word_embed_proj_dim=24, max_position_embeddings=64),
        num_query_tokens=4, image_text_hidden_size=16,
        image_token_index=None if retrieval else 59)  # with an image token, retrieval expects it in input_ids
    model = (Blip2ForImageTextRetrieval if retrieval else Blip2ForConditionalGeneration)(config).eval()
    with torch.no_grad():  # transformers initialises LayerNorms to identity; make them matter
        for name, param in model.named_parameters():
            if "layernorm" in name.lower() or "query_tokens" in name:
                param.normal_(0.5 if name.endswith("weight") else 0.0, 0.2)
    return model


# -- 1. parity with transformers' Blip2ForConditionalGeneration -------------------------------
def test_query_outputs_and_prompts_equal_transformers_blip2():
    hf = transformers_blip2(retrieval=False)
    ours = tiny_qformer(text_branch=False, llm_width=24)
    hf_state = hf.state_dict()
    ours.load_state_dict(from_transformers(hf_state), strict=True)
    qformer_keys = {k for k in hf_state if k.startswith(("query_tokens", "qformer.", "language_projection."))}
    assert set(to_transformers(ours.state_dict())) == qformer_keys

    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        out = hf.get_image_features(pixels)
        features = Features(out.last_hidden_state)
        assert torch.allclose(ours.query_states(features), out.qformer_outputs.last_hidden_state, atol=1e-5)
        prompts = ours(features)
    assert prompts.embeds.shape == (3, 4, 24)
    assert torch.allclose(prompts.embeds, out.pooler_output, atol=1e-5)


def test_visual_mask_hides_tokens_from_the_queries():
    ours = tiny_qformer(text_branch=False, llm_width=24)
    tokens = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
    with torch.no_grad():
        masked = ours.query_states(Features(tokens, mask))
        cut = ours.query_states(Features(tokens[:1, :5]))
        garbage = ours.query_states(Features(torch.cat([tokens[:, :5], 100 * torch.randn(2, 2, 16)], 1), mask))
    assert torch.allclose(masked[:1], cut, atol=1e-5)
    assert torch.allclose(masked[0], garbage[0], atol=1e-5) and not torch.allclose(masked[1], garbage[1], atol=1e-3)


# -- 2. parity with transformers' Blip2ForImageTextRetrieval ----------------------------------
def test_itc_similarities_and_itm_logits_equal_transformers_retrieval(tokenizer_dir):
    ours = tiny_qformer(tokenizer_dir)
    vocab = ours.word_embeddings.num_embeddings
    hf = transformers_blip2(retrieval=True, vocab_size=vocab)
    missing, unexpected = ours.load_state_dict(from_transformers(hf.state_dict()), strict=False)
    assert not unexpected
    assert set(missing) == {"temp", "lm_head.dense.weight", "lm_head.dense.bias", "lm_head.norm.weight",
                            "lm_head.norm.bias", "lm_head.bias"}  # transformers has no ITG head, no temperature

    texts = ["a red circle on the left today", "a blue square", "two green triangles in the corner here"]
    ids, mask = ours.tokenize(texts)
    assert mask.dtype == torch.bool and not mask.all()  # padding is exercised
    pixels = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        features = Features(hf.vision_model(pixels).last_hidden_state)
        itc = hf(pixels, ids, mask.long(), use_image_text_matching_head=False).logits_per_image
        itm = hf(pixels, ids, mask.long(), use_image_text_matching_head=True).logits_per_image
        similarity = ours.similarity(ours.image_embeds(features), ours.text_embeds(texts))
        logits = ours.itm_logits(features, texts)
    assert similarity.shape == (3, 3) and logits.shape == (3, 2)
    assert torch.allclose(similarity, itc, atol=1e-5)
    assert torch.allclose(logits, itm, atol=1e-5)


# -- 3. the three masks -----------------------------------------------------------------------
def test_mask_patterns_are_exact():
    text_mask = torch.tensor([[True, True, False]])  # one padding token; 2 queries
    T, F = True, False
    expected = {
        "bidirectional": [[T, T, T, T, F]] * 5,
        "causal": [[T, T, F, F, F], [T, T, F, F, F], [T, T, T, F, F], [T, T, T, T, F], [T, T, T, T, F]],
        "unimodal": [[T, T, F, F, F], [T, T, F, F, F], [F, F, T, T, F], [F, F, T, T, F], [F, F, T, T, F]],
    }
    for mode, rows in expected.items():
        assert joint_attention_mask(mode, 2, text_mask).tolist() == [[rows]], mode


def test_masks_numerically(tokenizer_dir):
    ours = tiny_qformer(tokenizer_dir)
    features = Features(torch.randn(2, 5, 16))
    ids, mask = ours.tokenize(["a red circle on the left", "a blue square at the top"])
    changed = ids.clone()
    changed[:, 3] = torch.where(ids[:, 3] == 7, 8, 7)
    other_image = Features(torch.randn(2, 5, 16))
    Q = ours.num_queries

    def run(mode, f=features, i=ids):
        with torch.no_grad():
            return ours.encode(f, i, mask, mode=mode)[0]

    causal, causal_changed = run("causal"), run("causal", i=changed)
    assert torch.equal(causal[:, :Q + 3], causal_changed[:, :Q + 3])  # queries and text before token 3
    assert not torch.allclose(causal[:, Q + 3:], causal_changed[:, Q + 3:])
    uni = run("unimodal")
    assert torch.equal(uni[:, :Q], run("unimodal", i=changed)[:, :Q])  # queries never see text
    assert torch.equal(uni[:, Q:], run("unimodal", f=other_image)[:, Q:])  # text never sees the image
    bi = run("bidirectional")
    assert not torch.allclose(bi[:, :Q + 3], run("bidirectional", i=changed)[:, :Q + 3])  # everything sees all

    # unimodal = the two separate passes; ITG's cached query keys/values = the joint causal pass
    with torch.no_grad():
        assert torch.allclose(uni[:, :Q], ours.query_states(features), atol=1e-6)
        assert torch.allclose(uni[:, Q:], ours.encode(None, ids, mask, mode="unimodal")[0], atol=1e-6)
        joint_logits = ours.lm_head(causal[:, Q:], ours.word_embeddings.weight)
        assert torch.allclose(ours.itg_logits(features, ids, mask), joint_logits, atol=1e-5)


# -- 4. stage-1 training ----------------------------------------------------------------------
def stage1(qformer, features, texts, image_ids=None, **weights):
    """The objective blip2_stage1 on a bare Q-Former: its losses, their weighted sum, the query states."""
    objective = Blip2Stage1(**weights)
    losses, query_states = objective.losses(qformer, features, texts, image_ids)
    return losses, sum(objective.weights()[name] * value for name, value in losses.items()), query_states


@pytest.mark.slow
def test_stage1_losses_fall_on_a_learnable_task(tokenizer_dir):
    # each of 6 classes has its own "visual tokens" (plus noise) and its own caption
    ours = tiny_qformer(tokenizer_dir, cross_attention_every=1, num_layers=2, vision_width=128, llm_width=24).train()
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(len(CAPTIONS), 6, 128, generator=generator)

    def images(classes):
        return Features(prototypes[classes] + 0.3 * torch.randn(len(classes), 6, 128, generator=generator))

    optimizer = torch.optim.AdamW(ours.parameters(), lr=5e-3)
    history = []
    for _ in range(150):
        classes = torch.randint(len(CAPTIONS), (16,), generator=generator)
        losses, loss, query_states = stage1(ours, images(classes), [CAPTIONS[c] for c in classes], image_ids=classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    assert query_states.shape == (16, 4, 32) and query_states.requires_grad
    first = {k: sum(h[k] for h in history[:10]) / 10 for k in history[0]}
    last = {k: sum(h[k] for h in history[-10:]) / 10 for k in history[0]}
    # ITC cannot reach 0: label smoothing and same-class pairs in a batch put its floor near 1.2
    assert last["itc"] < 0.7 * first["itc"], (first, last)
    assert last["itg"] < 0.3 * first["itg"], (first, last)
    assert last["itm"] < 0.75 * first["itm"], (first, last)
    assert 0.001 <= ours.temp.item() <= 0.5

    ours.eval()
    with torch.no_grad():
        held_out = images(torch.arange(len(CAPTIONS)))
        similarity = ours.similarity(ours.image_embeds(held_out), ours.text_embeds(CAPTIONS))
        match = ours.itm_logits(held_out, CAPTIONS).softmax(-1)[:, 1]
        mismatch = ours.itm_logits(held_out, CAPTIONS[1:] + CAPTIONS[:1]).softmax(-1)[:, 1]
    assert torch.equal(similarity.argmax(dim=1), torch.arange(len(CAPTIONS)))
    assert match.mean() > mismatch.mean() + 0.3, (match, mismatch)


def test_stage1_weights_select_losses_and_reuse_the_query_pass(tokenizer_dir):
    ours = tiny_qformer(tokenizer_dir, llm_width=24)
    features = Features(torch.randn(2, 5, 16))
    calls = []
    hook = ours.layers[0].cross_attn.register_forward_hook(lambda *args: calls.append(args[1][0].shape[0]))
    losses, loss, query_states = stage1(ours, features, CAPTIONS[:2], itm=0, itg=2)
    hook.remove()
    assert set(losses) == {"itc", "itg"}
    assert torch.allclose(loss, losses["itc"] + 2 * losses["itg"])
    assert calls == [2]  # one query pass (batch 2), no ITM pass
    assert torch.allclose(ours.project(query_states).embeds, ours(features).embeds)
    with pytest.raises(ConfigError, match="unknown key 'itx' for objective 'blip2_stage1'"):
        build("objective", {"name": "blip2_stage1", "itx": 1})


def _stage1_rank_worker(rank, tokenizer_dir, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ours = tiny_qformer(tokenizer_dir)
    features = Features(torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0)))
    rows = slice(2 * rank, 2 * rank + 2)
    texts = CAPTIONS[:2] if rank == 0 else ["a star", "one dot"]  # the ranks pad to different lengths
    losses, loss, _ = stage1(ours, Features(features.tokens[rows]), texts, image_ids=torch.tensor([0, 1, 2, 2])[rows])
    loss.backward()
    torch.save({k: v.detach() for k, v in losses.items()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_stage1_losses_on_two_ranks(tokenizer_dir, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_stage1_rank_worker, args=(tokenizer_dir, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    ours = tiny_qformer(tokenizer_dir)
    features = Features(torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0)))
    texts = CAPTIONS[:2] + ["a star", "one dot"]
    single, _, _ = stage1(ours, features, texts, image_ids=torch.tensor([0, 1, 2, 2]), itm=0)
    assert torch.allclose((ranks[0]["itc"] + ranks[1]["itc"]) / 2, single["itc"], atol=1e-5)
    assert all(set(r) == {"itc", "itm", "itg"} and all(v.isfinite() for v in r.values()) for r in ranks)


# -- 5. paper-scale sizes ---------------------------------------------------------------------
def _transformers_paper_counts():
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, OPTConfig

    opt_2_7b = OPTConfig(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                         word_embed_proj_dim=2560)
    with torch.device("meta"):
        blip2 = Blip2ForConditionalGeneration(Blip2Config(text_config=opt_2_7b, image_token_index=50265))
        retrieval = Blip2ForImageTextRetrieval(Blip2Config(
            qformer_config={"use_qformer_text_input": True, "vocab_size": 30523}, image_token_index=30522))
    stage2 = sum(p.numel() for n, p in blip2.named_parameters() if not n.startswith(("vision_model", "language_model")))
    stage1 = sum(p.numel() for n, p in retrieval.named_parameters() if not n.startswith("vision_model"))
    return stage2, stage1


def test_paper_scale_parameter_counts():
    with dry_build():
        stage2 = build("bridge", {"name": "qformer", "text_branch": False, "vision_width": 1408, "llm_width": 2560})
        stage1 = build("bridge", {"name": "qformer", "vision_width": 1408})
    hf_stage2, hf_retrieval = _transformers_paper_counts()
    assert stage2.num_parameters(trainable_only=True) == 107_130_880 == hf_stage2
    # Stage 1 (BERT-base Q-Former, vocabulary 30522 + [DEC]): 186,702,654 =
    #   105,162,240  queries (24,576) + embedding LayerNorm + 12 layers of self-attention and query FFN
    #                + 6 cross-attentions from 1408-wide visual tokens (the stage-2 Q-Former without llm_proj)
    # + 80,522,496   text branch: word (30,523 x 768) and position (512 x 768) embeddings, 12 text FFNs
    # + 393,728      vision_proj, text_proj (768 -> 256); + 1,538 itm_head; + 1 temp
    # + 622,651      ITG head: transform dense + LayerNorm (592,128) and output bias (30,523); decoder tied
    # transformers' Blip2ForImageTextRetrieval (no ITG head, no temperature) has all but the last two lines.
    # LAVIS's Blip2Qformer has the same modules (cls.predictions tied to the word embeddings) and also
    # trains ln_vision (2 x 1408), which vlreg counts in the encoder. The paper rounds this to "188M".
    assert stage1.num_parameters() == 186_702_654 == hf_retrieval + 592_128 + 30_523 + 1
    assert all(p.device.type == "meta" for p in stage1.parameters())


# -- checkpoints: BERT initialisation, LAVIS layout ---------------------------------------------
def test_init_from_bert_reproduces_bert(tokenizer_dir, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    vocab = tiny_qformer(tokenizer_dir).word_embeddings.num_embeddings
    torch.manual_seed(2)
    bert = BertForMaskedLM(BertConfig(vocab_size=vocab - 1, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=40)).eval()
    with torch.no_grad():
        bert.bert.embeddings.token_type_embeddings.weight.normal_()
    bert.save_pretrained(tmp_path / "bert")
    ours = tiny_qformer(tokenizer_dir, init_from=str(tmp_path / "bert"))
    layer = ours.layers[0]
    assert torch.equal(layer.query_ffn.fc1.weight, bert.bert.encoder.layer[0].intermediate.dense.weight)
    assert torch.equal(layer.text_ffn.fc2.weight, layer.query_ffn.fc2.weight)
    assert torch.equal(ours.word_embeddings.weight[:vocab - 1], bert.bert.embeddings.word_embeddings.weight)
    ids = torch.randint(6, vocab - 1, (2, 7))
    with torch.no_grad():
        expected = bert(input_ids=ids).logits
        hidden = ours.encode(None, ids, mode="unimodal")[0]
        logits = ours.lm_head(hidden, ours.word_embeddings.weight)[..., :vocab - 1]
    assert torch.allclose(logits, expected, atol=1e-4)
    with pytest.raises(ConfigError, match="cannot load BERT checkpoint"):
        tiny_qformer(tokenizer_dir, init_from=str(tmp_path / "missing"))


def test_lavis_keys_round_trip_and_follow_bert_naming(tokenizer_dir):
    from transformers import BertConfig, BertForMaskedLM

    ours = tiny_qformer(tokenizer_dir, llm_width=24)
    state = ours.state_dict()
    lavis = to_lavis(state, projection="t5_proj")
    for key in ("query_tokens", "temp", "vision_proj.weight", "text_proj.bias", "itm_head.weight", "t5_proj.weight",
                "Qformer.bert.embeddings.LayerNorm.weight", "Qformer.bert.encoder.layer.2.attention.self.query.weight",
                "Qformer.bert.encoder.layer.0.crossattention.self.key.weight",
                "Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias", "Qformer.cls.predictions.bias",
                "Qformer.cls.predictions.decoder.weight"):
        assert key in lavis, key
    assert "Qformer.bert.encoder.layer.1.crossattention.self.key.weight" not in lavis  # every 2nd layer only
    back = from_lavis(lavis)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    # the shared part is named as in BERT itself (LAVIS's Q-Former is a modified BertLMHeadModel)
    bert_keys = BertForMaskedLM(BertConfig(vocab_size=10, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                           intermediate_size=64)).state_dict().keys()
    bert_keys = {f"Qformer.{k}" for k in bert_keys if "token_type" not in k}
    assert bert_keys <= set(lavis)


# -- configs and user errors ------------------------------------------------------------------
def test_configs_validate_and_dry_build():
    for name in ("bridges/qformer.yaml", "bridges/qformer_stage2.yaml", "bridges/qformer_tiny.yaml"):
        node = to_plain(load_config(name))
        validate("bridge", node, "model.bridge", provided=("vision_width", "llm_width"))
        with dry_build():
            model = build("bridge", {**node, "vision_width": 1408, "llm_width": 2560})
        assert isinstance(model, QFormer) and model.num_queries == node["num_queries"]


def test_user_errors_are_clear(tokenizer_dir):
    with pytest.raises(ConfigError, match="vision_width is unknown"):
        build("bridge", {"name": "qformer"})
    with pytest.raises(ConfigError, match="text_branch needs a tokenizer"):
        build("bridge", {"name": "qformer", **TINY})
    stage2 = tiny_qformer(text_branch=False)
    with pytest.raises(ConfigError, match="prompts need llm_width"):
        stage2(Features(torch.randn(1, 3, 16)))
    with pytest.raises(ConfigError, match="needs the text branch"):
        stage1(stage2, Features(torch.randn(1, 3, 16)), ["a"])
    with pytest.raises(ConfigError, match="not a multiple"):
        build("bridge", {"name": "qformer", **TINY, "num_heads": 5, "text_branch": False})


def test_frozen_qformer_has_no_trainable_parameters():
    frozen = tiny_qformer(text_branch=False, llm_width=24, frozen=True, precision="bf16")
    assert frozen.num_parameters(trainable_only=True) == 0
    prompts = frozen(Features(torch.randn(2, 3, 16)))
    assert prompts.embeds.dtype == torch.bfloat16 and not prompts.embeds.requires_grad


def test_itm_reads_shared_items_once_with_the_same_logits(tokenizer_dir):
    """Hard negatives repeat images: keys and values per distinct image give the logits of the repeated batch."""
    ours = tiny_qformer(tokenizer_dir, vision_width=24).eval()
    items = Features(torch.randn(3, 5, 24), torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5]))
    rows = torch.tensor([0, 2, 2, 1, 0, 1])
    texts = ["a red circle", "a blue star", "two squares", "a cross", "a star", "red"]
    repeated = Features(items.tokens[rows], items.mask[rows])
    with torch.no_grad():
        expected = ours.itm_logits(repeated, texts)
        shared = ours.itm_logits(items, texts, visual_rows=rows)
    torch.testing.assert_close(shared, expected, rtol=1e-5, atol=1e-6)
