"""The results table printed at the end of a project run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

# metrics worth a column, in this order, when a stage reports them
HEADLINE = ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L", "accuracy", "txt_r1", "img_r1", "r_mean",
            "token_accuracy", "unigram_token_accuracy", "reconstruction", "loss")


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of one stage's metrics, in a fixed order."""
    return {k: metrics[k] for k in HEADLINE if isinstance(metrics.get(k), (int, float))}


def format_results(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per stage: its final evaluation's headline metrics and its duration."""
    lines = []
    width = max((len(name) for name in results), default=5)
    for name, result in results.items():
        metrics = headline_metrics(result.get("final") or {})
        cells = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()) or "(no evaluation)"
        seconds = result.get("time_s")
        duration = f"{seconds:7.1f}s" if isinstance(seconds, (int, float)) else " " * 8
        lines.append(f"{name.ljust(width)}  {duration}  {cells}")
    return "\n".join(lines)


def print_results(results: Mapping[str, Mapping[str, Any]], summary_file: Path) -> None:
    print("\nresults")
    print(format_results(results))
    print(f"\nresults written to {summary_file}")
