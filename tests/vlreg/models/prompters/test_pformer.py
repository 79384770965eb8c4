"""P-Former: its encoder against BERT, prompts, the stage-0 losses, loading a stage-0 result, configs,
and stage 0 through the runner reconstructing held-out sentences from prompts alone."""

import hashlib
import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import vlreg  # noqa: F401  (installs the torchvision guard before transformers loads)
from vlreg.build import build
from vlreg.config import load_config, to_plain
from vlreg.errors import ConfigError
from vlreg.models.assembly import VisionLanguageModel
from vlreg.models.base import dry_build
from vlreg.models.losses import nearest_rows, vocabulary_loss
from vlreg.objectives.pformer_stage0 import PFormerStage0
from vlreg.runner import Checkpointer, RunConfig, Trainer
from vlreg.tasks.lm_pretrain import pretrain_lm, save_lm

from tests.common import corpus

TEXTS = ["a red circle", "a small purple triangle at the bottom", "a large green star in the centre",
         "a blue square on the left"]


def tiny_pformer(tokenizer_dirs, **overrides):
    """A 2-layer, 64-wide P-Former node with 8 prompts (llm_width comes from the model's LLM)."""
    return {"name": "pformer", "num_prompts": 8, "num_layers": 2, "hidden_size": 64, "num_heads": 4,
            "intermediate_size": 128, "tokenizer": tokenizer_dirs["bert"], "max_position_embeddings": 32,
            "embed_dim": 32, **overrides}


def llm_node(tokenizer_dirs, style="opt", **overrides):
    return {**to_plain(load_config(f"llms/{style}_tiny.yaml")), "tokenizer": tokenizer_dirs[style], **overrides}


@pytest.fixture(scope="module")
def sentences():
    """``(train, held_out)``: the test corpus, with 40 of its 360 distinct sentences never seen in training."""
    lines = corpus()
    distinct = sorted(set(lines))
    random.Random(1).shuffle(distinct)
    held_out = sorted(distinct[:40])
    return [s for s in lines if s not in set(held_out)], held_out


@pytest.fixture(scope="module")
def pretrained_lm(tmp_path_factory, tokenizer_dirs, sentences):
    """``style -> directory`` of a tiny LM pretrained on the training sentences (seconds), loadable by ``path:``."""
    root = tmp_path_factory.mktemp("lms")
    cache = {}

    def get(style):
        if style not in cache:
            steps = {"opt": 200, "t5": 100}[style]
            lm = pretrain_lm(llm_node(tokenizer_dirs, style), sentences[0], steps=steps, lr=3e-3, batch_size=32)
            cache[style] = str(save_lm(lm, root / style))
        return cache[style]
    return get


