"""Checkpoints of other code bases in and out of vlreg.

- :mod:`vlreg.interop.qformer_keys`: the Q-Former's parameter names in transformers' BLIP-2
  classes, in LAVIS's checkpoints and in a BERT checkpoint (for initialisation).

Importing this package imports nothing heavy; each submodule imports what it needs.
"""

from __future__ import annotations
