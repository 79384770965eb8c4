"""The P-Former paper's central claim, in miniature, on the synthetic world.

Claim: a P-Former pretrained on text alone improves a BLIP-2 trained on few image-text
pairs, and narrows the gap to one trained on many. The paper's supplement (FlanT5-XL,
zero-shot VQAv2 / OK-VQA / GQA): BLIP-2 on 4M pairs 48.3 / 31.5 / 36.4; with P-Former on
the same 4M 54.9 / 35.7 / 40.3; BLIP-2 on 129M pairs 62.6 / 39.4 / 44.4.

Arms, for images (COCO-format world data) and for video (MSRVTT-format):

1. ``blip2_N``      BLIP-2 trained on N pairs;
2. ``pformer_N``    BLIP-2 + P-Former alignment on the same N pairs (the paper's weights: 10 in
                    stage 1, 100 in stage 2);
3. ``blip2_10N``    BLIP-2 trained on 10 N pairs;
4. ``pformer_10N``  BLIP-2 + P-Former alignment on 10 N pairs.

The study's project per modality is the main job's (``projects/pformer/{image,video}.yaml``)
with these changes (:func:`study_project`): its own world and backbones; an LM that also
reads caption pairs ``A</s>B`` of one item (it learns to use what came before); a stronger,
longer P-Former stage 0, shared by both modalities; a zero-shot VQA stage after stage 2
(the stage-2 model answers the test questions with "Question: {} Short answer:", no QA
training), before the secondary QA fine-tuning. Each arm trains stage 1 and stage 2 for a
fixed number of epochs over its pairs (``--budget epochs``, a budget proportional to its data:
10 N pairs get 10 times the steps; ``--budget steps``: every arm gets the 10 N arm's steps),
and reports R@1 (stage 1's retrieval, mean of both directions), CIDEr (stage 2's captioning),
zero-shot VQA accuracy, and fine-tuned VQA accuracy (the QA stage: every arm fine-tuned for the
same steps on the whole QA training split). N counts pairs (a picture or clip with five
captions is five pairs; an arm takes the first N).

    python benchmarks/pformer_lowdata/run.py --prepare-only              # world, LM, vision, P-Former
    OMP_NUM_THREADS=1 python benchmarks/pformer_lowdata/run.py &         # two processes share the arms
    OMP_NUM_THREADS=1 python benchmarks/pformer_lowdata/run.py

It writes ``results.json``, ``results.md`` and ``results.png`` next to this file (or ``--out``);
each arm's run goes under ``--work`` (default ``outputs/pformer_lowdata/study``), and
``runs.jsonl`` there records every finished arm, so an interrupted study continues where it
stopped; processes claim an arm before running it (``claims/``), so several can share the work.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARMS = ("blip2_N", "pformer_N", "blip2_10N", "pformer_10N")
# metric label -> (the stage that reports it, its key in that stage's final metrics)
METRICS = {"R@1": ("stage1", "r1"), "CIDEr": ("stage2", "CIDEr"), "ZS VQA": ("zeroshot", "accuracy"),
           "FT VQA": ("qa", "accuracy")}
PAIRED = ("stage1", "stage2")  # the stages trained on the arm's image-text pairs
TRAINED = (*PAIRED, "zeroshot", "qa")  # the stages every arm runs anew; the others are shared backbones

# The study's settings (each can be changed on the command line)
PAIRS = {"image": 500, "video": 300}
EPOCHS = {"stage1": 3, "stage2": 6}  # passes over an arm's pairs; the main job: about 3 and 5 over 3,000 pairs
ALIGN = {"stage1": 10, "stage2": 100}  # the paper's alignment weights
LM_STEPS = 600
PFORMER = {"hidden_size": 256, "intermediate_size": 1024, "max_steps": 1500}


def study_project(modality: str, world: Path) -> dict[str, Any]:
    """The main job's project for ``modality``, changed as the module docstring says."""
    from vlreg.config import load_config, to_plain

    backbones = world / "backbones"
    project = to_plain(load_config(ROOT / "projects" / "pformer" / f"{modality}.yaml",
                                   [f"vars.world={world}", f"output_dir={world.parent / modality}"]))
    stages = {stage["name"]: stage for stage in project["stages"]}
    stages["qa"] = stages.pop("qa", None) or dict(stages.pop("vqa"), name="qa")

    # The LM also reads pairs of captions of one item: "A</s>B". described_questions puts caption
    # i mod 5 of its item before question i; with one item in front (concat), caption i is preceded
    # by caption i+1 of its item, so A and B differ.
    lm = stages["lm"]
    for described in [d for d in lm["data"]["train"]["datasets"] if d["name"] == "described_questions"]:
        captions = described["captions"]
        lm["data"]["train"]["datasets"].append(
            {"name": "described_questions", "separator": "</s>", "captions": captions,
             "questions": {"name": "concat", "datasets": [dict(captions, max_samples=1), captions]}})
    lm["run"]["max_steps"] = LM_STEPS
    stages["tokenizers"]["task"]["texts"] = lm["data"]["train"]  # the tokenizers learn the LM's text

    pformer = stages["pformer"]  # shared by both modalities
    pformer["run"].update(output_dir=str(backbones / "pformer"), max_steps=PFORMER["max_steps"],
                          warmup_steps=PFORMER["max_steps"] // 10)
    pformer["model"]["prompter"].update(hidden_size=PFORMER["hidden_size"],
                                        intermediate_size=PFORMER["intermediate_size"])
    for name in PAIRED:
        stages[name]["model"]["prompter"].update(checkpoint=str(backbones / "pformer"),
                                                 hidden_size=PFORMER["hidden_size"],
                                                 intermediate_size=PFORMER["intermediate_size"])

    qa = stages["qa"]  # zero-shot: the stage-2 model answers with the paper's prompt, no QA training
    zeroshot = copy.deepcopy(qa)
    zeroshot.update(name="zeroshot", data={"eval": qa["data"]["eval"]})
    zeroshot["run"].update(max_steps=0, warmup_steps=0)
    order = ["world", "tokenizers", "lm", "vision", "pformer", "stage1", "stage2"]
    project["stages"] = [stages[name] for name in order] + [zeroshot, qa]
    return project


def arm_project(study: dict[str, Any], arm: str, pairs: int, seed: int, epochs: dict[str, float],
                align: dict[str, float], work: Path, budget_pairs: int | None = None) -> dict[str, Any]:
    """The study's stages for one arm and seed: its own output directory, pairs, steps and losses.

    Stages 1 and 2 train for ``epochs`` passes over ``budget_pairs`` (default: the arm's own
    ``pairs``); with ``budget_pairs`` = 10 N, every arm trains for the steps of the 10 N arm."""
    project = copy.deepcopy(study)
    project["name"] = f"{study['name']}_{arm}_seed{seed}"
    project["output_dir"] = str(work / project["name"])
    for stage in project["stages"]:
        if stage["name"] not in TRAINED:
            continue
        run, model = stage["run"], stage["model"]
        run.update(seed=seed, checkpoint_every=0)
        if stage["name"] not in PAIRED:
            continue
        stage["data"]["train"]["max_samples"] = pairs
        run["max_steps"] = max(1, math.ceil(epochs[stage["name"]] * (budget_pairs or pairs) / run["batch_size"]))
        run["warmup_steps"] = run["max_steps"] // 10
        model["losses"] = [o for o in model["losses"] if o["name"] != "pformer_alignment"]
        if arm.startswith("blip2"):
            model.pop("prompter", None)
        else:
            model["losses"].append({"name": "pformer_alignment", "weight": align[stage["name"]]})
    return project


def run_arm(project: dict[str, Any]) -> dict[str, float]:
    from vlreg.pipeline import Project

    built = Project.from_config(project)
    built.run([s for s in built.stages if s.name in TRAINED])
    metrics = {}
    for label, (stage, key) in METRICS.items():
        final = json.loads((Path(project["output_dir"]) / stage / "results.json").read_text())["final"]
        metrics[label] = (final["txt_r1"] + final["img_r1"]) / 2 if key == "r1" else final[key]
    return metrics


def prepare(modality: str, world: Path, arms: list[str]) -> dict[str, Any]:
    """The study's project, with the shared stages ``arms`` need (world, LM, vision; P-Former for
    P-Former arms) run once, under a lock."""
    from vlreg.pipeline import Project

    study = study_project(modality, world)
    world.parent.mkdir(parents=True, exist_ok=True)
    built = Project.from_config(study)
    shared = [s for s in built.stages if s.name not in TRAINED
              and (s.name != "pformer" or any(arm.startswith("pformer") for arm in arms))]
    if not all(s.completed for s in shared):
        with open(world.parent / "prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            built.run(shared)
    return study


def claim(work: Path, key: str) -> bool:
    """Take the arm ``key`` for this process, unless a live process holds it."""
    folder = work / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            path.unlink(missing_ok=True)  # its holder died: take it over
            return claim(work, key)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


# -- results --------------------------------------------------------------------
# where the text-only baseline (vlreg.data.world.baseline) keeps each metric, per modality
BASELINE = {
    "image": {"R@1": ("retrieval_chance", "coco_test"), "CIDEr": ("coco_caption", "test"),
              "VQA": ("vqav2_val2014", None)},
    "video": {"R@1": ("retrieval_chance", "msrvtt_1ka_test"), "CIDEr": ("msrvtt_caption", "test"),
              "VQA": ("msrvtt_qa", "test")},
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
    return {"R@1": row["R@1"], "CIDEr": row["CIDEr"], "ZS VQA": row["VQA"], "FT VQA": row["VQA"]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{modality: {arm: {metric: mean, metric_std: std, seeds: n}}}`` over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for modality in sorted({r["modality"] for r in runs}):
        for arm in ARMS:
            chosen = [r["metrics"] for r in runs if r["modality"] == modality and r["arm"] == arm]
            if not chosen:
                continue
            row: dict[str, float] = {"seeds": len(chosen)}
            for label in METRICS:
                values = [m[label] for m in chosen]
                row[label] = statistics.mean(values)
                row[f"{label}_std"] = statistics.stdev(values) if len(values) > 1 else float("nan")
            table.setdefault(modality, {})[arm] = row
    return table


def gap_share(arms: dict[str, dict[str, float]], metric: str) -> dict[str, float] | None:
    """The gap ``blip2_10N - blip2_N`` and the share of it that ``pformer_N`` closes.

    ``gap_z``: the gap over the standard deviation of the difference of two single runs
    (``sqrt(sd_10N^2 + sd_N^2)``). ``share`` = ``(pformer_N - blip2_N) / (blip2_10N - blip2_N)``
    with ``share_se``, its standard error from the three arms' standard errors of the mean
    (first-order propagation; blip2_N appears in both terms), and ``share_z40`` =
    ``(share - 0.4) / share_se``, the margin by which it clears the project's 40 % target.
    """
    if not {"blip2_N", "blip2_10N"} <= set(arms):
        return None
    few, many = arms["blip2_N"], arms["blip2_10N"]
    gap = many[metric] - few[metric]
    spread = math.hypot(few[f"{metric}_std"], many[f"{metric}_std"])
    out = {"gap": gap, "gap_z": gap / spread if spread > 0 else float("nan")}
    if "pformer_N" in arms:
        helped = arms["pformer_N"]
        se = {name: row[f"{metric}_std"] / math.sqrt(row["seeds"]) for name, row in
              (("few", few), ("many", many), ("helped", helped))}
        share = (helped[metric] - few[metric]) / gap
        # d share / d(helped, few, many): 1/gap, (share - 1)/gap, -share/gap
        share_se = math.sqrt(se["helped"] ** 2 + ((share - 1) * se["few"]) ** 2 + (share * se["many"]) ** 2) / abs(gap)
        out.update(share=share, share_se=share_se, share_z40=(share - 0.4) / share_se if share_se > 0 else float("nan"))
    return out


def has_gap(share: dict[str, float] | None) -> bool:
    """Whether blip2_10N beats blip2_N by more than 2 sd, so that a share of the gap means something."""
    return bool(share) and "share" in share and share["gap_z"] > 2


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(table: dict, pairs: dict[str, int], baselines: dict[str, dict[str, float]]) -> str:
    lines = []
    for modality, arms in table.items():
        n = pairs[modality]
        lines += [f"**{modality}** (N = {n} pairs)", "",
                  "| arm | pairs | " + " | ".join(METRICS) + " | seeds |",
                  "|---|---:|" + "---:|" * len(METRICS) + "---:|"]
        if modality in baselines:
            cells = " | ".join(fmt(baselines[modality][m]) for m in METRICS)
            lines.append(f"| text only (no media) | | {cells} | |")
        for arm, row in arms.items():
            count = 10 * n if arm.endswith("10N") else n
            cells = " | ".join(f"{fmt(row[m])} ± {fmt(row[f'{m}_std'])}" for m in METRICS)
            lines.append(f"| {arm} | {count} | {cells} | {row['seeds']} |")
        shares = {m: gap_share(arms, m) for m in METRICS}
        if any(shares.values()):
            lines.append("| gap 10N - N (in sd of a difference) | | " + " | ".join(
                f"{fmt(s['gap'])} ({fmt(s['gap_z'], 1)} sd)" if s else "" for s in shares.values()) + " | |")
            lines.append("| share of the gap closed by pformer_N | | " + " | ".join(
                f"{fmt(100 * s['share'], 0)} ± {fmt(100 * s['share_se'], 0)} %" if has_gap(s) else "no gap"
                for s in shares.values()) + " | |")
        lines.append("")
    return "\n".join(lines)


def plot(table: dict, baselines: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modalities = list(table)
    fig, axes = plt.subplots(len(modalities), len(METRICS), figsize=(3.6 * len(METRICS), 3 * len(modalities)),
                             squeeze=False)
    colours = {"blip2_N": "#9e9e9e", "pformer_N": "#1f77b4", "blip2_10N": "#2ca02c", "pformer_10N": "#17becf"}
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
            share = gap_share(table[modality], metric)
            title = f"{modality}: {metric}"
            if has_gap(share):
                title += f"\nshare closed {100 * share['share']:.0f} ± {100 * share['share_se']:.0f} %"
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> dict[str, str]:
    """The CPU (as lscpu names it, and its bf16/AVX-512 flags), and the versions that ran the study."""
    import torch
    import transformers

    from vlreg.device import cpu_flags, cpu_name

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))
    return {"cpu": cpu_name(), "cores": str(os.cpu_count()), "flags": " ".join(flags),
            "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def pairs_of(values: list[str], cast: type) -> dict[str, Any]:
    return {k: cast(v) for k, v in (item.split("=") for item in values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", nargs="+", choices=["image", "video"], default=["image", "video"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:3]))
    parser.add_argument("--pairs", nargs="+", default=[f"{k}={v}" for k, v in PAIRS.items()],
                        help="N per modality, e.g. image=500 video=300")
    parser.add_argument("--epochs", nargs="+", default=[f"{k}={v}" for k, v in EPOCHS.items()],
                        help="passes over an arm's pairs per stage, e.g. stage1=3 stage2=6")
    parser.add_argument("--budget", choices=["epochs", "steps"], default="epochs",
                        help="epochs: each arm makes --epochs passes over its own pairs (10 N arms train 10 times "
                             "longer); steps: every arm trains for the 10 N arm's steps (N arms repeat their pairs)")
    parser.add_argument("--align", nargs="+", default=[f"{k}={v}" for k, v in ALIGN.items()],
                        help="P-Former alignment weight per stage, e.g. stage1=10 stage2=100")
    parser.add_argument("--world", type=Path, default=Path("outputs/pformer_lowdata/world"),
                        help="the study's world; its backbones (LM, vision, P-Former) go under it")
    parser.add_argument("--work", type=Path, default=Path("outputs/pformer_lowdata/study"), help="the arms' runs")
    parser.add_argument("--out", type=Path, default=HERE, help="where the table, JSON and plot go")
    parser.add_argument("--prepare-only", action="store_true", help="run the shared stages, then stop")
    parser.add_argument("--report-only", action="store_true", help="write the results of the runs so far")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    pairs, epochs, align = pairs_of(args.pairs, int), pairs_of(args.epochs, float), pairs_of(args.align, float)
    world = args.world.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    runs_file = args.work / "runs.jsonl"

    def finished() -> list[dict[str, Any]]:
        return [json.loads(line) for line in runs_file.read_text().splitlines()] if runs_file.exists() else []

    for modality in [] if args.report_only else args.modality:
        study = prepare(modality, world, args.arms)
        if args.prepare_only:
            continue
        for seed in args.seeds:
            for arm in args.arms:
                key = f"{modality}_{arm}_seed{seed}"
                if any((r["modality"], r["arm"], r["seed"]) == (modality, arm, seed) for r in finished()):
                    continue
                if not claim(args.work, key):
                    continue
                n = pairs[modality] * (10 if arm.endswith("10N") else 1)
                started = time.time()
                budget_pairs = 10 * pairs[modality] if args.budget == "steps" else n
                project = arm_project(study, arm, n, seed, epochs, align, args.work, budget_pairs)
                metrics = run_arm(project)
                steps = {s["name"]: s["run"]["max_steps"] for s in project["stages"] if s["name"] in PAIRED}
                record = {"modality": modality, "arm": arm, "seed": seed, "pairs": n, "metrics": metrics,
                          "steps": steps, "align": align if arm.startswith("pformer") else None,
                          "started": round(started), "seconds": round(time.time() - started, 1)}
                with runs_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                (args.work / "claims" / key).unlink(missing_ok=True)
    if args.prepare_only:
        return 0
    done = finished()
    table = summarise(done)
    baselines = {m: text_only(world, m) for m in table}
    shares = {m: {metric: gap_share(arms, metric) for metric in METRICS} for m, arms in table.items()}
    spans = [(r["started"], r["started"] + r["seconds"]) for r in done if "started" in r]
    wall = {"arm_seconds": round(sum(r["seconds"] for r in done)),
            "span_seconds": round(max(e for _, e in spans) - min(s for s, _ in spans)) if spans else None}
    payload = {"pairs": pairs, "budget": args.budget, "epochs": epochs, "align": align, "lm_steps": LM_STEPS,
               "pformer": PFORMER, "machine": machine(), "wall": wall, "table": table, "gap": shares, "text_only": baselines,
               "runs": done}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    (args.out / "results.md").write_text(markdown(table, pairs, baselines))
    plot(table, baselines, args.out / "results.png")
    print(markdown(table, pairs, baselines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
