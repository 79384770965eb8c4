"""Tokenizers trained by a stage of their own: the world's train_tokenizers."""

import pytest

from vlreg.build import build
from vlreg.errors import ConfigError
from vlreg.models.tokenizers import load_tokenizer

from tests.vlreg.data.test_concat import corpus_and_qa_node


def test_a_stage_trains_its_missing_tokenizers_once(small_world, tmp_path):
    opt, bert = tmp_path / "tokenizers" / "opt", tmp_path / "tokenizers" / "bert"
    nodes = [{"path": str(opt), "style": "opt", "vocab_size": 300}, {"path": str(bert), "style": "bert"}]
    build("task", {"name": "train_tokenizers", "tokenizers": nodes, "texts": corpus_and_qa_node(small_world)}).prepare()
    assert load_tokenizer(opt).eos_token == "</s>" and len(load_tokenizer(opt)) <= 300
    assert load_tokenizer(bert).tokenize("Short answer") == ["short", "answer"]
    stamp = (opt / "tokenizer.json").stat().st_mtime_ns
    nowhere = {"name": "text_lines", "root": str(tmp_path / "nowhere")}
    build("task", {"name": "train_tokenizers", "tokenizers": nodes, "texts": nowhere}).prepare()  # present: kept,
    assert (opt / "tokenizer.json").stat().st_mtime_ns == stamp                                   # texts not read
    assert not [p for p in opt.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    with pytest.raises(ConfigError, match=r"stages.x.task.tokenizers\[0\].style: expected one of 'opt', 't5', 'bert'"):
        build("task", {"name": "train_tokenizers", "tokenizers": [{"path": "x", "style": "gpt"}], "texts": nowhere},
              "stages.x.task")
    with pytest.raises(ConfigError, match=r"stages.x.task.texts: unknown key 'rot' for dataset 'text_lines'"):
        build("task", {"name": "train_tokenizers", "tokenizers": nodes, "texts": {"name": "text_lines", "rot": "x"}},
              "stages.x.task")