# -- the encoder and the prompts -----------------------------------------------------
def test_encoder_matches_transformers_bert_on_the_same_weights(tmp_path, tokenizer_dirs):
    from transformers import BertConfig, BertForMaskedLM

    from vlreg.models.tokenizers import load_tokenizer

    config = BertConfig(vocab_size=len(load_tokenizer(tokenizer_dirs["bert"])), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=32,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    bert = BertForMaskedLM(config).eval()
    bert.save_pretrained(tmp_path / "bert")
    prompter = build("prompter", tiny_pformer(tokenizer_dirs, init_from=str(tmp_path / "bert"), llm_width=16)).eval()
    input_ids, mask = prompter.tokenize(TEXTS)
    assert not mask.all()  # padding is exercised
    with torch.no_grad():
        ours = prompter.encode(input_ids, mask)
        theirs = bert.bert(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
    assert torch.allclose(ours[mask], theirs[mask], atol=1e-5)
    assert set(prompter.load_bert(str(tmp_path / "bert"))) == {
        k for k in prompter.state_dict() if not k.startswith(("expand", "prompt_mlp", "contrast_proj", "temp"))}
    with pytest.raises(ConfigError, match="pformer: cannot load BERT checkpoint .* \\(init_from\\)"):
        build("prompter", tiny_pformer(tokenizer_dirs, init_from=str(tmp_path / "missing"), llm_width=16))


@pytest.mark.parametrize("num_prompts,max_text_length", [(5, 12), (40, 12)])
def test_prompt_count_is_independent_of_the_text_and_padding_changes_nothing(tokenizer_dirs, num_prompts,
                                                                             max_text_length):
    prompter = build("prompter", tiny_pformer(tokenizer_dirs, num_prompts=num_prompts, llm_width=48,
                                              max_text_length=max_text_length)).eval()
    with torch.no_grad():
        together = prompter(TEXTS).embeds
        alone = prompter(TEXTS[:1]).embeds
    assert together.shape == (4, num_prompts, 48)
    assert torch.allclose(together[0], alone[0], atol=1e-5)


def test_paper_configs_build_on_the_meta_device_with_the_paper_sizes():
    from transformers import BertConfig, BertModel

    with dry_build():
        bert_base = sum(p.numel() for p in BertModel(BertConfig()).parameters())
        for name, width in (("pformer_opt2.7b", 2560), ("pformer_flant5xl", 2048)):
            prompter = build("prompter", to_plain(load_config(f"prompters/{name}.yaml")))
            assert (prompter.num_prompts, prompter.llm_width, prompter.hidden_size) == (32, width, 768)
            heads = (768 * 32 * 768 + 32 * 768) + (768 * 768 + 768) + (768 * width + width) + (768 * 256 + 256) + 1
            # bert-base-uncased without its pooler and token-type table (folded into the positions), plus the heads
            assert prompter.num_parameters() == bert_base - (768 * 768 + 768) - 2 * 768 + heads
        model = VisionLanguageModel.from_config({"prompter": to_plain(load_config("prompters/pformer_opt2.7b.yaml")),
                                                 "llm": to_plain(load_config("llms/opt-2.7b.yaml"))})
    assert bert_base == 109_482_240
    assert model.prompter.llm_width == model.llm.width == 2560


def test_tiny_config_and_stage0_run_settings(tokenizer_dirs):
    tiny = to_plain(load_config("prompters/pformer_tiny.yaml"))
    assert (tiny["name"], tiny["num_prompts"], tiny["num_layers"], tiny["hidden_size"]) == ("pformer", 32, 2, 256)
    prompter = build("prompter", {**tiny, "tokenizer": tokenizer_dirs["bert"], "llm_width": 64}).eval()
    with torch.no_grad():
        assert prompter(TEXTS).embeds.shape == (4, 32, 64)
    stage = to_plain(load_config("stages/pformer_stage0.yaml"))
    assert stage["task"] == {"name": "pformer_pretrain"} and stage["model"]["losses"] == [
        {"name": "pformer_stage0", "reconstruction": 1, "contrastive": 1, "vocabulary": 1}]
    run = RunConfig(output_dir="out", **stage["run"])
    assert (run.lr, run.min_lr, run.warmup_steps, run.weight_decay, run.batch_size, run.max_epochs) == (
        1e-4, 1e-5, 2000, 0.05, 128, 5)


# -- stage-0 losses ----------------------------------------------------------------------
def encoder_batch_sizes(prompter):
    sizes = []
    prompter.embed_norm.register_forward_hook(lambda module, args, out: sizes.append(out.shape[0]))
    return sizes


@pytest.mark.parametrize("views,passes", [("single", 1), ("dropout", 2), ("two_masks", 3)])
def test_stage0_losses_by_weight_and_one_encoder_pass_for_all_views(tokenizer_dirs, views, passes):
    torch.manual_seed(0)
    llm = build("llm", llm_node(tokenizer_dirs))
    prompter = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=llm.width, contrastive_views=views))
    sizes = encoder_batch_sizes(prompter)
    assert set(PFormerStage0().losses(prompter, llm, TEXTS)) == {"reconstruction", "contrastive", "vocabulary"}
    assert sizes == [passes * len(TEXTS)]
    losses = PFormerStage0(contrastive=0, vocabulary=0.5).losses(prompter, llm, TEXTS)
    assert set(losses) == {"reconstruction", "vocabulary"} and sizes[-1] == len(TEXTS)
    with pytest.raises(ConfigError, match=r"unknown key 'itc' for objective 'pformer_stage0'"):
        build("objective", {"name": "pformer_stage0", "itc": 1})
    prompter.eval()  # no dropout: the reconstruction is the LLM's loss on the P-Former's own prompts
    with torch.no_grad():
        reconstruction = PFormerStage0(contrastive=0, vocabulary=0).losses(prompter, llm, TEXTS)["reconstruction"]
        assert torch.allclose(reconstruction, llm.loss(prompter(TEXTS), TEXTS))


def test_contrastive_loss_is_symmetric_infonce_with_label_smoothing(tokenizer_dirs):
    prompter = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16))
    with torch.no_grad():
        prompter.temp.fill_(0.9)  # projected into [0.001, 0.5]
    first, second = torch.randn(6, 64), torch.randn(6, 64)
    loss = prompter.contrastive_loss(first, second)
    a = F.normalize(prompter.contrast_proj(first), dim=-1)
    b = F.normalize(prompter.contrast_proj(second), dim=-1)
    logits, labels = a @ b.T / 0.5, torch.arange(6)
    expected = (F.cross_entropy(logits, labels, label_smoothing=0.1)
                + F.cross_entropy(logits.T, labels, label_smoothing=0.1)) / 2
    assert torch.allclose(loss, expected) and prompter.temp.item() == 0.5


