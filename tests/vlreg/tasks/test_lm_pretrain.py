"""Language-model pretraining of the tiny LLMs: the objective, pretrain_lm, the task through the runner, export."""

import json

import pytest
import torch

import vlreg  # noqa: F401  (installs the torchvision guard before transformers loads)
from vlreg.build import build
from vlreg.errors import ConfigError
from vlreg.runner import Trainer
from vlreg.tasks.lm_pretrain import lm_loss, no_prompts, pretrain_lm

from tests.common import corpus
from tests.vlreg.models.prompters.test_pformer import llm_node


def test_empty_prompts_give_next_token_prediction_for_a_decoder_only_lm(tokenizer_dirs):
    torch.manual_seed(0)
    llm = build("llm", llm_node(tokenizer_dirs, frozen=False))
    texts = ["a red circle", "a small purple triangle at the bottom"]
    assert no_prompts(llm, 2).embeds.shape == (2, 0, llm.width)
    tokenizer = llm.tokenizer
    rows = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]  # </s> text </s>
    length = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    reference = llm.model(input_ids=ids, attention_mask=mask, labels=labels).loss  # transformers' own shift
    assert torch.allclose(lm_loss(llm, texts), reference, atol=1e-6)


def test_empty_prompts_give_prefix_lm_for_an_encoder_decoder_lm(tokenizer_dirs):
    torch.manual_seed(0)
    llm = build("llm", llm_node(tokenizer_dirs, "t5", frozen=False))
    tokenizer = llm.tokenizer
    word = "triangle"  # one word: the prefix is always empty, the decoder predicts the word and eos
    encoder_ids = torch.tensor([[tokenizer.eos_token_id]])
    labels = torch.tensor([tokenizer(word, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    reference = llm.model(input_ids=encoder_ids, labels=labels).loss
    assert torch.allclose(lm_loss(llm, [word]), reference, atol=1e-6)


def test_pretrain_lm_learns_the_corpus_deterministically_and_leaves_the_global_rng_alone(tokenizer_dirs):
    train, held_out = corpus(1500, seed=0), corpus(64, seed=9)
    node = llm_node(tokenizer_dirs)
    torch.manual_seed(0)
    untrained = build("llm", node)
    rng = torch.get_rng_state()
    llm = pretrain_lm(node, train, steps=60, lr=3e-3, batch_size=16, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not llm.training and all(p.requires_grad for p in llm.parameters())
    with torch.no_grad():
        before, after = lm_loss(untrained, held_out).item(), lm_loss(llm, held_out).item()
    assert after < 0.3 * before, (before, after)
    again = pretrain_lm(node, train, steps=60, lr=3e-3, batch_size=16, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(llm.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ConfigError, match="no sentences"):
        pretrain_lm(node, [], steps=1)


@pytest.mark.parametrize("style,name", [("opt", "causal_lm"), ("t5", "seq2seq_lm")])
def test_the_task_trains_evaluates_and_exports_a_model_that_loads_by_path(tmp_path, tokenizer_dirs, style, name):
    train, held_out = corpus(1000, seed=0), corpus(48, seed=9)
    root = tmp_path / "text"
    root.mkdir()
    (root / "corpus.txt").write_text("\n".join(train + held_out) + "\n")
    data = {split: build("dataset", {"name": "text_lines", "root": str(root), "split": split, "val_size": 48})
            for split in ("train", "val")}
    task = build("task", {"name": "lm_pretrain"})
    torch.manual_seed(0)
    model = task.build_model({"llm": llm_node(tokenizer_dirs, style)})  # frozen: false by default here
    assert model.num_parameters(trainable_only=True) == model.num_parameters() > 0
    with torch.no_grad():
        untrained = lm_loss(model.eval(), held_out).item()
    run = {"output_dir": str(tmp_path / "run"), "max_steps": 40, "batch_size": 16, "lr": 3e-3, "num_workers": 0,
           "log_every": 10, "checkpoint_every": 0}
    final = Trainer(run).fit(model, task, data["train"], data["val"])["final"]
    assert final["loss"] < 0.5 * untrained, (untrained, final)
    assert final["perplexity"] == pytest.approx(torch.tensor(final["loss"]).exp().item(), rel=1e-6)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["eval/loss"] for line in log if "eval/loss" in line] == [final["loss"]]

    exported = task.export(model, tmp_path / "run")
    assert exported == tmp_path / "run" / "export"
    loaded = build("llm", {"name": name, "path": str(exported)})
    assert loaded.frozen and not any(p.requires_grad for p in loaded.parameters())
    model.eval()
    prompts = no_prompts(model, 3)
    torch.manual_seed(5)
    ours = model(prompts, held_out[:3])
    torch.manual_seed(5)
    theirs = loaded(prompts, held_out[:3])
    assert torch.equal(ours.targets, theirs.targets)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-5)


def test_the_model_node_is_one_trainable_llm():
    task = build("task", {"name": "lm_pretrain"})
    with pytest.raises(ConfigError, match="set frozen: false"):
        task.validate_model({"llm": {"name": "causal_lm", "frozen": True}}, "model")
    with pytest.raises(ConfigError, match=r"has other keys \(encoder\)"):
        task.validate_model({"llm": {"name": "causal_lm"}, "encoder": {"name": "video"}}, "model")
    with pytest.raises(ConfigError, match="has no llm"):
        task.validate_model({}, "model")
