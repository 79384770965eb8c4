"""A per-component summary: registered name, output shape, total and trainable parameters.

Used by ``--dry-run``, which builds the model on the meta device: shapes come from
running each part on a meta example input, so nothing is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def parts_of(model: torch.nn.Module, roles: list[str]) -> dict[str, torch.nn.Module]:
    """The model's components by role: attributes named after the roles, or the model itself
    when a task's model is a single component (an LLM being pretrained)."""
    parts = {role: getattr(model, role) for role in roles if isinstance(getattr(model, role, None), torch.nn.Module)}
    if not parts and len(roles) == 1:
        parts = {roles[0]: model}
    return parts


def summarise(model: torch.nn.Module, names: dict[str, str], batch_size: int = 2) -> list[Row]:
    """One row per component (plus the total), with output shapes for a batch of ``batch_size``."""
    parts = parts_of(model, list(names))
    rows: list[Row] = []
    features = None
    with torch.no_grad():
        encoder = parts.get("encoder")
        if encoder is not None:
            media, mask = encoder.example_input(batch_size, device=encoder.device)
            features = encoder(media, mask)
            rows.append(Row("encoder", names["encoder"], f"tokens {list(features.tokens.shape)}", *_count(encoder)))
        bridge = parts.get("bridge")
        if bridge is not None:
            output = "?"
            if features is not None and getattr(bridge, "llm_width", None):
                output = f"prompts {list(bridge(features).embeds.shape)}"
            elif hasattr(bridge, "num_queries"):
                output = f"queries [{batch_size}, {bridge.num_queries}, ...]"
            rows.append(Row("bridge", names["bridge"], output, *_count(bridge)))
    prompter = parts.get("prompter")
    if prompter is not None:
        rows.append(Row("prompter", names["prompter"],
                        f"prompts [{batch_size}, {prompter.num_prompts}, {prompter.llm_width}]", *_count(prompter)))
    llm = parts.get("llm")
    if llm is not None:
        vocab = llm.token_embeddings().shape[0]
        rows.append(Row("llm", names["llm"], f"logits [{batch_size}, L, {vocab}]", *_count(llm)))
    rows.append(Row("total", "", "", *_count(model)))
    return rows


def objectives_line(model: torch.nn.Module) -> str | None:
    """``objectives: blip2_stage1 (itc 1, itm 1, itg 1), pformer_alignment (align 10)``: what the model
    trains, with the weight of each loss it computes; None for a model without objectives."""
    from .assembly import objective_name

    objectives = getattr(model, "objectives", None)
    if not objectives:
        return None
    parts = [f"{objective_name(o)} ({', '.join(f'{k} {v:g}' for k, v in o.active().items()) or 'off'})"
             for o in objectives]
    return "objectives: " + ", ".join(parts)


def format_rows(rows: list[Row]) -> str:
    """A plain-text table of the rows."""
    header = ("component", "name", "output", "parameters", "trainable")
    body = [(r.role, r.name, r.output, f"{r.total:,}", f"{r.trainable:,}") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
