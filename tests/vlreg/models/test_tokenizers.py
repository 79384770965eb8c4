"""Tokenizers trained on given lines: the special tokens of each style, the same ids in every process."""

import pytest

from vlreg.models.tokenizers import TokenizerSpec, ensure_tokenizer, load_tokenizer

from tests.common import ROOT


def test_ensure_tokenizer_trains_on_the_given_lines(tmp_path):
    path = ensure_tokenizer(tmp_path / "bert", TokenizerSpec("bert", 200), lambda: ["a red circle"] * 50)
    tokenizer = load_tokenizer(path)
    assert tokenizer.cls_token == "[CLS]" and tokenizer.bos_token == "[DEC]"
    assert tokenizer.tokenize("a red circle") == ["a", "red", "circle"]


@pytest.mark.slow
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
