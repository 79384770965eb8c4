"""A per-component summary: registered name, output shape, total and trainable parameters.

Used by ``--dry-run``, which builds the model on the meta device: shapes come from
running each part on a meta example input, so nothing is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .assembly import VisionLanguageModel


@dataclass
class Row:
    role: str
    name: str
    output: str
    total: int
    trainable: int


def _count(module: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def summarise(model: VisionLanguageModel, names: dict[str, str], batch_size: int = 2) -> list[Row]:
    """One row per present component (plus the total), shapes for a batch of ``batch_size``."""
    rows: list[Row] = []
    features = None
    with torch.no_grad():
        if model.encoder is not None:
            media, mask = model.encoder.example_input(batch_size, device=model.encoder.device)
            features = model.encoder(media, mask)
            rows.append(Row("encoder", names.get("encoder", "?"), f"tokens {list(features.tokens.shape)}",
                            *_count(model.encoder)))
        if model.bridge is not None:
            output = "?"
            if features is not None and getattr(model.bridge, "llm_width", None):
                output = f"prompts {list(model.bridge(features).embeds.shape)}"
            elif hasattr(model.bridge, "num_queries"):
                output = f"queries [{batch_size}, {model.bridge.num_queries}, ...]"
            rows.append(Row("bridge", names.get("bridge", "?"), output, *_count(model.bridge)))
    if model.prompter is not None:
        rows.append(Row("prompter", names.get("prompter", "?"),
                        f"prompts [{batch_size}, {model.prompter.num_prompts}, {model.prompter.llm_width}]",
                        *_count(model.prompter)))
    if model.llm is not None:
        vocab = model.llm.token_embeddings().shape[0]
        rows.append(Row("llm", names.get("llm", "?"), f"logits [{batch_size}, L, {vocab}]", *_count(model.llm)))
    rows.append(Row("total", "", "", *_count(model)))
    return rows


def format_rows(rows: list[Row]) -> str:
    """A plain-text table of the rows."""
    header = ("component", "name", "output", "parameters", "trainable")
    body = [(r.role, r.name, r.output, f"{r.total:,}", f"{r.trainable:,}") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
