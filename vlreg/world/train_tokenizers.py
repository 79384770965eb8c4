"""``train_tokenizers``: the tokenizers the world's models use, trained on the world's text once.

The world's LLMs, Q-Formers and P-Formers have no tokenizer to download, so a stage
of the world's recipes trains them before the first model needs one::

    - name: tokenizers
      task:
        name: train_tokenizers
        tokenizers:
          - {path: "${vars.world}/backbones/tokenizers/opt", style: opt, vocab_size: 1000}
          - {path: "${vars.world}/backbones/tokenizers/bert", style: bert, vocab_size: 1000}
        texts: {includes: [world/lm_text.yaml]}   # a dataset node: what they learn from

A tokenizer whose directory exists is kept; the texts are read only when one is missing
(see :func:`vlreg.tasks.base.dataset_texts` for what an item's text is), with torch's random
numbers seeded (question-answer items draw one of their answers), and the tokenizers train
deterministically (:func:`vlreg.models.tokenizers.train_tokenizer`): the same world gives the same
tokenizers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..build import checked
from ..registry import register
from ..tasks.preparation import Preparation


@dataclass
class TokenizerToTrain:
    """A tokenizer to create at ``path`` when it does not exist: ``style`` (opt, t5, bert) and ``vocab_size``."""

    path: str
    style: Literal["opt", "t5", "bert"]
    vocab_size: int = 1000


def _a_dataset_node(value: Any, where: str) -> None:
    from ..build import validate

    validate("dataset", value, where)


@register("task", "train_tokenizers")
class TrainTokenizers(Preparation):
    """Train each missing tokenizer on the texts of a dataset (see the module docstring).

    Args:
        tokenizers: the tokenizers, each ``{path, style, vocab_size}`` (:mod:`vlreg.models.tokenizers`).
        texts: the dataset node whose items' texts they learn from; built only when one is missing.
    """

    def __init__(self, tokenizers: list[TokenizerToTrain], texts: checked(dict, _a_dataset_node)):
        self.tokenizers, self.texts = tokenizers, texts

    def prepare(self) -> None:
        from ..build import build
        from ..distributed import barrier, is_main
        from ..models.tokenizers import TokenizerSpec, ensure_tokenizer
        from ..tasks.base import dataset_texts

        missing = [spec for spec in self.tokenizers if not Path(spec.path).is_dir()]
        if missing and is_main():
            import torch

            with torch.random.fork_rng(devices=[]):  # answers are drawn: the same draws every time
                torch.manual_seed(0)
                texts = dataset_texts(build("dataset", self.texts, "texts"))
            for spec in missing:
                ensure_tokenizer(spec.path, TokenizerSpec(spec.style, spec.vocab_size), lambda: texts)
                print(f"[vlreg] tokenizer {spec.path}: trained ({spec.style}, {spec.vocab_size} tokens)", flush=True)
        barrier()