def test_dropout_views_need_dropout(tokenizer_dirs):
    node = {"prompter": tiny_pformer(tokenizer_dirs, dropout=0.0), "llm": llm_node(tokenizer_dirs)}
    model = VisionLanguageModel.from_config({**node, "losses": [{"name": "pformer_stage0", "contrastive": 0}]})
    assert set(model({"text_input": TEXTS})) == {"reconstruction", "vocabulary", "loss"}
    with pytest.raises(ConfigError, match="contrastive_views 'dropout' needs dropout > 0"):  # before any step
        VisionLanguageModel.from_config({**node, "losses": [{"name": "pformer_stage0"}]})


def test_masked_views_mask_a_quarter_of_the_words_and_never_special_tokens(tokenizer_dirs):
    prompter = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, contrastive_views="two_masks"))
    input_ids, mask = prompter.tokenize(corpus(300, seed=3))
    torch.manual_seed(0)
    first, second = prompter.contrastive_inputs(input_ids, mask)
    special = torch.isin(input_ids, torch.tensor(prompter.tokenizer.all_special_ids))
    maskable = mask & ~special
    for view in (first, second):
        changed = view != input_ids
        assert (view[changed] == prompter.tokenizer.mask_token_id).all()
        assert not (changed & ~maskable).any()
        assert abs(changed.sum().item() / maskable.sum().item() - 0.25) < 0.03
    assert not torch.equal(first, second)


def test_vocabulary_loss_pulls_each_prompt_to_its_nearest_token_embedding():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    prompts = torch.tensor([[[0.9, 0.1], [0.1, 1.5]]], requires_grad=True)  # nearest: rows 1 and 2
    loss = vocabulary_loss(prompts, table)
    assert torch.allclose(loss, torch.tensor((0.1**2 + 0.1**2 + 0.1**2 + 0.5**2) / 4))
    loss.backward()
    assert table.grad is None and torch.allclose(prompts.grad, (prompts - table[[1, 2]]).detach() / 2)
    vectors, rows = torch.randn(50, 8), torch.randn(37, 8)
    assert torch.equal(nearest_rows(vectors, rows, chunk=7), torch.cdist(vectors, rows).argmin(1))


# -- a stage-0 result as the P-Former of later stages ----------------------------------------
def test_loading_a_stage0_result_from_a_file_or_a_run_checkpoint(tmp_path, tokenizer_dirs):
    torch.manual_seed(0)
    trained = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16)).eval()
    assert trained.weight_source() is None
    with torch.no_grad():
        expected = trained(TEXTS).embeds
    file = tmp_path / "pformer.safetensors"
    save_file(trained.state_dict(), str(file))
    model = VisionLanguageModel(prompter=trained)
    step = Checkpointer(tmp_path / "run" / "checkpoints").save(7, model, torch.optim.AdamW(model.parameters()), {})
    sources = {file: str(file.resolve()), step: str(step.resolve()), tmp_path / "run": str(step.resolve())}
    for source, recorded in sources.items():
        loaded = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, checkpoint=str(source), frozen=True))
        with torch.no_grad():
            assert torch.equal(loaded(TEXTS).embeds, expected)
        digest = hashlib.sha256((file if source == file else step / "trainable.safetensors").read_bytes()).hexdigest()
        assert loaded.weight_source() == {"source": recorded, "sha256": digest}

    with pytest.raises(ConfigError, match=r"missing none; unexpected none; other shapes \(here vs checkpoint\) "
                                          r"expand.weight \(1024, 64\) vs \(512, 64\), expand.bias \(1024,\) vs \(512,\)"):
        build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, num_prompts=16, checkpoint=str(file)))
    with pytest.raises(ConfigError, match=r"does not match this P-Former \(its sizes must be those of stage 0\): missing layers.2"):
        build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, num_layers=3, checkpoint=str(file)))
    other = VisionLanguageModel(llm=build("llm", llm_node(tokenizer_dirs, frozen=False)))
    Checkpointer(tmp_path / "other").save(1, other, torch.optim.AdamW(other.parameters()), {})
    with pytest.raises(ConfigError, match="holds no P-Former weights"):
        build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, checkpoint=str(tmp_path / "other")))
    with pytest.raises(ConfigError, match="does not exist"):
        build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, checkpoint=str(tmp_path / "nowhere")))


def test_dry_build_reads_no_tokenizer_and_no_weights(tmp_path):
    with dry_build():
        prompter = build("prompter", {"name": "pformer", "llm_width": 32, "num_layers": 1, "tokenizer": "not-there",
                                      "checkpoint": str(tmp_path / "not-there")})
    assert prompter.word_embeddings.weight.is_meta and prompter.word_embeddings.num_embeddings == 30522
    with pytest.raises(ConfigError, match="llm_width is unknown"):
        build("prompter", {"name": "pformer"})


