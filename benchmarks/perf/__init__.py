"""Performance benchmarks: vlreg against transformers' BLIP-2, precision, the feature cache, data, start-up.

``python -m benchmarks.perf [--quick] [--device cuda --scale paper]`` runs them (:mod:`.run`); each
module documents what it measures and how: :mod:`.train_step` (1a, and 2), :mod:`.generation` (1b),
:mod:`.cache` (3), :mod:`.data` (4), :mod:`.startup` (5), :mod:`.utilisation` (6, with the counts of
:mod:`.flops`), :mod:`.stage1` (7). :mod:`.pairs` builds the two frameworks' models with equal
weights at each scale, :mod:`.texts` the captions and tokenizers they read, :mod:`.timing`
alternates contenders in one process (synchronising a GPU), :mod:`.machine` names the machine,
:mod:`.results` prints each row as it comes and writes the table. ``gpu_check.sh`` runs the
paper-scale benchmarks on a GPU machine. Figures and the machines they come from:
``benchmarks/README.md``.
"""
