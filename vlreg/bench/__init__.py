"""Benchmark suites: the paper's evaluations of one model or several side by side.

::

    python -m vlreg.bench --suite coco --model outputs/blip2_tiny              # a project output
    python -m vlreg.bench --suite all --model outputs/blip2_tiny --model hf/blip2 --name ours --name hf
    python -m vlreg.bench --suite coco --model outputs/blip2_tiny/stage2 --set data.root=/data   # real COCO
    python -m vlreg.bench --suite my_suite.yaml --model ... --quick                          # a smoke run

Writes ``<out>/results.md`` (a table: a row per evaluation and headline metric, a column
per model), ``results.json`` (every metric, the stage each evaluation ran on, every
setting) and ``results.png`` (a panel per evaluation), plus each evaluation's predictions
under ``<out>/runs/<model>/<suite>/<evaluation>/``. ``--out`` defaults to
``outputs/bench/<suite>``.

Suites (``benchmarks/suites/*.yaml``, which the installed package carries; registered as kind
``suite``; ``all`` runs every registered one) follow the papers' evaluation settings:

======  =====================================  ===================================================
suite   evaluation                             settings
======  =====================================  ===================================================
coco    caption: COCO Karpathy test            5 beams, 8 to 30 new tokens (BLIP-2's)
coco    retrieval: COCO Karpathy test 5k       ITC, then ITM re-ranking of the top k = 128
vqav2   vqa: VQAv2 val2014                     "Question: {} Short answer:", 5 beams, at most 10
                                               new tokens, length penalty -1 (BLIP-2 zero-shot)
msrvtt  caption / qa / retrieval: MSRVTT test  the same settings on video; retrieval on 1k-A
======  =====================================  ===================================================

``--quick`` applies each suite's ``quick:`` section (default: at most 16 samples per
dataset, 1 beam). ``--set key.path=value`` overrides suite settings (applied to each
selected suite that has the key's mapping), e.g. ``data.root=/data`` (a directory holding
``coco/``, ``vqav2/`` and ``msrvtt/`` in their official layouts, as ``$VLREG_DATA`` does),
``data.coco=/mnt/coco``, ``world.size=small``, ``evaluations.retrieval.task.k=256``.
By default the suites read the synthetic world (``world/``), which is generated when a
dataset reads from it and it is missing.

Model sources (:mod:`vlreg.bench.sources`): a vlreg run, a project output directory (each
evaluation runs on the **last stage trained for its task whose model has the parts it
needs, else on the last stage that has the parts**; name a stage with
``<project>/<stage>``), or a transformers BLIP-2 directory or hub name. An evaluation
a model cannot run (retrieval without a Q-Former text branch, video without a video
encoder, captioning without an LLM) is reported as "n/a" with the reason. Media are
prepared with each model's own evaluation processor.

Adding a suite: write a YAML file (format in :mod:`vlreg.bench.suite`) and pass its path
to ``--suite``, or register it from a plugin module (entry point group ``vlreg.plugins``)::

    from pathlib import Path
    from vlreg.bench import register_suite

    register_suite("coco_val", Path(__file__).with_name("coco_val.yaml"))

Importing this package is light (it registers the built-in suites; torch, transformers and
matplotlib are imported where they are used). From Python: :func:`read_suite` /
:func:`find_suites` load suites, :func:`vlreg.bench.sources.open_source` opens a model
source, :func:`vlreg.bench.runner.run_bench` runs suites on sources and returns the record
that :func:`vlreg.bench.report.write_reports` writes.
"""

from __future__ import annotations

from .suite import Evaluation, Options, Suite, SuiteFile, find_suites, read_suite, register_suite

__all__ = ["Evaluation", "Options", "Suite", "SuiteFile", "find_suites", "read_suite", "register_suite"]