def test_a_frozen_pformer_keeps_bf16_weights_and_stays_in_eval_mode(tokenizer_dirs):
    torch.manual_seed(0)
    full = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16)).eval()
    torch.manual_seed(0)
    half = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, frozen=True, precision="bf16"))
    half.train()
    assert not half.training and not any(p.requires_grad for p in half.parameters())
    with torch.no_grad():
        prompts, reference = half(TEXTS).embeds, full(TEXTS).embeds
    assert prompts.dtype == torch.bfloat16 and torch.allclose(prompts.float(), reference, atol=0.05)
    with pytest.raises(ConfigError, match="applies to frozen weights only"):
        build("prompter", tiny_pformer(tokenizer_dirs, llm_width=16, precision="bf16"))


def test_the_stage0_task_needs_a_prompter_and_an_llm(tokenizer_dirs):
    task = build("task", {"name": "pformer_pretrain"})
    with pytest.raises(ConfigError, match=r"model.losses\[0\]: objective 'pformer_stage0' needs a model llm"):
        task.validate_model({"prompter": tiny_pformer(tokenizer_dirs)}, "model")
    with pytest.raises(ConfigError, match="objective 'pformer_stage0' needs a model prompter and llm"):
        task.build_model({})


# -- stage 0 -----------------------------------------------------------------------------
def write_corpus(directory, lines):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text("\n".join(lines) + "\n")
    return str(directory)


@pytest.mark.slow
def test_stage0_through_the_runner_reconstructs_held_out_sentences_from_prompts_alone(
        tmp_path, tokenizer_dirs, sentences, pretrained_lm):
    train, held_out = sentences
    root = write_corpus(tmp_path / "text", train + held_out)
    data = {split: build("dataset", {"name": "text_lines", "root": root, "split": split, "val_size": len(held_out)})
            for split in ("train", "val")}
    task = build("task", {"name": "pformer_pretrain"})
    torch.manual_seed(0)
    model = task.build_model({"prompter": tiny_pformer(tokenizer_dirs),
                              "llm": {"name": "causal_lm", "path": pretrained_lm("opt")}})
    assert [o.weights() for o in model.objectives] == [  # the paper's, by default
        {"reconstruction": 1, "contrastive": 1, "vocabulary": 1}]
    run = {"output_dir": str(tmp_path / "run"), "max_steps": 300, "batch_size": 32, "lr": 3e-3, "min_lr": 3e-3,
           "num_workers": 0, "log_every": 10, "checkpoint_every": 0}
    results = Trainer(run).fit(model, task, data["train"], data["val"])

    final = results["final"]
    assert final["sentences"] == len(held_out)
    assert final["token_accuracy"] > 0.85 and final["token_accuracy"] > 4 * final["unigram_token_accuracy"], final
    assert final["exact_match"] > 0.15, final
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    reconstruction = [line["reconstruction"] for line in log if "reconstruction" in line]
    assert reconstruction[-1] < 0.25 * reconstruction[0], reconstruction
    predictions = json.loads((tmp_path / "run" / "predictions" / "reconstruction_step300.json").read_text())
    assert [p["text"] for p in predictions] == held_out
    assert sum(p["reconstruction"] == p["text"] for p in predictions) == round(final["exact_match"] * len(held_out))

    # the run's checkpoint is the frozen P-Former of the next stages
    frozen = build("prompter", tiny_pformer(tokenizer_dirs, llm_width=64, checkpoint=str(tmp_path / "run"),
                                            frozen=True))
    model.eval()
    with torch.no_grad():
        assert torch.equal(frozen(held_out).embeds, model.prompter(held_out).embeds)


@pytest.mark.slow
def test_stage0_with_an_encoder_decoder_llm_lowers_the_reconstruction_loss(tokenizer_dirs, sentences, pretrained_lm):
    """T5 reads ``[prompts; word prefix]`` and decodes the rest: the prompts learn what the prefix leaves out."""
    batch = {"text_input": sentences[1][:8]}
    torch.manual_seed(0)
    model = VisionLanguageModel.from_config({
        "prompter": tiny_pformer(tokenizer_dirs), "llm": {"name": "seq2seq_lm", "path": pretrained_lm("t5")},
        "losses": [{"name": "pformer_stage0"}]})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    history = []
    model.train()
    for _ in range(40):
        torch.manual_seed(1)  # the same prefix/suffix splits every step: the loss follows the prompts, not the draw
        out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append(out["reconstruction"].item())
    assert set(out) == {"reconstruction", "contrastive", "vocabulary", "loss"}
    assert history[-1] < 0.55 * history[0], history  # the pretrained T5 already rebuilds much from the prefix
