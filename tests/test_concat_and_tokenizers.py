"""Concatenated datasets, and tokenizers trained by the stage that needs them."""

import pytest

from vlreg.build import build
from vlreg.errors import ConfigError
from vlreg.models.tokenizers import TokenizerSpec, ensure_tokenizer, load_tokenizer
from vlreg.tasks.base import dataset_texts

QUESTION = {"name": "question", "template": "Question: {} Short answer:"}


def corpus_and_qa(world):
    return build("dataset", {"name": "concat", "datasets": [
        {"name": "text_lines", "root": f"{world}/text", "split": "train", "val_size": 100, "max_samples": 30},
        {"name": "msrvtt_qa", "root": f"{world}/msrvtt", "split": "train", "text_processor": QUESTION,
         "max_samples": 10},
    ]})


def test_concat_reads_its_parts_in_order(small_world):
    data = corpus_and_qa(small_world)
    corpus, qa = data.datasets
    assert len(data) == 40 == len(corpus) + len(qa)
    assert data[0] == corpus[0] and data[29] == corpus[29]
    assert data[30]["question_id"] == qa[0]["question_id"]
    assert data[30]["text_input"].startswith("Question: ") and data[30]["text_input"].endswith("Short answer:")
    with pytest.raises(IndexError):
        data[40]


def test_concat_refuses_streams_and_nothing(small_world):
    with pytest.raises(ConfigError, match="concat: give at least one dataset"):
        build("dataset", {"name": "concat", "datasets": []})
    stream = {"name": "text_shards", "root": f"{small_world}/webdataset"}
    with pytest.raises(ConfigError, match=r"concat: datasets\[0\] \(.*\) streams"):
        build("dataset", {"name": "concat", "datasets": [stream]})


def test_texts_join_questions_and_answers(small_world):
    texts = dataset_texts(corpus_and_qa(small_world))
    assert len(texts) == 40
    qa = corpus_and_qa(small_world).datasets[1]
    record = qa.records[0]
    item = qa[0]
    assert texts[30] == f"{item['text_input']} {item['text_output']}"
    assert texts[30].startswith(f"Question: {QUESTION_FORMAT(record['text_input'])} Short answer: ")


def QUESTION_FORMAT(question):  # noqa: N802 - the question processor's cleaning, as the reader applies it
    return build("processor", {"name": "question"})(question)


def test_lm_pretrain_trains_its_missing_tokenizer_once(small_world, tmp_path):
    task = build("task", {"name": "lm_pretrain", "train_tokenizer": {"style": "opt", "vocab_size": 300}})
    path = tmp_path / "tokenizers" / "opt"
    node = {"llm": {"name": "causal_lm", "tokenizer": str(path)}}
    task.prepare(node, {"train": corpus_and_qa(small_world)})
    tokenizer = load_tokenizer(path)
    assert tokenizer.eos_token == "</s>" and len(tokenizer) <= 300
    stamp = (path / "tokenizer.json").stat().st_mtime_ns
    task.prepare(node, {"train": corpus_and_qa(small_world)})  # present: kept as it is
    assert (path / "tokenizer.json").stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    with pytest.raises(ConfigError, match="train_tokenizer needs model.llm.tokenizer"):
        task.prepare({"llm": {"name": "causal_lm"}}, {"train": corpus_and_qa(small_world)})


def test_ensure_tokenizer_trains_on_the_given_lines(tmp_path):
    path = ensure_tokenizer(tmp_path / "bert", TokenizerSpec("bert", 200), lambda: ["a red circle"] * 50)
    tokenizer = load_tokenizer(path)
    assert tokenizer.cls_token == "[CLS]" and tokenizer.bos_token == "[DEC]"
    assert tokenizer.tokenize("a red circle") == ["a", "red", "circle"]
