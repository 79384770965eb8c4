"""The in-memory dataset: each item read once, the wrapped dataset's attributes passed through."""

import pytest
import torch

from vlreg.build import build
from vlreg.errors import ConfigError


class Counting:
    """A map-style dataset that counts its reads."""

    def __init__(self, processor=None):
        self.reads, self.processor, self.texts = 0, processor, ["a", "b", "c"]

    def __len__(self):
        return 3

    def __getitem__(self, index):
        self.reads += 1
        return {"index": index, "text_input": self.texts[index]}


class Random:
    deterministic = False


def test_items_are_read_once_and_given_as_fresh_dicts():
    from vlreg.data.in_memory import InMemory

    data = InMemory(Counting())
    first = [data[i] for i in range(3)]
    first[0].pop("index")  # a batch taking keys from an item does not change what is kept
    again = [data[i] for i in range(3)]
    assert data.dataset.reads == 3 and again[0] == {"index": 0, "text_input": "a"}
    assert len(data) == 3 and data.texts == ["a", "b", "c"]  # the wrapped dataset's attributes


def test_a_random_processor_is_refused(tmp_path):
    from vlreg.data.in_memory import InMemory

    with pytest.raises(ConfigError, match="random"):
        InMemory(Counting(processor=Random()))


def test_a_world_dataset_in_memory_gives_the_same_items(small_world):
    node = {"name": "world_attributes", "root": str(small_world), "media": "images", "split": "train",
            "processor": {"name": "image_eval", "image_size": 32}, "max_samples": 4}
    plain, kept = build("dataset", node), build("dataset", {"name": "in_memory", "dataset": node})
    for i in range(4):
        assert torch.equal(plain[i]["image"], kept[i]["image"]) and torch.equal(plain[i]["labels"], kept[i]["labels"])
