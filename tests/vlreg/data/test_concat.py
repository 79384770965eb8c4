"""Concatenated datasets: parts read in order, streams refused."""

import pytest

from vlreg.build import build
from vlreg.errors import ConfigError

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
