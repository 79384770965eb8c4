"""A benchmark record as ``results.json``, a markdown table (``results.md``) and a chart (``results.png``).

The table has one row per evaluation and headline metric and one column per model; an
evaluation a model cannot run shows ``n/a [k]``, with footnote k giving the reason. The
chart has one panel per evaluation, a group of bars per headline metric, one bar per
model. Numbers are the tasks' own (pycocoevalcap's fractions for captions, percentages
for VQA accuracy and retrieval recall).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

SKIPPED = ("skipped_media",)


def headline(record: Mapping[str, Any], key: str) -> list[str]:
    """The metrics shown for an evaluation: the suite's list, else every number any model reported."""
    suite, name = key.split("/", 1)
    chosen = record["suites"][suite]["evaluations"][name].get("metrics")
    if chosen:
        return list(chosen)
    seen: list[str] = []
    for results in record["results"].values():
        for metric in (results[key].get("metrics") or {}):
            if metric not in seen and metric not in SKIPPED:
                seen.append(metric)
    return seen


def format_value(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def markdown(record: Mapping[str, Any]) -> str:
    """The record as a markdown document: the table, its n/a footnotes, models and settings."""
    models = list(record["results"])
    lines = [f"# Benchmark: {', '.join(record['suites'])}", ""]
    if record.get("quick"):
        lines += ["Quick run (fewer samples, faster settings): not comparable with published numbers.", ""]
    lines += ["| evaluation | metric | " + " | ".join(models) + " |",
              "|---|---|" + "---:|" * len(models)]
    notes: dict[tuple[str, str], list[str]] = {}  # (model, reason) -> the evaluations it explains
    for key in record["evaluations"]:
        cells = []
        for model in models:
            result = record["results"][model][key]
            if result["status"] == "ok":
                cells.append(result["metrics"])
            else:
                notes.setdefault((model, result["reason"]), []).append(key)
                cells.append(f"n/a [{list(notes).index((model, result['reason'])) + 1}]")
        for metric in headline(record, key) or ["–"]:
            row = [c if isinstance(c, str) else format_value(c.get(metric)) for c in cells]
            lines.append(f"| {key} | {metric} | " + " | ".join(row) + " |")
    footnotes = [f"[{i}] **{model}** ({', '.join(keys)}): {reason}"
                 for i, ((model, reason), keys) in enumerate(notes.items(), 1)]
    lines += ["", *(footnotes + [""] if footnotes else []), "![results](results.png)", "", "## Models", ""]
    for model, about in record["models"].items():
        lines.append(f"- **{model}**: `{about['source']}` ({about['kind']}: {', '.join(about['models'])})")
        for key, result in record["results"][model].items():
            if result["status"] == "ok":
                lines.append(f"  - {key}: {result['stage']} (`{result['model']}`), {result['seconds']} s")
    lines += ["", "## Settings", ""]
    for suite, about in record["suites"].items():
        for name, settings in about["evaluations"].items():
            lines.append(f"- {suite}/{name} ({settings['media']}; needs {', '.join(settings['needs']) or 'nothing'}): "
                         f"task `{json.dumps(settings['task'])}`, dataset `{json.dumps(settings['dataset'])}`")
    return "\n".join(lines) + "\n"


def chart(record: Mapping[str, Any], path: Path) -> Path:
    """A PNG with one panel per evaluation: bars per headline metric some model reported, one per model,
    "n/a" where a model could not run the evaluation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    models = list(record["results"])
    keys = list(record["evaluations"])
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    figure = Figure(figsize=(5.5 * cols, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    colours = [f"C{i % 10}" for i in range(len(models))]
    width = 0.8 / max(len(models), 1)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(rows, cols, index + 1)
        reported = [m for m in headline(record, key) if any(
            m in (results[key].get("metrics") or {}) for results in record["results"].values())]
        metrics = reported or headline(record, key) or ["–"]
        for m, model in enumerate(models):
            result = record["results"][model][key]
            xs = [i - 0.4 + width * (m + 0.5) for i in range(len(metrics))]
            if result["status"] != "ok":
                for x in xs:
                    axes.text(x, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=8, color=colours[m])
                continue
            values = [result["metrics"].get(metric) for metric in metrics]
            heights = [v if isinstance(v, (int, float)) and not math.isnan(v) else 0.0 for v in values]
            axes.bar(xs, heights, width, color=colours[m])
        axes.set_xticks(range(len(metrics)), metrics, fontsize=8)
        axes.set_xlim(-0.5, len(metrics) - 0.5)
        axes.set_title(key, fontsize=10)
        axes.set_ylim(bottom=0)
    handles = [Patch(color=colour, label=model) for model, colour in zip(models, colours)]
    figure.legend(handles=handles, loc="outside lower center", ncols=max(len(models), 1))
    figure.savefig(path, dpi=100)
    return path


def write_reports(record: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "results.png"}
    paths["json"].write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    paths["markdown"].write_text(markdown(record), encoding="utf-8")
    chart(record, paths["chart"])
    return paths
