"""Concatenated datasets, and tokenizers trained by a stage of their own (the world's train_tokenizers)."""

import pytest

from vlreg.build import build
from vlreg.errors import ConfigError
from vlreg.models.tokenizers import TokenizerSpec, ensure_tokenizer, load_tokenizer
from vlreg.tasks.base import dataset_texts

from tests.common import ROOT

QUESTION = {"name": "question", "template": "Question: {} Short answer:"}


def corpus_and_qa_node(world):
    return {"name": "concat", "datasets": [
        {"name": "text_lines", "root": f"{world}/text", "split": "train", "val_size": 100, "max_samples": 30},
        {"name": "msrvtt_qa", "root": f"{world}/msrvtt", "split": "train", "text_processor": QUESTION,
         "max_samples": 10},
    ]}


def corpus_and_qa(world):
    return build("dataset", corpus_and_qa_node(world))


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


def test_ensure_tokenizer_trains_on_the_given_lines(tmp_path):
    path = ensure_tokenizer(tmp_path / "bert", TokenizerSpec("bert", 200), lambda: ["a red circle"] * 50)
    tokenizer = load_tokenizer(path)
    assert tokenizer.cls_token == "[CLS]" and tokenizer.bos_token == "[DEC]"
    assert tokenizer.tokenize("a red circle") == ["a", "red", "circle"]


def test_tokenizers_train_to_the_same_ids_in_every_process():
    """The WordPiece vocabulary and the Unigram numbering do not follow hash-map order."""
    import subprocess
    import sys

    code = (f"import hashlib, json, sys; sys.path.insert(0, {str(ROOT)!r}); from tests.common import corpus; "
            "from vlreg.models.tokenizers import train_tokenizer; "
            "print([hashlib.sha256(json.dumps(train_tokenizer(corpus(), s, 400).get_vocab(), sort_keys=True)"
            ".encode()).hexdigest() for s in ('bert', 't5', 'opt')])")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(3)}
    assert len(runs) == 1, runs
