"""The text-only corpus: ``text/corpus.txt`` (one sentence per line) and ``text/corpus.jsonl`` (``{"text"}``)."""

from __future__ import annotations

import json
from pathlib import Path

from .writing import write_lines


def write(root: Path, sentences: list[str]) -> dict[str, str]:
    """Both files; returns their paths by name, relative to ``root``."""
    write_lines(root / "text" / "corpus.txt", sentences)
    write_lines(root / "text" / "corpus.jsonl", (json.dumps({"text": s}) for s in sentences))
    return {"corpus_txt": "text/corpus.txt", "corpus_jsonl": "text/corpus.jsonl"}
