"""Performance benchmarks: vlreg against transformers' BLIP-2, precision, the feature cache, data, start-up.

``python -m benchmarks.perf [--quick]`` runs them all (:mod:`.run`); each module documents what
it measures and how: :mod:`.train_step` (1a, and 2), :mod:`.generation` (1b), :mod:`.cache` (3),
:mod:`.data` (4), :mod:`.startup` (5), :mod:`.flops` (6). :mod:`.pairs` builds the two frameworks'
models with equal weights, :mod:`.timing` alternates contenders in one process, :mod:`.results`
writes the table. Figures and the machine they come from: ``benchmarks/README.md``.
"""
