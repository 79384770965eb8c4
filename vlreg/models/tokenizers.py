"""Tokenizers trained locally, in the conventions of the models they stand in for.

Real runs load the tokenizer that ships with a checkpoint (``facebook/opt-2.7b``,
``google/flan-t5-xl``, ``bert-base-uncased``). Tests and the synthetic world have
no hub, so they train one of the same family on their own text in well under a
second and save it as a transformers tokenizer directory:

- ``opt``:  byte-level BPE; ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2 (bos and eos), ``<unk>`` 3;
  ``</s>`` is prepended to every sequence, as OPT's tokenizer does.
- ``t5``:   unigram over metaspace pieces; ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2;
  ``</s>`` is appended, as T5's tokenizer does; no bos.
- ``bert``: lower-cased WordPiece; ``[PAD]`` 0, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``,
  and ``[DEC]``, the bos token BLIP-2's Q-Former uses for image-grounded generation;
  ``[CLS] text [SEP]``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

Style = Literal["opt", "t5", "bert"]


def train_tokenizer(lines: Iterable[str], style: Style, vocab_size: int = 1000):
    """Train a tokenizer of ``style`` on ``lines``; returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = list(lines)
    if style == "opt":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(lines, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
        tok.post_processor = processors.TemplateProcessing(
            single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", 2)])
        names = dict(bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    elif style == "t5":
        specials = ["<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(lines, trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False))
        tok = _in_canonical_order(tok, len(specials))
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
        names = dict(eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    elif style == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
        tok = Tokenizer(models.WordPiece(vocab={"[UNK]": 0}, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.model = models.WordPiece(vocab=_whole_word_vocab(tok, lines, specials, vocab_size), unk_token="[UNK]")
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        names = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                     mask_token="[MASK]", bos_token="[DEC]")
    else:
        raise ValueError(f"unknown tokenizer style {style!r}; one of opt, t5, bert")
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def _in_canonical_order(tok: Any, specials: int) -> Any:
    """``tok`` (Unigram) with its learned pieces numbered by score, then string; the specials keep ids
    ``0 .. specials - 1``. The trainer numbers pieces of equal score in an order that changes from
    process to process (hash-map order), and the same lines must give the same token ids."""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]  # [[piece, score], ...] in id order
    state["model"]["vocab"] = vocab[:specials] + sorted(vocab[specials:], key=lambda entry: (-entry[1], entry[0]))
    return Tokenizer.from_str(json.dumps(state))


def _whole_word_vocab(tok: Any, lines: list[str], specials: list[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary of whole words: the specials, every character alone and as a ``##``
    continuation, then the most frequent words (ties by string) up to ``vocab_size``.

    Built here rather than by the tokenizers library's WordPiece trainer, whose merges of equally
    frequent pairs follow hash-map order and so differ from process to process. A word outside the
    vocabulary falls back to its characters, as WordPiece does.
    """
    from collections import Counter

    counts: Counter = Counter()
    for line in lines:
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(line)))
    alphabet = sorted({char for word in counts for char in word})
    tokens = [*specials, *alphabet, *(f"##{char}" for char in alphabet)]
    known = set(tokens)
    words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if word not in known]
    tokens += words[:max(0, vocab_size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}


def save_tokenizer(tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save as a directory that ``AutoTokenizer.from_pretrained`` reads."""
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(source: str | os.PathLike):
    """A tokenizer by hub name or local directory (``AutoTokenizer.from_pretrained``)."""
    from transformers import AutoTokenizer

    from ..errors import UserError

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tokenizer {str(source)!r}: {' '.join(str(exc).split())[:300]}") from None


@dataclass
class TokenizerSpec:
    """How to train a tokenizer that does not exist yet: its ``style`` and ``vocab_size``."""

    style: Style
    vocab_size: int = 1000


def ensure_tokenizer(path: str | os.PathLike, spec: TokenizerSpec, lines: Callable[[], Iterable[str]]) -> Path:
    """The tokenizer directory ``path``, trained on ``lines()`` and saved there first if it is missing.

    The directory appears whole or not at all (saved beside it, then renamed), so an
    interrupted run trains it again rather than reading half a tokenizer.
    """
    path = Path(path)
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        save_tokenizer(train_tokenizer(lines(), spec.style, spec.vocab_size), staging)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
