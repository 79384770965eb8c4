"""The P-Former paper's central claim, in miniature, on the synthetic world.

Claim: a P-Former pretrained on text alone improves a BLIP-2 trained on few image-text
pairs, and narrows the gap to one trained on many. The paper's supplement (FlanT5-XL,
zero-shot VQAv2 / OK-VQA / GQA): BLIP-2 on 4M pairs 48.3 / 31.5 / 36.4; with P-Former on
the same 4M 54.9 / 35.7 / 40.3; BLIP-2 on 129M pairs 62.6 / 39.4 / 44.4.

Arms, for images (COCO-format world data) and for video (MSRVTT-format):

1. ``blip2_N``     BLIP-2 trained on N pairs;
2. ``pformer_N``   BLIP-2 + P-Former alignment on the same N pairs (P-Former pretrained on the
                   text-only corpus, in the base project's ``pformer`` stage);
3. ``blip2_10N``   BLIP-2 trained on 10 N pairs.

Each arm runs stage 1, stage 2 and the QA fine-tuning of the base project
(``projects/pformer/{image,video}.yaml``) with the given seed, and reports R@1 (stage 1's
retrieval; mean of text and media retrieval), CIDEr (stage 2's captioning) and VQA accuracy
(the QA stage). N counts image-text pairs (training annotation entries: a picture or clip with
five captions is five pairs). The backbones and the P-Former are the base project's, trained
once and shared by every arm.

    python benchmarks/pformer_lowdata/run.py --modality image video --seeds 0 1 2
    python benchmarks/pformer_lowdata/run.py --modality video --seeds 0 --scale 0.25   # a quick look

It writes ``results.json``, ``results.md`` and ``results.png`` next to this file (or ``--out``);
each arm's run goes under ``--work`` (default ``outputs/pformer_lowdata``), and ``runs.jsonl``
there records every finished arm, so an interrupted experiment continues where it stopped and
several processes (say one per modality) can share the work.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARMS = ("blip2_N", "pformer_N", "blip2_10N")
# metric label -> (the task of the stage that reports it, its key in that stage's final metrics)
METRICS = {"R@1": ("pretrain_stage1", "r1"), "CIDEr": ("pretrain_stage2", "CIDEr"), "VQA acc": ("vqa", "accuracy")}
PAIRED = ("pretrain_stage1", "pretrain_stage2")  # the stages trained on image-text pairs


def trained(stage: dict[str, Any]) -> bool:
    """A stage each arm trains anew (BLIP-2's stages and the QA fine-tuning), as opposed to the
    backbones and P-Former stage 0, which every arm shares with the base project."""
    return stage["task"]["name"] in (*PAIRED, "vqa")


def arm_project(base: dict[str, Any], arm: str, pairs: int, seed: int, scale: float, out: Path) -> dict:
    """The base project's stages for one arm and seed: its own output directory, pairs and losses."""
    project = copy.deepcopy(base)
    project["name"] = f"{base['name']}_{arm}_seed{seed}"
    base_dir = Path(base["output_dir"])
    project["output_dir"] = str(out / project["name"])
    stages = []
    for stage in project["stages"]:
        name = stage["name"]
        if not trained(stage):  # backbones and the P-Former: the base project's, shared
            stage.setdefault("run", {})["output_dir"] = stage["run"].get("output_dir") or str(base_dir / name)
            stages.append(stage)
            continue
        model, run = stage["model"], stage["run"]
        run["seed"] = seed
        if stage.get("feature_cache") is True:  # the base project's cache: same media, same frozen encoder
            stage["feature_cache"] = str(base_dir / "feature_cache")
        if scale != 1:
            run["max_steps"] = max(1, round(run["max_steps"] * scale))
            run["warmup_steps"] = round(run.get("warmup_steps", 0) * scale)
            run["checkpoint_every"] = 0
        if stage["task"]["name"] in PAIRED:
            stage["data"]["train"]["max_samples"] = pairs
            if arm.startswith("blip2"):
                model.pop("prompter", None)
                model["losses"]["align"] = 0
            else:
                model["prompter"]["checkpoint"] = str(base_dir / "pformer")
        stages.append(stage)
    project["stages"] = stages
    return project


def run_arm(project: dict[str, Any]) -> dict[str, float]:
    from vlreg.pipeline import Project

    built = Project.from_config(project)
    built.run(built.stages)
    results = json.loads((Path(project["output_dir"]) / "results.json").read_text())["stages"]
    by_task = {s["task"]["name"]: s["name"] for s in project["stages"]}
    metrics = {}
    for label, (task, key) in METRICS.items():
        final = results[by_task[task]]["final"]
        metrics[label] = (final["txt_r1"] + final["img_r1"]) / 2 if key == "r1" else final[key]
    return metrics


# where the text-only baseline (vlreg.data.world.baseline) keeps each metric, per modality
BASELINE = {
    "image": {"R@1": ("retrieval_chance", "coco_test"), "CIDEr": ("coco_caption", "test"),
              "VQA acc": ("vqav2_val2014", None)},
    "video": {"R@1": ("retrieval_chance", "msrvtt_1ka_test"), "CIDEr": ("msrvtt_caption", "test"),
              "VQA acc": ("msrvtt_qa", "test")},
}


def text_only(world: Path, modality: str) -> dict[str, float]:
    """The best scores without looking at the media, in the units of :func:`run_arm`."""
    from vlreg.data.world import text_only_baseline

    where = BASELINE[modality]
    scores = text_only_baseline(world, parts=sorted({part for part, _ in where.values()}))
    row = {}
    for label, (part, split) in where.items():
        value = scores[part] if split is None else scores[part][split]
        if label == "R@1":
            row[label] = (value["txt_r1"] + value["img_r1"]) / 2
        elif label == "CIDEr":
            row[label] = value["CIDEr"]
        else:
            row[label] = value["overall"] if split is None else value
    return row


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{modality: {arm: {metric: mean, metric_std: std}}}`` over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for modality in sorted({r["modality"] for r in runs}):
        for arm in ARMS:
            chosen = [r["metrics"] for r in runs if r["modality"] == modality and r["arm"] == arm]
            if not chosen:
                continue
            row = {}
            for label in METRICS:
                values = [m[label] for m in chosen]
                row[label] = statistics.mean(values)
                row[f"{label}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row["seeds"] = len(chosen)
            table.setdefault(modality, {})[arm] = row
    return table


def markdown(table: dict, pairs: dict[str, int], baselines: dict[str, dict[str, float]]) -> str:
    lines = []
    for modality, arms in table.items():
        n = pairs[modality]
        lines += [f"**{modality}** (N = {n} pairs)", "",
                  "| arm | pairs | " + " | ".join(METRICS) + " | seeds |",
                  "|---|---:|" + "---:|" * len(METRICS) + "---:|"]
        if modality in baselines:
            cells = " | ".join(f"{baselines[modality][m]:.2f}" for m in METRICS)
            lines.append(f"| text only (no media) | | {cells} | |")
        for arm, row in arms.items():
            count = 10 * n if arm.endswith("10N") else n
            cells = " | ".join(f"{row[m]:.2f} ± {row[f'{m}_std']:.2f}" for m in METRICS)
            lines.append(f"| {arm} | {count} | {cells} | {row['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def plot(table: dict, baselines: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modalities = list(table)
    fig, axes = plt.subplots(len(modalities), len(METRICS), figsize=(4 * len(METRICS), 3 * len(modalities)),
                             squeeze=False)
    colours = {"blip2_N": "#9e9e9e", "pformer_N": "#1f77b4", "blip2_10N": "#2ca02c"}
    for i, modality in enumerate(modalities):
        for j, metric in enumerate(METRICS):
            ax = axes[i][j]
            arms = list(table[modality])
            means = [table[modality][a][metric] for a in arms]
            stds = [table[modality][a][f"{metric}_std"] for a in arms]
            ax.bar(arms, means, yerr=stds, capsize=4, color=[colours[a] for a in arms])
            if modality in baselines:
                ax.axhline(baselines[modality][metric], color="#d62728", linestyle="--", linewidth=1,
                           label="text only")
                ax.legend(fontsize=7, loc="lower right")
            ax.set_title(f"{modality}: {metric}")
            ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", nargs="+", choices=["image", "video"], default=["image", "video"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pairs", nargs="+", default=["image=1000", "video=300"],
                        help="N per modality, e.g. image=1000 video=300")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the project's optimizer (and warm-up) steps each trained stage runs")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--out", type=Path, default=HERE, help="where the table, JSON and plot go")
    parser.add_argument("--work", type=Path, default=Path("outputs/pformer_lowdata"), help="the arms' runs")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from vlreg.config import load_config, to_plain
    from vlreg.pipeline import Project

    pairs = {k: int(v) for k, v in (p.split("=") for p in args.pairs)}
    args.work.mkdir(parents=True, exist_ok=True)
    runs_file = args.work / "runs.jsonl"
    done = [json.loads(line) for line in runs_file.read_text().splitlines()] if runs_file.exists() else []
    world_roots = {}
    for modality in ("image", "video"):
        base = to_plain(load_config(ROOT / "projects" / "pformer" / f"{modality}.yaml"))
        world_roots[modality] = base["world"]["root"]
        if modality not in args.modality:
            continue
        prepared = Project.from_config(base)  # the backbones and the P-Former, once
        prepared.run([s for s in prepared.stages if not trained(s.config)])
        for seed in args.seeds:
            for arm in args.arms:
                if any(r["modality"] == modality and r["arm"] == arm and r["seed"] == seed for r in done):
                    continue
                n = pairs[modality] * (10 if arm.endswith("10N") else 1)
                started = time.time()
                project = arm_project(base, arm, n, seed, args.scale, args.work)
                record = {"modality": modality, "arm": arm, "seed": seed, "pairs": n,
                          "metrics": run_arm(project), "seconds": round(time.time() - started, 1)}
                done.append(record)
                with runs_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
    if runs_file.exists():  # with the runs other processes finished meanwhile
        done = [json.loads(line) for line in runs_file.read_text().splitlines()]
    table = summarise(done)
    baselines = {m: text_only(Path(world_roots[m]), m) for m in table if m in world_roots}
    payload = {"pairs": pairs, "table": table, "text_only": baselines, "runs": done}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    (args.out / "results.md").write_text(markdown(table, pairs, baselines))
    plot(table, baselines, args.out / "results.png")
    print(markdown(table, pairs, baselines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
