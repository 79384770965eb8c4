"""The text the model benchmarks need: captions, and OPT- and BERT-style tokenizers trained on them.

All three come from the synthetic world's training captions and text corpus, and are written
once to ``<work>/text/``::

    captions.json      the training captions of the world's COCO split (300 in the small world)
    tokenizer_opt/     byte-level BPE, at most 900 tokens (the LLMs' tokenizer)
    tokenizer_bert/    WordPiece, at most 900 tokens (the stage-1 Q-Former's)

A machine that cannot write a world (the GPU machines have no video encoder for its clips)
takes this folder from one that can: :func:`texts` makes the world only when the folder is
incomplete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

@dataclass(frozen=True)
class Texts:
    """Where the benchmark text lives: ``captions`` (a list of strings), and two tokenizer directories."""

    captions: list[str]
    opt_tokenizer: str
    bert_tokenizer: str


def world_captions(world: Path, count: int) -> list[str]:
    """The first ``count`` training captions of a synthetic world's COCO split."""
    entries = json.loads((world / "coco" / "annotations" / "coco_karpathy_train.json").read_text())
    return [entry["caption"] for entry in entries[:count]]


def texts(work: Path, world: Callable[[], Path]) -> Texts:
    """The text of ``work/text``, made first from the world that ``world()`` returns (made on demand) if missing."""
    from vlreg.models.tokenizers import save_tokenizer, train_tokenizer

    folder = work / "text"
    paths = {"captions": folder / "captions.json", "opt": folder / "tokenizer_opt", "bert": folder / "tokenizer_bert"}
    if not (paths["captions"].exists() and all((paths[k] / "tokenizer_config.json").exists() for k in ("opt", "bert"))):
        root = world()
        captions = world_captions(root, 10_000)
        corpus = (root / "text" / "corpus.txt").read_text().splitlines()
        save_tokenizer(train_tokenizer(corpus + captions, "opt", vocab_size=900), paths["opt"])
        save_tokenizer(train_tokenizer(captions, "bert", vocab_size=900), paths["bert"])
        paths["captions"].write_text(json.dumps(captions))
    return Texts(json.loads(paths["captions"].read_text()), str(paths["opt"]), str(paths["bert"]))
