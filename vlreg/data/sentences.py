"""Text-only corpora: sentences without media, for P-Former and language-model pretraining.

Every reader yields items ``{"text_input": sentence}`` (after ``text_processor``).
The map-style corpora hold out their last ``val_size`` sentences as split "val"
(split "train" is the rest); the shard stream holds out its last ``val_shards`` shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from ..build import component
from ..errors import ConfigError, DataError
from ..registry import register
from .annotations import load_jsonl
from .base import RecordDataset
from .media import BadSample
from .webdataset import ShardStream, sample_meta, sample_text

Split = Literal["train", "val"]


class SentenceDataset(RecordDataset):
    """Shared by the map-style corpora: the train/val cut and the records."""

    def __init__(self, split: str, text_processor: Optional[Any], val_size: int, max_samples: Optional[int]):
        super().__init__(split, None, text_processor, max_samples)
        self.val_size = val_size

    def set_sentences(self, sentences: list[str], source: str) -> None:
        """Cut the split out of ``sentences`` (blank ones dropped) and make the records."""
        sentences = [s.strip() for s in sentences if s.strip()]
        if not 0 <= self.val_size < len(sentences) or (self.split == "val" and self.val_size == 0):
            raise ConfigError(f"{source}: val_size must lie in [{int(self.split == 'val')}, {len(sentences) - 1}] "
                              f"for split {self.split!r} of {len(sentences)} sentences, got {self.val_size}")
        cut = len(sentences) - self.val_size
        chosen = sentences[cut:] if self.split == "val" else sentences[:cut]
        self.records = self.keep([{"text_input": s} for s in chosen])


@register("dataset", "text_lines")
class TextLines(SentenceDataset):
    """A plain-text corpus, one sentence per line (blank lines skipped).

    Args:
        root: the corpus directory.
        file: the file, relative to root.
        split: "train" or "val" (the last ``val_size`` sentences).
        val_size: the number of sentences held out for "val".
        text_processor: applied to each sentence (e.g. caption).
        max_samples: keep the first N sentences of the split.
    """

    def __init__(self, root: str, file: str = "corpus.txt", split: Split = "train", val_size: int = 0,
                 text_processor: Optional[component("processor")] = None, max_samples: Optional[int] = None):
        super().__init__(split, text_processor, val_size, max_samples)
        self.path = Path(root) / file
        if not self.path.is_file():
            raise DataError(f"corpus file {self.path} not found")
        self.set_sentences(self.path.read_text(encoding="utf-8").splitlines(), str(self.path))


@register("dataset", "text_jsonl")
class TextJsonl(SentenceDataset):
    """A JSON-lines corpus: one object per line with the sentence under ``field``.

    Args:
        root: the corpus directory.
        file: the file, relative to root.
        field: the key holding the sentence.
        split: "train" or "val" (the last ``val_size`` sentences).
        val_size: the number of sentences held out for "val".
        text_processor: applied to each sentence (e.g. caption).
        max_samples: keep the first N sentences of the split.
    """

    def __init__(self, root: str, file: str = "corpus.jsonl", field: str = "text", split: Split = "train",
                 val_size: int = 0, text_processor: Optional[component("processor")] = None,
                 max_samples: Optional[int] = None):
        super().__init__(split, text_processor, val_size, max_samples)
        self.path = Path(root) / file
        sentences = []
        for index, entry in enumerate(load_jsonl(self.path, "corpus file")):
            if not isinstance(entry, dict) or not isinstance(entry.get(field), str):
                raise DataError(f"{self.path} line {index + 1}: missing key {field!r} (a string)")
            sentences.append(entry[field])
        self.set_sentences(sentences, str(self.path))


@register("dataset", "caption_corpus")
class CaptionCorpus(SentenceDataset):
    """The captions of a caption dataset (coco_caption, msrvtt_caption, ...) as a text-only corpus.

    Args:
        dataset: a dataset node whose reader has ``captions()``; give it no processor.
        split: "train" or "val" (the last ``val_size`` captions).
        val_size: the number of captions held out for "val".
        text_processor: applied to each caption (e.g. caption).
        max_samples: keep the first N captions of the split.
    """

    def __init__(self, dataset: component("dataset"), split: Split = "train", val_size: int = 0,
                 text_processor: Optional[component("processor")] = None, max_samples: Optional[int] = None):
        super().__init__(split, text_processor, val_size, max_samples)
        if not callable(getattr(dataset, "captions", None)):
            raise ConfigError(f"caption_corpus: dataset {type(dataset).__name__} has no captions()")
        self.set_sentences(dataset.captions(), f"caption_corpus of {dataset!r}")


@register("dataset", "text_shards")
class TextShards(ShardStream):
    """Sentences from WebDataset shards ("txt", or "json" {"caption"}), streamed.

    Sharding, resampling and shuffling are those of webdataset_pairs
    (:mod:`vlreg.data.webdataset`).

    Args:
        root: the shard directory.
        shards: glob or brace pattern of the shard files, relative to root.
        text_processor: applied to each sentence (e.g. caption).
        split: "train" (all shards but the last ``val_shards``) or "val" (those).
        val_shards: the number of shards held out as validation.
        resampled: draw shards with replacement, forever.
        shuffle_shards: shuffle the shard order each epoch.
        shuffle_buffer: samples mixed within a worker (0: stream order).
        seed: seeds shard order, resampling and the buffer.
        max_samples: keep the first N sentences in shard order.
    """

    def __init__(self, root: str, shards: str = "*.tar", text_processor: Optional[component("processor")] = None,
                 split: Split = "train", val_shards: int = 0, resampled: bool = False, shuffle_shards: bool = True,
                 shuffle_buffer: int = 1000, seed: int = 0, max_samples: Optional[int] = None):
        super().__init__(root, shards, split, val_shards, resampled, shuffle_shards, shuffle_buffer, seed, max_samples)
        self.text_processor = text_processor

    def make_item(self, sample: dict[str, Any]) -> dict[str, Any] | BadSample:
        where = f"{sample['__url__']}:{sample['__key__']}"
        text = sample_text(sample, sample_meta(sample, where), where)
        return {"text_input": self.text_processor(text) if self.text_processor else text}
